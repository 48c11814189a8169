package graphwatch_test

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/pwsync/pwsync/testrig/benchreport"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// TestGraphChangeLatencyReport measures a change in Graph (the simulator)
// until its events.graph.user is stored, through change notifications held
// back by the simulator's notification delay (graphsim's default, 1 s; real
// Graph's is minutes), and reports what pwsync adds on top of that delay:
// from the simulator POSTing the notification to the event being stored
// (webhook, NATS, the delta round). The same-run baseline of the whole
// path is delta polling every 2 s with notifications dropped. Both change
// at random moments (a uniform pause of 0-2 s before each change).
// Target: pwsync adds at most 100 ms (p50) and 250 ms (max) to Graph's
// delivery; the whole path has none (it is mostly Graph's delay).
//
// benchreport: PWSYNC_BENCH_REPORT=1 -run ^TestGraphChangeLatencyReport$
func TestGraphChangeLatencyReport(t *testing.T) {
	if os.Getenv("PWSYNC_BENCH_REPORT") == "" {
		t.Skip("set PWSYNC_BENCH_REPORT=1 to run the Graph change latency report")
	}
	const n, poll = 20, 2 * time.Second
	// measure returns change -> stored and, with notifications, the
	// simulator's POST of the notification -> stored.
	measure := func(t *testing.T, polling bool) (total, added []time.Duration) {
		e := newEnvWith(t, graphsim.Options{NotificationDelay: graphsim.DefaultNotificationDelay})
		seedUsers(e.sim, n)
		cfg := e.config("w1")
		if polling {
			cfg.DeltaInterval = poll
		}
		w := e.start(cfg, e.conn.JS)
		e.subscription("")
		waitRounds(t, w, 1)
		for i := range n {
			e.users.waitUser(t, userID(i), "None")
		}
		if polling {
			e.secrets.off.Store(true) // the receiver drops every notification from now on
		}
		for i := range n {
			time.Sleep(rand.N(poll))
			start := time.Now()
			setPolicies(t, e.sim, userID(i), disableExpiration)
			got := e.users.waitUser(t, userID(i), disableExpiration)
			total = append(total, got.at.Sub(start))
			if polling {
				continue
			}
			sent, ok := delivered(e.sim, userID(i), start)
			if !ok {
				t.Fatalf("user %s stored without a notification delivered for it", userID(i))
			}
			added = append(added, got.at.Sub(sent))
		}
		return total, added
	}
	var notified, added, polled []time.Duration
	t.Run("notifications", func(t *testing.T) { notified, added = measure(t, false) })
	t.Run("polling", func(t *testing.T) { polled, _ = measure(t, true) })
	if t.Failed() {
		return
	}
	t.Logf("change -> stored over %d changes: notifications (delay %s) p50 %.1f ms, max %.1f ms, of which pwsync p50 %.1f ms, max %.1f ms; polling every %s p50 %.1f ms, max %.1f ms",
		n, graphsim.DefaultNotificationDelay, quantileMS(notified, 0.5), quantileMS(notified, 1), quantileMS(added, 0.5), quantileMS(added, 1),
		poll, quantileMS(polled, 0.5), quantileMS(polled, 1))
	for _, p := range []struct {
		name, target string
		q            float64
	}{{"p50", "<= 100", 0.5}, {"max", "<= 250", 1}} {
		benchreport.Emit(benchreport.Figure{Name: "graph_change_to_event_" + p.name, Unit: "ms", Better: "lower", Samples: n,
			Desc: fmt.Sprintf("Graph user change -> events.graph.user stored, notifications held back %s by the simulator, %s of %d",
				graphsim.DefaultNotificationDelay, p.name, n),
			Value: quantileMS(notified, p.q), Baseline: quantileMS(polled, p.q), BaselineName: fmt.Sprintf("delta polling every %s, notifications dropped", poll)})
		benchreport.Emit(benchreport.Figure{Name: "graph_event_added_" + p.name, Unit: "ms", Better: "lower", Samples: n,
			Desc:  fmt.Sprintf("what pwsync adds to Graph's delivery: notification POSTed -> events.graph.user stored, %s of %d", p.name, n),
			Value: quantileMS(added, p.q), Target: p.target})
	}
}

// delivered is when the simulator first POSTed a notification for user id
// at or after from, and the receiver accepted it.
func delivered(sim *graphsim.Server, id string, from time.Time) (time.Time, bool) {
	for _, d := range sim.Deliveries() {
		if !d.Lifecycle && d.Status/100 == 2 && !d.Time.Before(from) && bytes.Contains(d.Body, []byte(`"Users/`+id+`"`)) {
			return d.Time, true
		}
	}
	return time.Time{}, false
}

// quantileMS is the nearest-rank q-quantile of lat in milliseconds (q = 1:
// the max).
func quantileMS(lat []time.Duration, q float64) float64 {
	s := slices.Clone(lat)
	slices.Sort(s)
	i := max(int(math.Ceil(q*float64(len(s))))-1, 0)
	return float64(s[i]) / float64(time.Millisecond)
}
