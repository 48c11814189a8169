package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/campaign"
	"github.com/pwsync/pwsync/shared/adminapi"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/adtest"
	"github.com/pwsync/pwsync/testrig/benchreport"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// The one write path (issue 20): live resets and a campaign share one write
// budget in `pwsync run`, live first. The rig runs pwsync in-process against
// the DC and the simulator, with the budget time-scaled on both sides.

// writeRig is one pwsync with live users (cloud-managed and synced, one
// phase each) and a campaign's users.
type writeRig struct {
	s      *stack
	adm    *adminStack
	budget int
	window time.Duration

	mu     sync.Mutex
	writes []simWrite // every write the simulator answered, in order
}

type simWrite struct {
	at     time.Time
	user   string // cloud id ("" when the request does not name one)
	status int
}

// newWriteRig scales Graph's write budget to budget per window on both
// sides (simulator and actuator.write_budget).
func newWriteRig(t testing.TB, budget int, window time.Duration, natsListen string) *writeRig {
	s := newStack(t, stackOpts{SimWriteBudget: budget, SimWriteWindow: window, WriteBudget: budget, WriteWindow: window,
		IncludeDisabled: true, NATSListen: natsListen})
	adm := s.withAdmin(t)
	adm.ApproveAbove = 50_000 // the campaigns here start without a second person
	r := &writeRig{s: s, adm: adm, budget: budget, window: window}
	s.sim.OnRequest(r.observe)
	return r
}

func (r *writeRig) observe(q graphsim.Request) {
	if q.Method == http.MethodGet || strings.HasSuffix(q.Path, "/checkMemberGroups") || strings.HasSuffix(q.Path, "/$batch") ||
		strings.Contains(q.Path, "/oauth2/") || strings.Contains(q.Path, "/sendMail") {
		return
	}
	user := ""
	if i := strings.Index(q.Path, "/users/"); i >= 0 {
		user = strings.SplitN(q.Path[i+len("/users/"):], "/", 2)[0]
	} else if strings.Contains(q.Path, "/members") {
		// a group add names the user in its body: {"@odata.id": ".../directoryObjects/{id}"}
		body := string(q.Body)
		if i := strings.LastIndex(body, "/"); i >= 0 {
			user = strings.Trim(body[i+1:], `"} `)
		}
		if i := strings.LastIndex(strings.TrimSuffix(q.Path, "/$ref"), "/"); user == "" && i >= 0 {
			user = q.Path[i+1:] // a removal names it in the path
		}
	}
	r.mu.Lock()
	r.writes = append(r.writes, simWrite{at: q.Time, user: user, status: q.Status})
	r.mu.Unlock()
}

// liveUsers creates n enabled AD users with cloud accounts, alternately
// cloud-managed and synced.
func (r *writeRig) liveUsers(t testing.TB, prefix string, n int) ([]adtest.User, []string) {
	users := make([]adtest.User, n)
	ids := make([]string, n)
	for i := range users {
		users[i] = r.s.dc.CreateUser(t, r.s.ou, fmt.Sprintf("%s%02d", prefix, i), adtest.UserOpts{Password: "Start.Passw0rd-1"})
		ids[i] = r.s.cloudUser(users[i], i%2 == 1)
	}
	return users, ids
}

// firstWrite is when the simulator answered the first 2xx write of user
// since, with the 429s of that user's writes since.
func (r *writeRig) firstWrite(user string, since time.Time) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.writes {
		if w.user == user && !w.at.Before(since) && w.status/100 == 2 {
			return w.at, true
		}
	}
	return time.Time{}, false
}

// count counts writes of users in [from, to) with status class 2 (ok) or 429.
func (r *writeRig) count(users map[string]bool, from, to time.Time) (ok, throttled int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.writes {
		if !users[w.user] || w.at.Before(from) || !w.at.Before(to) {
			continue
		}
		switch {
		case w.status/100 == 2:
			ok++
		case w.status == http.StatusTooManyRequests:
			throttled++
		}
	}
	return ok, throttled
}

// span is the first and last 2xx write of users.
func (r *writeRig) span(users map[string]bool) (first, last time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.writes {
		if users[w.user] && w.status/100 == 2 {
			if first.IsZero() {
				first = w.at
			}
			last = w.at
		}
	}
	return first, last
}

