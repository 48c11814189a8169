package simtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/actuator/notifier"
	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph/msgraph"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/graphsim"
	"github.com/pwsync/pwsync/testrig/natstest"
)

const secret = "sim-secret"

// limits are the simulator's (and the notifier's) limits, time-scaled.
// mailPerDay 0: the simulator's 10,000, unchecked by the notifier.
// mailLatency: how long the simulator takes to accept a message (the
// mailbox's concurrency counts it).
type limits struct {
	mailPerWindow  int
	mailWindow     time.Duration
	teamsPerWindow int
	teamsWindow    time.Duration
	mailPerDay     int
	dayWindow      time.Duration
	mailLatency    time.Duration
}

type env struct {
	sim     *graphsim.Server
	client  *msgraph.Client
	emb     *natsx.Embedded
	conn    *natsx.Conn
	senders []string
}

func newEnv(t testing.TB, l limits, senders int) *env {
	t.Helper()
	sim, err := graphsim.Start(graphsim.Options{ClientSecret: secret, WriteBudget: -1,
		MailPerMinute: l.mailPerWindow, MailWindow: l.mailWindow,
		MailRecipientsPerDay: l.mailPerDay, MailDayWindow: l.dayWindow, MailLatency: l.mailLatency,
		ActivityPerSecond: l.teamsPerWindow, ActivityWindow: l.teamsWindow})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := sim.WriteCAFile(ca); err != nil {
		t.Fatal(err)
	}
	client, err := msgraph.New(msgraph.Config{TenantID: sim.TenantID(), ClientID: sim.ClientID(), ClientSecret: secret,
		AuthorityHost: sim.AuthorityHost(), GraphBaseURL: sim.GraphBaseURL(), CAFile: ca, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	e := &env{sim: sim, client: client}
	for i := range senders {
		upn := fmt.Sprintf("noreply%d@contoso.com", i+1)
		sim.PutUser(graphsim.User{ID: fmt.Sprintf("sender-%d", i+1), UserPrincipalName: upn, Mail: upn, AccountEnabled: true})
		e.senders = append(e.senders, upn)
	}
	e.emb, e.conn = natstest.Run(t)
	return e
}

// users adds n users; every noTeamsEvery-th has no Teams app (0: all have it).
func (e *env) users(n, noTeamsEvery int, lang string) []graphsim.User {
	var out []graphsim.User
	for i := range n {
		upn := fmt.Sprintf("user%05d@contoso.com", i)
		u := graphsim.User{ID: fmt.Sprintf("u-%05d", i), UserPrincipalName: upn, Mail: upn, DisplayName: fmt.Sprintf("User %d", i),
			AccountEnabled: true, PreferredLanguage: lang}
		e.sim.PutUser(u)
		if noTeamsEvery > 0 && i%noTeamsEvery == 0 {
			e.sim.SetTeamsAppInstalled(u.ID, false)
		}
		out = append(out, u)
	}
	return out
}

func (e *env) settings(l limits, teams bool) config.Notify {
	s := config.Default().Notify
	s.Enabled, s.Senders, s.Teams.Enabled = true, e.senders, teams
	s.Concurrency = 16
	s.Pacing = config.Pacing{MailPerWindow: l.mailPerWindow, MailWindow: l.mailWindow,
		MailPerDay: l.mailPerDay, MailDayWindow: l.dayWindow,
		TeamsPerWindow: l.teamsPerWindow, TeamsWindow: l.teamsWindow}
	return s
}

func (e *env) notifier(t testing.TB, set config.Notify, holder string) *notifier.Service {
	t.Helper()
	return e.notifierWith(t, notifier.Deps{JS: e.conn.JS, Settings: set, Holder: holder, MaxWait: 30 * time.Second})
}

// notifierWith fills in the env's Graph client and a quiet log.
func (e *env) notifierWith(t testing.TB, d notifier.Deps) *notifier.Service {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d.Graph, d.Messenger, d.Log = e.client, e.client, zerolog.Nop()
	if os.Getenv("PWSYNC_TEST_LOG") != "" {
		d.Log = zerolog.New(os.Stderr).With().Timestamp().Str("holder", d.Holder).Logger()
	}
	s, err := notifier.New(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// publish puts one expiry warning per user on the ACTIONS stream, each
// decided twice (two events): the ledger must send it once.
func (e *env) publish(t testing.TB, users []graphsim.User, twice bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pub := natsx.NewPublisher(e.conn.JS)
	setAt := time.Now().Add(-80 * 24 * time.Hour).Truncate(time.Second)
	for _, u := range users {
		ref := events.UserRef{ObjectGUID: "guid-" + u.ID, UPN: u.UserPrincipalName, CloudID: u.ID}
		for k := range map[bool]int{false: 1, true: 2}[twice] {
			ev := fmt.Sprintf("ev-%s-%d", u.ID, k)
			a := events.Action{ID: events.ActionID("expiry_notice", ref, ev), Kind: events.ActionNotify, Rule: "expiry_notice",
				EventID: ev, User: ref, Notice: &events.Notice{Template: events.NoticeExpiryWarning, LeadDays: 7,
					PasswordSetAt: setAt, Expiry: time.Now().Add(7 * 24 * time.Hour)}}
			if _, err := pub.PublishJSON(ctx, a.Subject(), a.ID, a); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// run starts replicas notifiers and returns a stop function.
func (e *env) run(t testing.TB, set config.Notify, replicas int) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range replicas {
		s := e.notifier(t, set, fmt.Sprintf("replica-%d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Run(ctx); err != nil {
				t.Errorf("notifier %d: %v", i, err)
			}
		}()
	}
	return func() { cancel(); wg.Wait() }
}

func (e *env) delivered() int { return len(e.sim.SentMail()) + len(e.sim.ActivityNotifications()) }

func (e *env) waitDelivered(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for e.delivered() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d notices delivered after %s", e.delivered(), n, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// maxInWindow is the largest number of times within any window (per key).
func maxInWindow(times map[string][]time.Time, window time.Duration) int {
	best := 0
	for _, ts := range times {
		sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
		j := 0
		for i := range ts {
			for !ts[j].Add(window).After(ts[i]) {
				j++
			}
			best = max(best, i-j+1)
		}
	}
	return best
}

// TestPacingUnderLimitsWithTwoReplicas: 2 replicas, 3 senders, Teams for
// most users and email for those without the Teams app. The simulator
// refuses (and counts) anything over its limits: zero refusals, each user
// notified exactly once, the 403 users by email.
func TestPacingUnderLimitsWithTwoReplicas(t *testing.T) {
	l := limits{mailPerWindow: 30, mailWindow: 500 * time.Millisecond, teamsPerWindow: 5, teamsWindow: 100 * time.Millisecond}
	e := newEnv(t, l, 3)
	users := e.users(240, 3, "fr-FR") // 80 without the Teams app
	e.publish(t, users, true)
	stop := e.run(t, e.settings(l, true), 2)
	e.waitDelivered(t, len(users), 45*time.Second)
	time.Sleep(300 * time.Millisecond) // anything extra would show now
	stop()

	st := e.sim.Stats()
	if st.MailThrottled != 0 || st.ActivityThrottled != 0 {
		t.Fatalf("limit violations: mail %d, Teams %d", st.MailThrottled, st.ActivityThrottled)
	}
	mails, acts := e.sim.SentMail(), e.sim.ActivityNotifications()
	got := map[string]int{}
	perSender := map[string][]time.Time{}
	for _, m := range mails {
		got[strings.ToLower(m.To[0])]++
		perSender[m.From] = append(perSender[m.From], m.Time)
		if !strings.HasPrefix(m.Subject, "Votre mot de passe expire") {
			t.Fatalf("subject %q: want the user's language (fr)", m.Subject)
		}
	}
	teams := map[string][]time.Time{}
	for _, a := range acts {
		got[a.UserID]++
		teams["app"] = append(teams["app"], a.Time)
	}
	for i, u := range users {
		key := u.ID
		if i%3 == 0 {
			key = u.UserPrincipalName // no Teams app: by email
		}
		if got[key] != 1 {
			t.Fatalf("%s notified %d times (mails %d, activities %d)", key, got[key], len(mails), len(acts))
		}
	}
	if len(mails) != 80 || len(acts) != 160 || len(perSender) != 3 {
		t.Fatalf("%d mails from %d senders, %d activities", len(mails), len(perSender), len(acts))
	}
	if m := maxInWindow(perSender, l.mailWindow); m > l.mailPerWindow {
		t.Fatalf("%d mails in one window from one sender", m)
	}
	if m := maxInWindow(teams, l.teamsWindow); m > l.teamsPerWindow {
		t.Fatalf("%d activities in one window", m)
	}
}

// replica is a notifier on its own NATS connection, as in its own process.
type replica struct {
	name   string
	conn   *natsx.Conn
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

func (e *env) startReplica(t testing.TB, d notifier.Deps) *replica {
	t.Helper()
	r := &replica{name: d.Holder, conn: natstest.Connect(t, e.emb), done: make(chan error, 1)}
	d.JS = r.conn.JS
	s := e.notifierWith(t, d)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() { _ = r.stop() })
	return r
}

// stop ends the replica (a graceful stop) and returns what Run returned.
func (r *replica) stop() error {
	r.once.Do(func() { r.cancel(); r.err = <-r.done })
	return r.err
}

// inDoubt reads the UPNs whose notice was audited as skipped in doubt (a
// claim that never settled: ledger.go).
func (e *env) inDoubt(t testing.TB) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]bool{}
	err := audit.Read(ctx, e.conn.JS, audit.Query{Kinds: []string{"action"}}, func(r events.AuditRecord) error {
		if r.Outcome == events.OutcomeSkipped && strings.HasPrefix(r.Detail, "in doubt") {
			out[strings.ToLower(r.User.UPN)] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// leaseHolder reads who holds the notifier lease ("" for nobody).
func (e *env) leaseHolder(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := natsx.Bucket(ctx, e.conn.JS, natsx.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	v, err := kv.Get(ctx, notifier.LeaseName)
	if natsx.IsNotFound(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(v.Value())
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPacingAcrossFailover: the lease holder is killed (its NATS
// connection closed, the lease not released) in the middle of a burst;
// the standby takes over and goes on from the windows and day counts the
// dead one left in KV. Limits per sender: 30 per 3 s and 45 per rolling
// 12 s "day", so the first holder uses a whole day's worth before it dies
// and the successor must wait for it to roll: the simulator refuses (and
// counts) any send over either limit or over 4 in flight on a mailbox.
func TestPacingAcrossFailover(t *testing.T) {
	l := limits{mailPerWindow: 30, mailWindow: 3 * time.Second, mailPerDay: 45, dayWindow: 12 * time.Second,
		teamsPerWindow: 5, teamsWindow: 100 * time.Millisecond, mailLatency: 20 * time.Millisecond}
	e := newEnv(t, l, 2)
	users := e.users(180, 0, "en-US") // 2 days' worth for 2 senders
	e.publish(t, users, true)
	set := e.settings(l, false)
	deps := func(holder string) notifier.Deps {
		// A killed holder's unacked messages come back after AckWait; a
		// send it never saw answered counts for SendTimeout.
		return notifier.Deps{Settings: set, Holder: holder, MaxWait: 5 * time.Second, AckWait: 8 * time.Second, SendTimeout: 3 * time.Second}
	}
	a := e.startReplica(t, deps("replica-a"))
	waitFor(t, 10*time.Second, "replica-a to hold the lease", func() bool { return e.leaseHolder(t) == "replica-a" })
	b := e.startReplica(t, deps("replica-b"))

	// Kill a in its second burst (the first is 30 per sender at once, the
	// second the day's remaining 15 when the 3 s window has passed).
	waitFor(t, 20*time.Second, "replica-a's second burst", func() bool { return len(e.sim.SentMail()) >= 70 })
	a.conn.NC.Close()
	killed := time.Now()
	sentByA := len(e.sim.SentMail())
	// Stand-in for the lease TTL (15 s) running out: the test skips the
	// wait, not the mechanism (the successor only reads KV).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	leases, err := natsx.Bucket(ctx, e.conn.JS, natsx.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	if err := leases.Purge(ctx, notifier.LeaseName); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "replica-b to take the lease over", func() bool { return e.leaseHolder(t) == b.name })
	tookOver := time.Now()

	// A notice whose claim replica-a wrote but never settled is in doubt:
	// the ledger chooses at most once there (ledger.go), and replica-b
	// audits it as skipped instead of sending it. So the run is over when
	// every user was either mailed or audited in doubt.
	// (A user's second decision may be audited in doubt too while the
	// first one's send is under way: only users never mailed count.)
	doubt := map[string]bool{}
	waitFor(t, 90*time.Second, "every notice delivered or audited in doubt", func() bool {
		mailed := map[string]bool{}
		for _, m := range e.sim.SentMail() {
			mailed[strings.ToLower(m.To[0])] = true
		}
		if len(mailed) < len(users)-set.Concurrency {
			return false
		}
		time.Sleep(200 * time.Millisecond) // the audit is read at most 5 times a second
		clear(doubt)
		for u := range e.inDoubt(t) {
			if !mailed[u] {
				doubt[u] = true
			}
		}
		return len(mailed)+len(doubt) >= len(users)
	})
	time.Sleep(500 * time.Millisecond) // anything extra would show now
	if err := b.stop(); err != nil {
		t.Errorf("replica-b: %v", err)
	}

	st := e.sim.Stats()
	mails := e.sim.SentMail()
	first := mails[0].Time
	for _, m := range mails {
		if m.Time.Before(first) {
			first = m.Time
		}
	}
	t.Logf("replica-a sent %d before it was killed %s after the first send; replica-b held the lease %s later; "+
		"simulator: %d mails, refusals %d (day %d, concurrency %d), at most %d in flight on a mailbox",
		sentByA, killed.Sub(first).Round(time.Millisecond), tookOver.Sub(killed).Round(time.Millisecond),
		len(mails), st.MailThrottled, st.MailDayThrottled, st.MailConcurrencyThrottled, st.MaxMailInFlight)
	if st.MailThrottled != 0 {
		// What each sender sent and was refused when, from the first send.
		rel := func(t time.Time) string { return t.Sub(first).Round(time.Millisecond).String() }
		for _, m := range mails {
			t.Logf("sent  %s %s", m.From, rel(m.Time))
		}
		for _, r := range e.sim.Requests() {
			if strings.HasSuffix(r.Path, "/sendMail") && r.Status == 429 {
				t.Logf("429   %s %s", r.Path, rel(r.Time))
			}
		}
		t.Logf("killed %s, took over %s", rel(killed), rel(tookOver))
		t.Fatalf("limit violations across the failover: %d (day %d, concurrency %d)", st.MailThrottled, st.MailDayThrottled, st.MailConcurrencyThrottled)
	}
	// The takeover must have happened while a's sends still filled the
	// day, or the test proves nothing.
	if tookOver.Sub(first) >= l.dayWindow {
		t.Fatalf("replica-b took over %s after the first send: a's day had already rolled", tookOver.Sub(first))
	}
	got := map[string]int{}
	perSender := map[string][]time.Time{}
	for _, m := range mails {
		got[strings.ToLower(m.To[0])]++
		perSender[m.From] = append(perSender[m.From], m.Time)
	}
	for _, u := range users {
		// In doubt: replica-a may have sent it (and died before settling)
		// or not (its claim landed, its send never started); never twice.
		if n := got[u.UserPrincipalName]; n > 1 || n == 0 && !doubt[u.UserPrincipalName] {
			t.Fatalf("%s notified %d times (in doubt: %v)", u.UserPrincipalName, n, doubt[u.UserPrincipalName])
		}
	}
	// Only claims in flight on replica-a when it died can be in doubt and
	// not mailed.
	if len(doubt) > set.Concurrency {
		t.Fatalf("%d notices in doubt, more than replica-a's %d deliveries at once: %v", len(doubt), set.Concurrency, doubt)
	}
	t.Logf("in doubt (at most once, audited): %d", len(doubt))
	if m := maxInWindow(perSender, l.mailWindow); m > l.mailPerWindow {
		t.Fatalf("%d mails in one window from one sender", m)
	}
	if m := maxInWindow(perSender, l.dayWindow); m > l.mailPerDay {
		t.Fatalf("%d mails in one day from one sender", m)
	}
}

// TestMailboxConcurrencyBound: with a simulator that takes 40 ms to accept
// a message and 16 deliveries at once, the notifier keeps at most 4 sends
// in flight per mailbox (Outlook's limit, which the simulator enforces);
// raised to 8, the simulator refuses some, which shows the bound is what
// keeps it. Either way each notice goes once.
func TestMailboxConcurrencyBound(t *testing.T) {
	l := limits{mailPerWindow: 30, mailWindow: 500 * time.Millisecond, teamsPerWindow: 5, teamsWindow: 100 * time.Millisecond,
		mailLatency: 40 * time.Millisecond}
	for _, tc := range []struct {
		bound, users int
		refused      bool
	}{{0, 120, false}, {8, 40, true}} {
		t.Run(fmt.Sprintf("bound %d", max(tc.bound, notifier.MailboxConcurrency)), func(t *testing.T) {
			e := newEnv(t, l, 2)
			users := e.users(tc.users, 0, "en-US")
			e.publish(t, users, false)
			set := e.settings(l, false)
			e.startReplica(t, notifier.Deps{Settings: set, Holder: "replica-a", MaxWait: 30 * time.Second, MailboxConcurrency: tc.bound})
			e.waitDelivered(t, len(users), 60*time.Second)
			time.Sleep(200 * time.Millisecond)
			st := e.sim.Stats()
			t.Logf("at most %d in flight on a mailbox; refused for concurrency %d, in all %d", st.MaxMailInFlight, st.MailConcurrencyThrottled, st.MailThrottled)
			got := map[string]int{}
			for _, m := range e.sim.SentMail() {
				got[strings.ToLower(m.To[0])]++
			}
			for _, u := range users {
				if got[u.UserPrincipalName] != 1 {
					t.Fatalf("%s notified %d times", u.UserPrincipalName, got[u.UserPrincipalName])
				}
			}
			if tc.refused {
				if st.MailConcurrencyThrottled == 0 {
					t.Fatalf("8 in flight per mailbox and no refusal: the simulator does not enforce its limit (%+v)", st)
				}
				return
			}
			if st.MailThrottled != 0 || st.MaxMailInFlight != notifier.MailboxConcurrency {
				t.Fatalf("refusals %d (concurrency %d), at most %d in flight: want 0 and exactly %d (the bound reached, not exceeded)",
					st.MailThrottled, st.MailConcurrencyThrottled, st.MaxMailInFlight, notifier.MailboxConcurrency)
			}
		})
	}
}
