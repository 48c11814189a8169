package graphwatch_test

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/pwsync/pwsync/testrig/benchreport"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// TestGraphChangeLatencyReport measures a change in Graph (the simulator,
// no notification delay) until its events.graph.user is stored, through
// change notifications, and as the same-run baseline with notifications
// dropped so that only delta polling every 2 s finds the changes (the
// changes then land at evenly spread points of the poll period).
//
// benchreport: PWSYNC_BENCH_REPORT=1 -run ^TestGraphChangeLatencyReport$
func TestGraphChangeLatencyReport(t *testing.T) {
	if os.Getenv("PWSYNC_BENCH_REPORT") == "" {
		t.Skip("set PWSYNC_BENCH_REPORT=1 to run the Graph change latency report")
	}
	const n, poll = 10, 2 * time.Second
	measure := func(t *testing.T, polling bool) []time.Duration {
		// pwsync's own latency: Graph's delivery delay (minutes, the
		// simulator's 1 s by default) is not what is measured.
		e := newEnvWith(t, graphsim.Options{NotificationDelay: -1})
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
		var lat []time.Duration
		for i := range n {
			if polling {
				// The previous change was seen just after a round: start
				// each change at a different point of the poll period.
				time.Sleep(time.Duration(i) * poll / n)
			}
			start := time.Now()
			setPolicies(t, e.sim, userID(i), disableExpiration)
			got := e.users.waitUser(t, userID(i), disableExpiration)
			lat = append(lat, got.at.Sub(start))
		}
		slices.Sort(lat)
		return lat
	}
	var notified, polled []time.Duration
	t.Run("notifications", func(t *testing.T) { notified = measure(t, false) })
	t.Run("polling", func(t *testing.T) { polled = measure(t, true) })
	if t.Failed() {
		return
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	for _, p := range []struct {
		name string
		i    int
	}{{"p50", n / 2}, {"max", n - 1}} {
		benchreport.Emit(benchreport.Figure{Name: "graph_change_to_event_" + p.name, Unit: "ms", Better: "lower",
			Desc:  fmt.Sprintf("Graph user change -> events.graph.user stored (notification, webhook, delta round), %s of %d", p.name, n),
			Value: ms(notified[p.i]), Baseline: ms(polled[p.i]), BaselineName: fmt.Sprintf("delta polling every %s, notifications dropped", poll)})
	}
}