// phase is one round of live resets, maybe during a campaign.
type phase struct {
	lat       []time.Duration
	live429   int
	campRatio float64 // campaign writes / what the budget left it, in steady state (0: no campaign)
	campRate  float64 // campaign writes/s in steady state
	campWrote int
}

func (p phase) pct(q float64) float64 {
	l := slices.Clone(p.lat)
	slices.Sort(l)
	d := l[max(int(math.Ceil(q*float64(len(l))))-1, 0)]
	return float64(d.Microseconds()) / 1000
}

// resets resets the live users one a second (after start, which starts a
// campaign and returns its users once its writes are under way) and
// measures AD change -> first Graph write of each.
func (r *writeRig) resets(t testing.TB, users []adtest.User, ids []string, start func() (string, map[string]bool)) phase {
	var campID string
	var camp map[string]bool
	if start != nil {
		campID, camp = start()
	}
	var p phase
	t0 := time.Now()
	for i, u := range users {
		next := t0.Add(time.Duration(i) * time.Second)
		time.Sleep(time.Until(next))
		r.s.dc.ForceChange(t, u.DN)
		at := time.Now()
		var got time.Time
		waitFor(t, 60*time.Second, "the Graph write of "+u.UPN, func() bool {
			var ok bool
			got, ok = r.firstWrite(ids[i], at)
			return ok
		})
		p.lat = append(p.lat, got.Sub(at))
	}
	live := map[string]bool{}
	for _, id := range ids {
		live[id] = true
	}
	if start == nil {
		time.Sleep(2 * time.Second) // the chains' later writes
		_, p.live429 = r.count(live, t0, time.Now())
		return p
	}
	r.waitCampaign(t, campID)
	_, p.live429 = r.count(live, t0, time.Now())
	// Steady state: from a window after the campaign's first write (the
	// first window's burst is the budget Graph gives any writer) to its last.
	first, last := r.span(camp)
	from := first.Add(r.window)
	if last.Sub(from) < r.window/3 {
		t.Fatalf("the campaign's writes ran %s, too short for a steady state (more users)", last.Sub(first))
	}
	wrote, _ := r.count(camp, from, last)
	liveThen, _ := r.count(live, from, last)
	secs := last.Sub(from).Seconds()
	left := float64(r.budget)/r.window.Seconds()*secs - float64(liveThen)
	p.campRate, p.campRatio = float64(wrote)/secs, float64(wrote)/left
	p.campWrote, _ = r.count(camp, first, last.Add(time.Millisecond))
	return p
}

func (r *writeRig) api(t testing.TB) *adminapi.Client { return r.adm.client(t, r.adm.Operator) }

// startCampaign creates, previews and starts a campaign over upns, then
// waits for its first write (for an AD campaign: the first cloud follow-up).
func (r *writeRig) startCampaign(t testing.TB, name string, upns []string, users map[string]bool) string {
	ctx := context.Background()
	var c campaign.Campaign
	spec := campaign.Spec{Name: name, Reason: "INC-WRITEPATH", Include: campaign.Selector{UPNs: upns},
		Actions: campaign.Actions{RequireChange: true, RevokeSessions: true}}
	if err := r.api(t).Do(ctx, http.MethodPost, "/api/v1/campaigns", spec, &c); err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := r.api(t).Do(ctx, http.MethodPost, "/api/v1/campaigns/"+c.ID+"/preview", nil, &c); err != nil {
		t.Fatalf("preview: %v", err)
	}
	if c.Targets != len(upns) {
		t.Fatalf("preview: %d targets, want %d", c.Targets, len(upns))
	}
	if err := r.api(t).Do(ctx, http.MethodPost, "/api/v1/campaigns/"+c.ID+"/start", nil, &c); err != nil {
		t.Fatalf("start: %v", err)
	}
	waitFor(t, 60*time.Second, "the campaign's first writes", func() bool {
		ok, _ := r.count(users, time.Time{}, time.Now().Add(time.Hour))
		return ok >= r.budget/2
	})
	return c.ID
}

