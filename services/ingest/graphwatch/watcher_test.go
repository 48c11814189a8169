package graphwatch_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/ingest/graphwatch"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/graphsim"
	"github.com/pwsync/pwsync/testrig/natstest"
)

const disableExpiration = events.PolicyDisablePasswordExpiration

func TestConfigValidation(t *testing.T) {
	ok := graphwatch.Config{NotificationURL: "https://pwsync.example/graph/notifications", LifecycleURL: "https://pwsync.example/graph/lifecycle"}
	for _, tc := range []struct {
		name   string
		mutate func(*graphwatch.Config)
		want   string
	}{
		{"no notification url", func(c *graphwatch.Config) { c.NotificationURL = "" }, "notification_url is required"},
		{"relative lifecycle url", func(c *graphwatch.Config) { c.LifecycleURL = "/graph/lifecycle" }, "lifecycle_url must be an absolute"},
		{"lifetime too long", func(c *graphwatch.Config) { c.Lifetime = 41760 * time.Minute }, "lifetime"},
		{"renew before lifetime", func(c *graphwatch.Config) { c.Lifetime, c.RenewBefore = time.Hour, 2*time.Hour }, "renew_before"},
		{"check slower than renewal", func(c *graphwatch.Config) { c.RenewBefore, c.CheckEvery = time.Hour, 2*time.Hour }, "check_every"},
		{"negative delta interval", func(c *graphwatch.Config) { c.DeltaInterval = -time.Second }, "delta_interval"},
		{"valid, but no tracker", func(*graphwatch.Config) {}, "needs a graph.Tracker"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.mutate(&cfg)
			_, err := graphwatch.New(cfg, nil, nil, zerolog.Nop())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// The manager creates the /users subscription; Graph's handshake reaches our
// real receiver, and the receiver then accepts exactly the new secret.
func TestSubscriptionCreatedAndClientStateLookup(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("w1")
	w := e.start(cfg, e.conn.JS)
	sub := e.subscription("")
	if sub.Resource != "/users" || sub.ChangeType != "updated,deleted" || sub.NotificationURL != cfg.NotificationURL ||
		sub.LifecycleNotificationURL != cfg.LifecycleURL || len(sub.ClientState) < 40 {
		t.Fatalf("subscription: %+v", sub)
	}
	if left := time.Until(sub.Expiration); left < graphwatch.MaxLifetime-time.Minute || left > graphwatch.MaxLifetime {
		t.Errorf("subscription expires in %v, want about %v", left, graphwatch.MaxLifetime)
	}
	waitFor(t, 5*time.Second, "ready", w.Ready)

	if secret, ok := w.ClientState(sub.ID); !ok || secret != sub.ClientState {
		t.Fatalf("ClientState(current) = %v", ok)
	}
	for _, id := range []string{"", "bbbbbbbb-0000-4000-8000-000000000000"} {
		if _, ok := w.ClientState(id); ok {
			t.Errorf("ClientState(%q) accepted", id)
		}
	}

	// Through the receiver: a wrong secret is dropped, the right one stored.
	post := func(clientState string) {
		t.Helper()
		body := fmt.Sprintf(`{"value":[{"subscriptionId":%q,"clientState":%q,"changeType":"updated","resource":"Users/%s",`+
			`"tenantId":"t","resourceData":{"@odata.type":"#Microsoft.Graph.User","@odata.id":"Users/%[3]s","id":"%[3]s"}}]}`,
			sub.ID, clientState, userID(1))
		resp, err := e.rcv.Client().Post(e.rcv.URL+"/graph/notifications", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("receiver answered %d", resp.StatusCode)
		}
	}
	before := e.hook.Stats()
	post("not-" + sub.ClientState)
	if s := e.hook.Stats(); s.RejectedClientState != before.RejectedClientState+1 || s.Published != before.Published {
		t.Fatalf("wrong clientState: stats %+v", s)
	}
	post(sub.ClientState)
	if s := e.hook.Stats(); s.Published != before.Published+1 {
		t.Fatalf("right clientState: stats %+v", s)
	}

	// The secret is stored, but never logged.
	kv, err := natsx.Bucket(context.Background(), e.conn.JS, natsx.BucketSubscriptions)
	if err != nil {
		t.Fatal(err)
	}
	if ent, err := kv.Get(context.Background(), "current"); err != nil || string(ent.Value()) != sub.ID {
		t.Fatalf("current subscription in KV: %v", err)
	}
	if strings.Contains(e.logs.String(), sub.ClientState) {
		t.Fatal("the clientState appears in the logs")
	}
	if st := w.Stats(); st.Created != 1 || !st.SubscriptionLease || !st.DeltaLease {
		t.Errorf("stats %+v", st)
	}
}

// A change in Graph -> notification -> receiver -> NATS -> delta round ->
// events.graph.user with the new state.
func TestUserChangeBecomesCloudUserEvent(t *testing.T) {
	// No notification delay: the latency logged below is pwsync's own
	// (Graph's delivery delay is the simulator's default, pinned there).
	e := newEnvWith(t, graphsim.Options{NotificationDelay: -1})
	const n = 12
	seedUsers(e.sim, n)
	w := e.start(e.config("w1"), e.conn.JS)
	e.subscription("")
	waitRounds(t, w, 1)
	for i := range n { // the first round is a full sync
		e.users.waitUser(t, userID(i), "None")
	}

	var lat []time.Duration
	for i := range 10 {
		start := time.Now()
		setPolicies(t, e.sim, userID(i), disableExpiration)
		got := e.users.waitUser(t, userID(i), disableExpiration)
		lat = append(lat, got.at.Sub(start))
		if i > 0 {
			continue
		}
		u := got.user
		if !strings.HasPrefix(got.env.ID, u.EventID()+".") || got.msgID != got.env.ID || got.env.Source != events.SourceGraph || got.env.Type != events.TypeCloudUser {
			t.Errorf("envelope %s / msg id %s for %+v", got.env.ID, got.msgID, u)
		}
		// Delta leaves out what was never set on the user: mail,
		// lastPasswordChangeDateTime and preferredLanguage here.
		never := []string{"lastPasswordChangeDateTime", "mail", "preferredLanguage"}
		if !slices.Equal(slices.Sorted(slices.Values(u.Absent)), never) || u.Removed || u.UPN != "user0@contoso.test" || !u.AccountEnabled || !u.SyncEnabled || u.ImmutableID != "imm0" {
			t.Errorf("cloud user %+v", u)
		}
	}
	slices.Sort(lat)
	t.Logf("Graph change -> events.graph.user stored (simulator, no notification delay), %d changes: min %v p50 %v max %v",
		len(lat), lat[0], lat[len(lat)/2], lat[len(lat)-1])

	// A deleted user comes back as @removed.
	e.sim.DeleteUser(userID(11))
	waitFor(t, 10*time.Second, "removed event", func() bool {
		_, ok := e.users.find(func(u events.CloudUser) bool { return u.ID == userID(11) && u.Removed })
		return ok
	})

	kv, err := natsx.Bucket(context.Background(), e.conn.JS, natsx.BucketCursors)
	if err != nil {
		t.Fatal(err)
	}
	if ent, err := kv.Get(context.Background(), graphwatch.CursorKey); err != nil || !strings.Contains(string(ent.Value()), "deltatoken") {
		t.Fatalf("saved delta link: %v", err)
	}
}

// A burst of changes makes few delta rounds, and every user is published.
func TestBurstIsCoalesced(t *testing.T) {
	e := newEnv(t)
	const n = 20
	seedUsers(e.sim, n)
	w := e.start(e.config("w1"), e.conn.JS)
	e.subscription("")
	waitRounds(t, w, 1)
	before := w.Stats()

	for i := range n {
		setPolicies(t, e.sim, userID(i), disableExpiration)
	}
	for i := range n {
		e.users.waitUser(t, userID(i), disableExpiration)
	}
	waitFor(t, 5*time.Second, "all notifications consumed", func() bool { return w.Stats().Triggers-before.Triggers >= n })
	time.Sleep(200 * time.Millisecond) // a round still pending would show now
	after := w.Stats()
	rounds := after.Rounds - before.Rounds
	t.Logf("%d changes -> %d notifications consumed -> %d delta rounds", n, after.Triggers-before.Triggers, rounds)
	if rounds > 6 {
		t.Errorf("%d rounds for a burst of %d changes: not coalesced", rounds, n)
	}
}

// fakeClock is a settable clock, starting at the real time.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
func patches(s *graphsim.Server) (n int) {
	for _, r := range s.Requests() {
		if r.Method == http.MethodPatch && strings.Contains(r.Path, "/subscriptions/") {
			n++
		}
	}
	return n
}

// The subscription is renewed once less than RenewBefore remains, not before.
func TestRenewalTiming(t *testing.T) {
	e := newEnv(t)
	clock := newFakeClock()
	cfg := e.config("w1")
	cfg.Lifetime, cfg.RenewBefore, cfg.CheckEvery, cfg.Now = time.Hour, 20*time.Minute, 50*time.Millisecond, clock.Now
	w := e.start(cfg, e.conn.JS)
	sub := e.subscription("")

	clock.Advance(39 * time.Minute) // 21 minutes left
	time.Sleep(500 * time.Millisecond)
	if n := patches(e.sim); n != 0 {
		t.Fatalf("renewed with 21 of 60 minutes left (RenewBefore 20m): %d PATCHes", n)
	}
	clock.Advance(2 * time.Minute) // 19 minutes left
	waitFor(t, 5*time.Second, "renewal", func() bool { return patches(e.sim) == 1 && w.Stats().Renewed == 1 })
	renewed := e.subscription("")
	if renewed.ID != sub.ID {
		t.Fatalf("renewal replaced the subscription: %s -> %s", sub.ID, renewed.ID)
	}
	if d := renewed.Expiration.Sub(clock.Now().Add(time.Hour)); d < -2*time.Second || d > 2*time.Second {
		t.Errorf("renewed to %v, want about now+1h (%v)", renewed.Expiration, clock.Now().Add(time.Hour))
	}
	time.Sleep(500 * time.Millisecond)
	if n := patches(e.sim); n != 1 {
		t.Errorf("%d PATCHes after the renewal, want 1", n)
	}
}

// Graph removed the subscription and said so: the manager creates a new one
// (new secret), the old secret stays valid for in-flight notifications, and
// a delta round catches up on what the gap missed.
func TestSubscriptionRemovedIsRecreated(t *testing.T) {
	e := newEnv(t)
	seedUsers(e.sim, 2)
	w := e.start(e.config("w1"), e.conn.JS)
	old := e.subscription("")
	waitRounds(t, w, 1)
	rounds := w.Stats().Rounds

	if !e.sim.RemoveSubscription(old.ID, true) {
		t.Fatal("no subscription to remove")
	}
	sub := e.subscription(old.ID)
	if sub.ClientState == old.ClientState {
		t.Fatal("recreated with the old clientState")
	}
	waitFor(t, 5*time.Second, "new secret accepted", func() bool {
		s, ok := w.ClientState(sub.ID)
		return ok && s == sub.ClientState
	})
	if s, ok := w.ClientState(old.ID); !ok || s != old.ClientState {
		t.Error("the old secret must stay valid for a grace period")
	}
	waitRounds(t, w, rounds+1)
	lifecycle := slices.ContainsFunc(e.sim.Deliveries(), func(d graphsim.Delivery) bool {
		return d.Lifecycle && d.Status == http.StatusAccepted && strings.Contains(string(d.Body), "subscriptionRemoved")
	})
	if !lifecycle {
		t.Error("no subscriptionRemoved delivery accepted by the receiver")
	}

	// Notifications of the new subscription flow.
	setPolicies(t, e.sim, userID(0), disableExpiration)
	e.users.waitUser(t, userID(0), disableExpiration)

	// Removed without a word: the next check's GET finds it gone.
	e.sim.RemoveSubscription(sub.ID, false)
	third := e.subscription(sub.ID)
	waitFor(t, 5*time.Second, "third subscription recorded", func() bool { return w.Stats().Created == 3 })
	if third.ID == old.ID {
		t.Errorf("after a silent removal: %+v", third)
	}
}

// Graph answers 404 to the renewal: the manager recreates the subscription.
func TestNotFoundOnRenewRecreates(t *testing.T) {
	e := newEnv(t)
	clock := newFakeClock()
	cfg := e.config("w1")
	cfg.Lifetime, cfg.RenewBefore, cfg.CheckEvery, cfg.Now = time.Hour, 20*time.Minute, 50*time.Millisecond, clock.Now
	w := e.start(cfg, e.conn.JS)
	old := e.subscription("")

	e.sim.InjectFault(graphsim.Fault{Method: http.MethodPatch, PathPrefix: "/v1.0/subscriptions/", Status: http.StatusNotFound, Count: 1})
	clock.Advance(45 * time.Minute)
	sub := e.subscription(old.ID)
	waitFor(t, 5*time.Second, "new subscription recorded", func() bool { return w.Stats().Created == 2 })
	if st := w.Stats(); st.Renewed != 0 {
		t.Errorf("stats %+v", st)
	}
	if d := sub.Expiration.Sub(clock.Now().Add(time.Hour)); d < -2*time.Second || d > 2*time.Second {
		t.Errorf("recreated with expiry %v, want about now+1h", sub.Expiration)
	}
}

// reauthorizationRequired: reauthorize, then renew.
func TestReauthorizationRequired(t *testing.T) {
	e := newEnv(t)
	w := e.start(e.config("w1"), e.conn.JS)
	sub := e.subscription("")
	waitFor(t, 5*time.Second, "ready", w.Ready)
	if !e.sim.SendLifecycleNotification(sub.ID, events.GraphLifecycleReauthorizationRequired) {
		t.Fatal("lifecycle notification not sent")
	}
	waitFor(t, 10*time.Second, "reauthorized and renewed", func() bool {
		st := w.Stats()
		return st.Reauthorized == 1 && st.Renewed == 1
	})
	if got := e.subscription(""); got.ID != sub.ID || got.Reauthorized.IsZero() {
		t.Errorf("after reauthorization: %+v", got)
	}
}

// "missed": a delta round catches up on a change whose notification was lost.
func TestMissedTriggersDeltaRound(t *testing.T) {
	e := newEnv(t)
	seedUsers(e.sim, 2)
	w := e.start(e.config("w1"), e.conn.JS)
	sub := e.subscription("")
	waitRounds(t, w, 1)
	// A new subscription asks for a round of its own: let it pass, so that
	// only "missed" can explain the next one.
	for last := w.Stats().Rounds; ; last = w.Stats().Rounds {
		time.Sleep(300 * time.Millisecond)
		if w.Stats().Rounds == last {
			break
		}
	}

	e.secrets.off.Store(true) // the receiver drops what comes now
	setPolicies(t, e.sim, userID(1), disableExpiration)
	waitFor(t, 5*time.Second, "the notification to be dropped", func() bool { return e.hook.Stats().RejectedClientState > 0 })
	time.Sleep(200 * time.Millisecond)
	if _, ok := e.users.find(func(u events.CloudUser) bool { return u.PasswordPolicies == disableExpiration }); ok {
		t.Fatal("change published without a notification")
	}
	e.secrets.off.Store(false)

	rounds := w.Stats().Rounds
	e.sim.SendLifecycleNotification(sub.ID, events.GraphLifecycleMissed)
	e.users.waitUser(t, userID(1), disableExpiration)
	if w.Stats().Rounds <= rounds {
		t.Error("no delta round after missed")
	}
}

// An expired delta token makes a full resync; unchanged users are
// deduplicated by their stable IDs.
func TestExpiredDeltaTokenFullResync(t *testing.T) {
	e := newEnv(t)
	const n = 150 // two delta pages
	seedUsers(e.sim, n)
	w := e.start(e.config("w1"), e.conn.JS)
	e.subscription("")
	waitRounds(t, w, 1)
	waitFor(t, 5*time.Second, "full sync stored", func() bool { return e.users.len() == n })
	before := w.Stats()

	e.sim.ExpireDeltaTokens()
	setPolicies(t, e.sim, userID(3), disableExpiration)
	e.users.waitUser(t, userID(3), disableExpiration)
	// The resync is done when it has published all n users: counting rounds
	// is not enough, an empty round may have ended after "before" was read.
	waitFor(t, 10*time.Second, "the resync's n users", func() bool { return w.Stats().Users-before.Users >= n })
	st := w.Stats()
	if st.Resyncs != 1 || st.Duplicates-before.Duplicates != n-1 {
		t.Errorf("after an expired token: %+v (before %+v)", st, before)
	}
	if got := e.users.len(); got != n+1 {
		t.Errorf("%d events stored, want %d: the resync's unchanged users must be deduplicated", got, n+1)
	}

	// And incremental again afterwards.
	setPolicies(t, e.sim, userID(4), disableExpiration)
	e.users.waitUser(t, userID(4), disableExpiration)
	if w.Stats().Resyncs != 1 {
		t.Error("resynced again")
	}
}

// Throttling and server errors are retried with backoff, not fatal.
func TestGraphErrorsAreRetried(t *testing.T) {
	e := newEnv(t)
	seedUsers(e.sim, 3)
	e.sim.InjectFault(graphsim.Fault{Method: http.MethodPost, PathPrefix: "/v1.0/subscriptions", Status: http.StatusServiceUnavailable, Count: 2})
	e.sim.InjectFault(graphsim.Fault{Method: http.MethodGet, PathPrefix: "/v1.0/users/delta", Status: http.StatusTooManyRequests,
		RetryAfter: time.Second, Count: 1})
	start := time.Now()
	w := e.start(e.config("w1"), e.conn.JS)
	e.subscription("")
	waitRounds(t, w, 1)
	if d := time.Since(start); d < time.Second {
		t.Errorf("first round after %v: Retry-After 1s not honoured", d)
	}
	for i := range 3 {
		e.users.waitUser(t, userID(i), "None")
	}
	if st := e.sim.Stats(); st.ByStatus[http.StatusTooManyRequests] != 1 || st.ByStatus[http.StatusServiceUnavailable] != 2 {
		t.Errorf("simulator stats %+v", st)
	}
}

// The first replica's NATS connection dies: the second takes both leases
// over, keeps the subscription, and the pipeline flows through it.
func TestLeaseMovesWhenConnectionDies(t *testing.T) {
	e := newEnv(t)
	seedUsers(e.sim, 2)
	c1, c2 := natstest.Connect(t, e.emb), natstest.Connect(t, e.emb)
	w1 := e.start(e.config("w1"), c1.JS)
	sub := e.subscription("")
	waitRounds(t, w1, 1)
	w2 := e.start(e.config("w2"), c2.JS)
	e.secrets.w.Store(w2) // the receiver asks the survivor
	waitFor(t, 5*time.Second, "w2 ready", w2.Ready)
	if s, ok := w2.ClientState(sub.ID); !ok || s != sub.ClientState {
		t.Fatal("w2 does not know the subscription's secret")
	}
	time.Sleep(natsx.LeaseRenew) // w2 tries, and fails, to take the leases
	if st := w2.Stats(); st.SubscriptionLease || st.DeltaLease || st.Created != 0 || st.Rounds != 0 {
		t.Fatalf("w2 works while w1 holds the leases: %+v", st)
	}

	c1.NC.Close()
	died := time.Now()
	waitFor(t, 3*natsx.LeaseTTL, "w2 to hold both leases", func() bool {
		st := w2.Stats()
		return st.SubscriptionLease && st.DeltaLease
	})
	t.Logf("leases moved %v after w1's connection died (lease TTL %v)", time.Since(died).Round(100*time.Millisecond), natsx.LeaseTTL)
	waitRounds(t, w2, 1) // a new holder starts with a round

	setPolicies(t, e.sim, userID(1), disableExpiration)
	e.users.waitUser(t, userID(1), disableExpiration)
	if subs := e.sim.Subscriptions(); len(subs) != 1 || subs[0].ID != sub.ID || w2.Stats().Created != 0 {
		t.Errorf("the subscription must survive the takeover: %+v", subs)
	}
}

// A sync run re-stamping a value pwsync removed is exactly A -> B -> A: the
// return to A must be a new event, not a duplicate of the first A. The second
// change's notification falls in the webhook's dedup window, so it is the
// follow-up round that finds it.
func TestChangeBackWithinDuplicateWindowIsNotLost(t *testing.T) {
	e := newEnv(t)
	seedUsers(e.sim, 1)
	cfg := e.config("w1")
	cfg.FollowUp = 500 * time.Millisecond
	w := e.start(cfg, e.conn.JS)
	e.subscription("")
	waitRounds(t, w, 1)
	e.users.waitUser(t, userID(0), "None")
	setPolicies(t, e.sim, userID(0), disableExpiration)
	e.users.waitUser(t, userID(0), disableExpiration)
	setPolicies(t, e.sim, userID(0), "None")
	waitFor(t, 10*time.Second, "the return to None stored as a second event", func() bool {
		n := 0
		for _, s := range e.users.all() {
			if s.user.ID == userID(0) && s.user.PasswordPolicies == "None" {
				n++
			}
		}
		return n == 2
	})
}
