package simtest

import (
	"fmt"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/pwsync/pwsync/services/actuator/notifier"
	"github.com/pwsync/pwsync/testrig/benchreport"
)

// TestNotificationThroughputReport measures notices sent per window against
// the mailbox and Teams limits, through the whole path (JetStream consumer
// under the lease, Graph look-up, ledger, audit, msgraph client,
// simulator), and an unpaced baseline in the same run. The limits are
// time-scaled (30 messages per 2 s per mailbox instead of per minute; 5
// activities per 200 ms instead of per second; the simulator takes 10 ms to
// accept a message, as a few hundred ms are to a minute, and refuses a
// fifth concurrent sendMail on a mailbox): pacing overhead is a few
// milliseconds per window, so the real one-minute window only does better.
// The paced run writes each sender's pacing through to KV (two puts per
// message) as in production. The limit is shown as a limit (target: >= 95%
// of it, zero violations; design.md §7); the same-run baseline is what a
// user could run instead, a sequential unpaced sender: no pacing, one
// sendMail at a time per mailbox, 429s retried after Retry-After.
//
//	PWSYNC_BENCH_REPORT=1 go test -count=1 -run ThroughputReport -v ./services/actuator/notifier/simtest/
//
// benchreport: PWSYNC_BENCH_REPORT=1 -run ^TestNotificationThroughputReport$
func TestNotificationThroughputReport(t *testing.T) {
	if os.Getenv("PWSYNC_BENCH_REPORT") == "" {
		t.Skip("set PWSYNC_BENCH_REPORT=1 to run the notification throughput report")
	}
	const senders = 3
	l := limits{mailPerWindow: 30, mailWindow: 2 * time.Second, teamsPerWindow: 5, teamsWindow: 200 * time.Millisecond,
		mailLatency: 10 * time.Millisecond}
	const mailWindows, teamsWindows = 6, 40

	type result struct {
		name                string
		sent, limit         int
		ratio               float64
		violations          int
		maxInWindow, limit1 int
		maxInFlight         int // sendMail on one mailbox at once (the simulator refuses a 5th)
		concRefused         int // of the violations: by the mailbox's concurrency
		elapsed             time.Duration
	}
	var results []result

	// Email only (Teams off).
	mail := func(name string, paced bool) result {
		e := newEnv(t, l, senders)
		n := senders * l.mailPerWindow * mailWindows
		users := e.users(n, 0, "en-US")
		set := e.settings(l, false)
		conc := 0 // Outlook's 4
		if !paced {
			set.Pacing.MailPerWindow, set.Pacing.MailPerDay, set.MaxAttempts = 1_000_000, 0, 1000
			conc = 1 // sequential
		}
		e.publish(t, users, false)
		start := time.Now()
		r := e.startReplica(t, notifier.Deps{Settings: set, Holder: "replica-0", MaxWait: 30 * time.Second, MailboxConcurrency: conc})
		e.waitDelivered(t, n, 2*time.Minute)
		elapsed := time.Since(start)
		if err := r.stop(); err != nil {
			t.Error(err)
		}
		perSender := map[string][]time.Time{}
		var all []time.Time
		for _, m := range e.sim.SentMail() {
			perSender[m.From] = append(perSender[m.From], m.Time)
			all = append(all, m.Time)
		}
		k := mailWindows - 1 // full windows after the first send
		in := countWithin(all, time.Duration(k)*l.mailWindow)
		lim := senders * l.mailPerWindow * k
		st := e.sim.Stats()
		return result{name: name, sent: in, limit: lim, ratio: float64(in) / float64(lim), violations: st.MailThrottled,
			maxInWindow: maxInWindow(perSender, l.mailWindow), limit1: l.mailPerWindow, maxInFlight: st.MaxMailInFlight, concRefused: st.MailConcurrencyThrottled, elapsed: elapsed}
	}
	teams := func(name string, paced bool) result {
		e := newEnv(t, l, 1)
		n := l.teamsPerWindow * teamsWindows
		users := e.users(n, 0, "en-US")
		set := e.settings(l, true)
		if !paced {
			set.Pacing.TeamsPerWindow, set.MaxAttempts = 1_000_000, 1000
		}
		e.publish(t, users, false)
		start := time.Now()
		stop := e.run(t, set, 1)
		e.waitDelivered(t, n, 2*time.Minute)
		elapsed := time.Since(start)
		stop()
		var all []time.Time
		for _, a := range e.sim.ActivityNotifications() {
			all = append(all, a.Time)
		}
		k := teamsWindows - 1
		in := countWithin(all, time.Duration(k)*l.teamsWindow)
		lim := l.teamsPerWindow * k
		return result{name: name, sent: in, limit: lim, ratio: float64(in) / float64(lim), violations: e.sim.Stats().ActivityThrottled,
			maxInWindow: maxInWindow(map[string][]time.Time{"app": all}, l.teamsWindow), limit1: l.teamsPerWindow, elapsed: elapsed}
	}
	results = append(results,
		mail(fmt.Sprintf("email, %d senders x %d/%s, paced", senders, l.mailPerWindow, l.mailWindow), true),
		mail("email, sequential unpaced baseline (429s retried on another sender)", false),
		teams(fmt.Sprintf("Teams, %d/%s per app+tenant, paced", l.teamsPerWindow, l.teamsWindow), true),
		teams("Teams, unpaced baseline", false),
	)
	for _, r := range results {
		t.Logf("%-55s sent %4d in the measured windows of a limit of %4d = %5.1f%%; max %d per window per sender/app (limit %d); max %d sendMail in flight on a mailbox (limit 4); violations (429 by the simulator) %d, %d of them concurrency; total %s",
			r.name, r.sent, r.limit, 100*r.ratio, r.maxInWindow, r.limit1, r.maxInFlight, r.violations, r.concRefused, r.elapsed.Round(10*time.Millisecond))
	}
	emit := func(name, desc, unit, baseName string, paced, base result) {
		// Per sender (mailbox, app) and window: limit is limit1 x windows x senders.
		perWindow := func(r result) float64 { return float64(r.sent) * float64(r.limit1) / float64(r.limit) }
		benchreport.Emit(benchreport.Figure{Name: name + "_per_window", Desc: desc + " (scaled windows)",
			Value: perWindow(paced), Unit: unit, Baseline: perWindow(base), BaselineName: baseName,
			Limit: float64(paced.limit1), LimitName: "the service's limit", Better: "higher", Target: ">= 0.95x limit"})
		benchreport.Emit(benchreport.Figure{Name: name + "_violations", Desc: desc + ": sends refused by the limit (429)",
			Value: float64(paced.violations), Unit: "429s", Baseline: float64(base.violations), BaselineName: baseName,
			Better: "lower", Target: "<= 0"})
	}
	emit("notify_email", "email notices per window per sender mailbox, 3 senders, limit 30 per window each", "msgs/window",
		"sequential unpaced sender (1 in flight per mailbox), same run", results[0], results[1])
	emit("notify_teams", "Teams notices per window per app+tenant, limit 5 per window", "notices/window",
		"unpaced sender, same run", results[2], results[3])
	for _, r := range results[:1] {
		if r.ratio < 0.95 || r.violations != 0 {
			t.Errorf("%s: %.1f%% of the limit with %d violations; want >= 95%% and 0", r.name, 100*r.ratio, r.violations)
		}
	}
	if r := results[2]; r.ratio < 0.95 || r.violations != 0 {
		t.Errorf("%s: %.1f%% of the limit with %d violations; want >= 95%% and 0", r.name, 100*r.ratio, r.violations)
	}
}

// countWithin counts times within span of the first one.
func countWithin(ts []time.Time, span time.Duration) int {
	if len(ts) == 0 {
		return 0
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	n := 0
	for _, x := range ts {
		if x.Before(ts[0].Add(span)) {
			n++
		}
	}
	return n
}