func (r *writeRig) waitCampaign(t testing.TB, id string) {
	var st campaign.Status
	waitFor(t, 3*time.Minute, "the campaign done", func() bool {
		err := r.api(t).Do(context.Background(), http.MethodGet, "/api/v1/campaigns/"+id, nil, &st)
		return err == nil && st.Campaign.State.Terminal()
	})
	if st.Campaign.State != campaign.StateDone {
		t.Fatalf("campaign ended %s: %s", st.Campaign.State, st.Campaign.Error)
	}
}

// cloudCampaign: n cloud-only users (no AD account), selected by UPN.
func (r *writeRig) cloudCampaign(t testing.TB, n int) func() (string, map[string]bool) {
	upns := make([]string, n)
	ids := map[string]bool{}
	for i := range upns {
		sam := fmt.Sprintf("wpcloud%04d", i)
		u := adtest.User{SAM: sam, UPN: sam + "@example.test"}
		ids[r.s.cloudUser(u, false)] = true
		upns[i] = u.UPN
	}
	return func() (string, map[string]bool) { return r.startCampaign(t, "cloud-only breach", upns, ids), ids }
}

// adCampaign: n AD users with synced cloud accounts: the campaign writes
// pwdLastSet=0 in AD, and the actuator writes the cloud follow-ups.
func (r *writeRig) adCampaign(t testing.TB, n int) func() (string, map[string]bool) {
	users := r.s.dc.CreateUsers(t, r.s.ou, "wpad", n)
	r.s.dc.StampPwdLastSet(t, users) // a password set: the campaign's 0 is a change
	upns := make([]string, n)
	ids := map[string]bool{}
	for i, u := range users {
		ids[r.s.cloudUser(u, true)] = true
		upns[i] = u.UPN
	}
	return func() (string, map[string]bool) { return r.startCampaign(t, "AD breach", upns, ids), ids }
}

// BenchmarkLiveResetsDuringCampaign: live AD resets (one a second, half
// cloud-managed, half synced) while a campaign saturates the write budget,
// scaled to 150 writes per 15 s on both sides: once over cloud-only users,
// once over AD users (whose cloud follow-ups come back through the
// pipeline); the baseline is the same resets with no campaign, in the same
// run. PWSYNC_BENCH_RESETS sets the resets per phase (default 20).
//
// benchreport: PWSYNC_REQUIRE_AD=1 -run ^$ -bench ^BenchmarkLiveResetsDuringCampaign$ -benchtime 1x
func BenchmarkLiveResetsDuringCampaign(b *testing.B) {
	n := min(benchUsers(), 40)
	if n == 200 { // benchUsers' default is the latency benchmark's
		n = 12
	}
	const budget, window = 150, 15 * time.Second
	r := newWriteRig(b, budget, window, "")
	quietU, quietIDs := r.liveUsers(b, "wpq", n)
	cloudU, cloudIDs := r.liveUsers(b, "wpc", n)
	adU, adIDs := r.liveUsers(b, "wpa", n)
	cloud := r.cloudCampaign(b, 120)
	ad := r.adCampaign(b, 160)
	fmt.Fprintf(os.Stderr, "writepath bench: users ready\n")
	r.s.startInProcess(b)
	b.ResetTimer()
	quiet := r.resets(b, quietU, quietIDs, nil)
	fmt.Fprintf(os.Stderr, "writepath bench: quiet done\n")
	time.Sleep(r.window)
	withCloud := r.resets(b, cloudU, cloudIDs, cloud)
	fmt.Fprintf(os.Stderr, "writepath bench: cloud campaign done\n")
	time.Sleep(r.window)
	withAD := r.resets(b, adU, adIDs, ad)
	b.StopTimer()

	for _, c := range []struct {
		key, desc string
		p         phase
	}{{"cloud", "cloud-only users", withCloud}, {"ad", "AD users (cloud follow-ups through the pipeline)", withAD}} {
		b.Logf("%s campaign: live p50 %.0f ms p99 %.0f ms (quiet %.0f / %.0f), live 429s %d (quiet %d); campaign %.1f writes/s = %.1f%% of what the budget left it (%d writes)",
			c.key, c.p.pct(0.5), c.p.pct(0.99), quiet.pct(0.5), quiet.pct(0.99), c.p.live429, quiet.live429, c.p.campRate, 100*c.p.campRatio, c.p.campWrote)
		for _, q := range []struct {
			name, target string
			v            float64
		}{{"p50", "", 0.5}, {"p99", "<= 2x baseline", 0.99}} { // issue 20's target: p99 <= 2x quiet
			benchreport.Emit(benchreport.Figure{Name: "live_reset_during_" + c.key + "_campaign_" + q.name, Unit: "ms", Better: "lower",
				Desc:  fmt.Sprintf("live AD reset -> Graph write %s (%d resets, 1/s) during a campaign over %s, budget %d per %s", q.name, n, c.desc, budget, window),
				Value: c.p.pct(q.v), Baseline: quiet.pct(q.v), BaselineName: "the same resets, no campaign", Target: q.target, Samples: n})
		}
		benchreport.Emit(benchreport.Figure{Name: "live_429_during_" + c.key + "_campaign", Unit: "429s", Better: "lower",
			Desc:  fmt.Sprintf("429s met by live writes during the campaign over %s", c.desc),
			Value: float64(c.p.live429), Baseline: float64(quiet.live429), BaselineName: "the same resets, no campaign", Target: "<= 0"})
		benchreport.Emit(benchreport.Figure{Name: c.key + "_campaign_budget_left_share", Unit: "writes/s", Better: "higher",
			Desc:  fmt.Sprintf("campaign over %s, steady-state writes/s (baseline: the budget's rate less the live writes)", c.desc),
			Value: c.p.campRate, Baseline: c.p.campRate / c.p.campRatio, BaselineName: "what the budget left the campaign", Target: ">= 0.95x baseline"})
	}
}

