package graphwatch_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// Graph answers an expired identity delta token 400 syncStateNotFound (the
// simulator's default); other resources answer 410 Gone. Either makes one
// full resync. (TestExpiredDeltaTokenFullResync covers the deduplication.)
func TestExpiredDeltaTokenEitherAnswer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   graphsim.Options
		status int
	}{
		{"400 syncStateNotFound", graphsim.Options{}, http.StatusBadRequest},
		{"410 Gone", graphsim.Options{ExpiredDeltaGone: true}, http.StatusGone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvWith(t, tc.opts)
			const n = 3
			seedUsers(e.sim, n)
			w := e.start(e.config("w1"), e.conn.JS)
			e.subscription("")
			waitRounds(t, w, 1)
			waitFor(t, 5*time.Second, "full sync stored", func() bool { return e.users.len() == n })
			before := w.Stats()

			e.sim.ExpireDeltaTokens()
			setPolicies(t, e.sim, userID(1), disableExpiration)
			e.users.waitUser(t, userID(1), disableExpiration)
			waitFor(t, 10*time.Second, "the resync's n users", func() bool { return w.Stats().Users-before.Users >= n })
			if st := w.Stats(); st.Resyncs != 1 {
				t.Errorf("after an expired token: %+v (before %+v)", st, before)
			}
			if st := e.sim.Stats(); st.ByStatus[tc.status] != 1 {
				t.Errorf("simulator stats %+v: want one %d", st.ByStatus, tc.status)
			}
		})
	}
}

// A permanent deletion is notified as changeType "deleted" and comes out of
// delta with @removed reason "deleted": a removed cloud user all the same.
func TestPurgedUserIsRemoved(t *testing.T) {
	e := newEnvWith(t, graphsim.Options{NotificationDelay: -1}) // the delay is not the subject
	seedUsers(e.sim, 3)
	w := e.start(e.config("w1"), e.conn.JS)
	e.subscription("")
	waitRounds(t, w, 1)
	waitFor(t, 5*time.Second, "full sync stored", func() bool { return e.users.len() == 3 })
	if !e.sim.PurgeUser(userID(2)) {
		t.Fatal("PurgeUser")
	}
	waitFor(t, 10*time.Second, "removed event", func() bool {
		_, ok := e.users.find(func(u events.CloudUser) bool { return u.ID == userID(2) && u.Removed })
		return ok
	})
	deleted := 0
	for _, d := range e.sim.Deliveries() {
		if strings.Contains(string(d.Body), `"changeType":"deleted"`) {
			deleted++
		}
	}
	if deleted == 0 {
		t.Errorf("no 'deleted' notification among %d deliveries", len(e.sim.Deliveries()))
	}
}
