package actuator

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/benchreport"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// TestActuatorRoundTripReport (issue 21) is the actuator's share of a reset
// without the DC: from Handle taking a require-change action to its first
// Graph write answered and to all its writes answered, over resets of
// cloud-managed (PATCH, then read-back and revoke at once) and synced users
// (revoke and group add at once) taken in turn, with every Graph request
// held L by the simulator. The floor is one round trip, L; the same-run
// baseline is the same actuator with the cloud join off (it looks the user
// up in Graph first). Targets at L = 50 ms: first write p99 <= 1.5 L, all
// writes p99 <= 2.5 L (cmd/pwsync's TestResetRoundTripReport adds Samba
// and the pipeline in front).
//
// benchreport: PWSYNC_BENCH_REPORT=1 -run ^TestActuatorRoundTripReport$
func TestActuatorRoundTripReport(t *testing.T) {
	if os.Getenv("PWSYNC_BENCH_REPORT") == "" {
		t.Skip("benchmark: set PWSYNC_BENCH_REPORT=1 (make bench runs it)")
	}
	const n = 200
	for _, lat := range []time.Duration{0, 50 * time.Millisecond} {
		var first, all [2][]time.Duration // [join, lookup]
		for v, joined := range []bool{true, false} {
			first[v], all[v] = actuatorRoundTrips(t, n, lat, joined)
		}
		L := float64(lat) / float64(time.Millisecond)
		t.Logf("L=%v, %d resets: join first p50 %.1f p99 %.1f, all p50 %.1f p99 %.1f ms; lookup first p50 %.1f p99 %.1f, all p50 %.1f p99 %.1f ms",
			lat, n, qMS(first[0], 0.5), qMS(first[0], 0.99), qMS(all[0], 0.5), qMS(all[0], 0.99),
			qMS(first[1], 0.5), qMS(first[1], 0.99), qMS(all[1], 0.5), qMS(all[1], 0.99))
		for _, f := range []struct {
			name, what string
			v          [2][]time.Duration
			k          float64
		}{{"first_write", "first Graph write", first, 1.5}, {"all_writes", "all Graph writes", all, 2.5}} {
			for _, q := range []float64{0.5, 0.99} {
				target := ""
				if q == 0.99 && lat > 0 {
					target = fmt.Sprintf("<= %.0f", f.k*L)
				}
				benchreport.Emit(benchreport.Figure{Name: fmt.Sprintf("actuator_%s_p%d_l%d", f.name, int(q*100), int(L)), Unit: "ms",
					Better: "lower", Samples: len(f.v[0]), Value: qMS(f.v[0], q), Baseline: qMS(f.v[1], q),
					BaselineName: "same actuator, cloud join off (looks the user up first)", Target: target,
					Desc: fmt.Sprintf("actuator: action taken -> %s answered, p%d of %d resets (half synced), Graph request latency L = %.0f ms (floor: L)",
						f.what, int(q*100), len(f.v[0]), L)})
			}
		}
	}
}

// actuatorRoundTrips runs n resets through a fresh simulator and actuator.
func actuatorRoundTrips(t *testing.T, n int, lat time.Duration, joined bool) (first, all []time.Duration) {
	sim, client := simGraph(t, graphsim.Options{ForceChangeApplies: true})
	sim.PutGroup("pending", "Password change pending")
	type user struct{ id, upn, imm string }
	var users []user
	for i := range n {
		u := user{id: fmt.Sprintf("u%04d", i), upn: fmt.Sprintf("user%04d@example.test", i)}
		gu := graphsim.User{ID: u.id, UserPrincipalName: u.upn, AccountEnabled: true}
		if i%2 == 1 {
			u.imm = "imm-" + u.id
			gu.OnPremisesImmutableId, gu.OnPremisesSyncEnabled = u.imm, true
		}
		sim.PutUser(gu)
		users = append(users, u)
	}
	set := settings()
	set.CloudManaged.RevokeSessions, set.CloudManaged.Verify = true, true
	var s *Service
	if joined {
		s, _ = joinedService(t, client, set, 0)
	} else {
		s = newService(t, client, set)
	}
	var mu sync.Mutex
	answered := map[string][]time.Time{}
	sim.OnRequest(func(r graphsim.Request) {
		if r.Status == 0 || r.Status >= 300 || r.Method == http.MethodGet {
			return
		}
		id := userID.FindString(r.Path + " " + string(r.Body))
		if id == "" {
			return
		}
		mu.Lock()
		answered[id] = append(answered[id], r.Time.Add(r.Duration))
		mu.Unlock()
	})
	sim.SetLatency(lat)
	for i, u := range users {
		t0 := time.Now()
		if err := s.Handle(context.Background(), action(events.ActionRequireChange, u.upn, u.imm, int64(i+1)), natsx.Meta{}); err != nil {
			t.Fatalf("%s: %v", u.upn, err)
		}
		mu.Lock()
		ts := slices.Clone(answered[u.id])
		mu.Unlock()
		if len(ts) != 2 {
			t.Fatalf("%s: %d writes answered, want 2", u.upn, len(ts))
		}
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
		first, all = append(first, ts[0].Sub(t0)), append(all, ts[1].Sub(t0))
	}
	return first, all
}

var userID = regexp.MustCompile(`\bu\d{4}\b`)

func qMS(v []time.Duration, q float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return float64(s[max(int(math.Ceil(q*float64(len(s))))-1, 0)]) / float64(time.Millisecond)
}