// TestLiveResetDuringSaturatingCampaign: the actuator and the campaign
// runner of one `pwsync run` share one write budget, live first: a live
// must-change action during a campaign that saturates the budget is written
// within about a second, without a 429. The actions are published as the
// evaluator does, so that the shared DC's notification delay (seconds when
// other tests load it) is not what is measured; the benchmark measures from
// the AD change.
func TestLiveResetDuringSaturatingCampaign(t *testing.T) {
	r := newWriteRig(t, 100, 10*time.Second, freeAddr(t))
	users, ids := r.liveUsers(t, "wplive", 6) // cloud-managed and synced
	camp := r.cloudCampaign(t, 150)
	r.s.startInProcess(t)
	conn, err := natsx.Connect(natsx.ConnectConfig{URL: "nats://" + r.s.opts.NATSListen, Name: t.Name()}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.NC.Close()
	pub := natsx.NewPublisher(conn.JS)
	campID, campUsers := camp()
	live := map[string]bool{}
	t0 := time.Now()
	for i, u := range users {
		time.Sleep(time.Until(t0.Add(time.Duration(i) * time.Second)))
		at := time.Now()
		a := events.Action{ID: "writepath." + u.SAM, Kind: events.ActionRequireChange, Rule: "forced-change", EventID: "writepath." + u.SAM,
			EventTime: at, User: events.UserRef{Domain: "example.test", ObjectGUID: u.GUID, UPN: u.UPN, CloudID: ids[i]}, Seq: 1}
		if _, err := pub.PublishJSON(context.Background(), a.Subject(), a.ID, a); err != nil {
			t.Fatal(err)
		}
		live[ids[i]] = true
		var got time.Time
		waitFor(t, 30*time.Second, "the Graph write of "+u.UPN, func() bool {
			var ok bool
			got, ok = r.firstWrite(ids[i], at)
			return ok
		})
		if d := got.Sub(at); d > time.Second {
			t.Errorf("live action of %s written %s after it was published, want within ~1 s", u.UPN, d)
		}
	}
	// The campaign used what the live writes left of the budget meanwhile.
	end := time.Now()
	c, _ := r.count(campUsers, t0, end)
	l, _ := r.count(live, t0, end)
	if float64(c+l) < 0.8*float64(r.budget)*end.Sub(t0).Seconds()/r.window.Seconds() {
		t.Errorf("the campaign wrote %d and live %d in %s: not saturating the budget", c, l, end.Sub(t0))
	}
	t.Logf("in %s: campaign %d writes, live %d", end.Sub(t0).Round(time.Millisecond), c, l)
	r.waitCampaign(t, campID)
	if _, n := r.count(live, t0, time.Now()); n != 0 {
		t.Errorf("live writes met %d 429s, want none", n)
	}
}
