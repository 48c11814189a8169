package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/evaluator"
	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/natstest"
)

// clock is a settable clock shared by the evaluator and the scheduler.
type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func newClock(t time.Time) *clock    { c := &clock{}; c.Set(t); return c }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

var (
	setAt  = time.Date(2026, 3, 2, 8, 30, 0, 0, time.UTC)
	expiry = setAt.Add(42 * rules.Day)
)

func testPolicy() rules.Policy {
	return rules.Policy{ForcedChange: true, PasswordChanged: true,
		Expiry: rules.ExpiryPolicy{Enabled: true, LeadDays: []int{14, 7, 3, 1, 0, -1}, Notify: true, Enforce: true, MaxLate: 36 * time.Hour}}
}

func adUser(guid string, usn int64) events.ADUser {
	return events.ADUser{Domain: "example.test", ObjectGUID: guid, DN: "CN=" + guid + ",DC=example,DC=test",
		UPN: guid + "@example.test", PwdLastSet: events.ToFileTime(setAt), UserAccountControl: 512, USNChanged: usn,
		ExpiryComputed: events.ToFileTime(expiry), Expiry: events.ToFileTime(expiry), ExpirySource: events.ExpirySourceComputed}
}

// instance is one pwsync replica's evaluator and scheduler.
type instance struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func start(t *testing.T, conn *natsx.Conn, clk *clock, name string, p rules.Policy) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := zerolog.Nop()
	ev, err := evaluator.New(ctx, evaluator.Deps{JS: conn.JS, Policy: p, Log: log, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := New(ctx, Deps{JS: conn.JS, Policy: p, Now: clk.Now, MaxSleep: 20 * time.Millisecond, Holder: name, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{cancel: cancel}
	for _, run := range []func(context.Context) error{ev.Run, sc.Run} {
		in.wg.Add(1)
		go func() {
			defer in.wg.Done()
			if err := run(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("%s: %v", name, err)
			}
		}()
	}
	t.Cleanup(in.stop)
	return in
}

func (in *instance) stop() { in.cancel(); in.wg.Wait() }

func publishUser(t *testing.T, conn *natsx.Conn, u events.ADUser, at time.Time) {
	t.Helper()
	ev, err := events.NewEnvelope(u.EventID(), events.SourceAD, events.TypeADUser, at, u)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natsx.NewPublisher(conn.JS).PublishJSON(context.Background(), ev.Subject(), ev.ID, ev); err != nil {
		t.Fatal(err)
	}
}

// actions returns every action in the ACTIONS stream.
func actions(t *testing.T, js jetstream.JetStream) []events.Action {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, natsx.StreamActions, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []events.Action
	for n := info.NumPending; n > 0; {
		batch, err := c.FetchNoWait(int(n))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			var a events.Action
			if err := json.Unmarshal(m.Data(), &a); err != nil {
				t.Fatal(err)
			}
			out = append(out, a)
			n--
		}
	}
	return out
}

// waitActions waits until the stream holds want actions, and a moment more
// to catch extra ones.
func waitActions(t *testing.T, js jetstream.JetStream, want int) []events.Action {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := actions(t, js)
		if len(got) >= want {
			time.Sleep(300 * time.Millisecond) // a duplicate would show up by now
			return actions(t, js)
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d actions, want %d: %s", len(got), want, describe(got))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func describe(as []events.Action) string {
	var out []string
	for _, a := range as {
		s := string(a.Kind) + ":" + a.ID
		out = append(out, s)
	}
	return fmt.Sprint(out)
}

func leads(as []events.Action) []int {
	var out []int
	for _, a := range as {
		if a.Kind == events.ActionNotify && a.Notice != nil {
			out = append(out, a.Notice.LeadDays)
		}
	}
	return out
}

// TestRestartBetweenLeadDaysSendsEachNoticeOnce: lead 14 fires on time,
// pwsync stops, the clock moves past lead 7, a new replica takes over and
// sends lead 7 (and nothing of lead 14 again); then expiry enforces.
func TestRestartBetweenLeadDaysSendsEachNoticeOnce(t *testing.T) {
	_, conn := natstest.Run(t)
	clk := newClock(setAt)
	p := testPolicy()

	a := start(t, conn, clk, "replica-a", p)
	publishUser(t, conn, adUser("guid-1", 10), setAt)
	publishUser(t, conn, adUser("guid-2", 11), setAt)
	time.Sleep(200 * time.Millisecond) // both users evaluated, nothing due
	if got := actions(t, conn.JS); len(got) != 0 {
		t.Fatalf("actions before any lead day: %s", describe(got))
	}

	clk.Set(expiry.Add(-14*rules.Day + time.Minute))
	got := waitActions(t, conn.JS, 2)
	if fmt.Sprint(leads(got)) != "[14 14]" {
		t.Fatalf("after lead 14: %s", describe(got))
	}

	a.stop()
	clk.Set(expiry.Add(-6 * rules.Day)) // lead 7 fell due while down
	start(t, conn, clk, "replica-b", p)
	got = waitActions(t, conn.JS, 4)
	if fmt.Sprint(leads(got)) != "[14 14 7 7]" {
		t.Fatalf("after restart: %s", describe(got))
	}
	ids := map[string]bool{}
	for _, a := range got {
		if ids[a.ID] {
			t.Fatalf("action %s twice", a.ID)
		}
		ids[a.ID] = true
		if a.Notice.Template != events.NoticeExpiryWarning || !a.Notice.Expiry.Equal(expiry) || !a.Notice.PasswordSetAt.Equal(setAt) {
			t.Fatalf("notice = %+v", a.Notice)
		}
	}

	clk.Set(expiry.Add(time.Minute))
	got = waitActions(t, conn.JS, 8)
	var kinds []string
	for _, a := range got[4:] {
		kinds = append(kinds, string(a.Kind))
	}
	slices.Sort(kinds)
	// lead 3 and 1 passed unseen (skipped), expiry: require + expired notice, per user
	if fmt.Sprint(kinds) != "[notify notify require_password_change require_password_change]" {
		t.Fatalf("at expiry: %s", describe(got[4:]))
	}
}

// TestTwoReplicasFireOnce: two replicas compete for the lease; only one
// schedules, and when it dies the other takes over.
func TestTwoReplicasFireOnce(t *testing.T) {
	_, conn := natstest.Run(t)
	clk := newClock(setAt)
	p := testPolicy()
	a := start(t, conn, clk, "replica-a", p)
	start(t, conn, clk, "replica-b", p)
	publishUser(t, conn, adUser("guid-1", 10), setAt)
	time.Sleep(200 * time.Millisecond)
	clk.Set(expiry.Add(-7*rules.Day + time.Minute))
	got := waitActions(t, conn.JS, 1)
	if fmt.Sprint(leads(got)) != "[7]" {
		t.Fatalf("lead 7: %s", describe(got))
	}
	a.stop() // whichever held the lease, the other one goes on
	clk.Set(expiry.Add(-3*rules.Day + time.Minute))
	got = waitActions(t, conn.JS, 2)
	if fmt.Sprint(leads(got)) != "[7 3]" {
		t.Fatalf("lead 3 after replica-a stopped: %s", describe(got))
	}
}

// TestDisabledExpiryDoesNothing: no timers, no actions, when expiry is off.
func TestDisabledExpiryDoesNothing(t *testing.T) {
	_, conn := natstest.Run(t)
	clk := newClock(setAt)
	p := testPolicy()
	p.Expiry.Enabled = false
	start(t, conn, clk, "replica-a", p)
	publishUser(t, conn, adUser("guid-1", 10), setAt)
	time.Sleep(200 * time.Millisecond)
	clk.Set(expiry.Add(rules.Day))
	time.Sleep(300 * time.Millisecond)
	if got := actions(t, conn.JS); len(got) != 0 {
		t.Fatalf("expiry disabled but: %s", describe(got))
	}
}

func TestQueueOrder(t *testing.T) {
	q := newQueue()
	q.set("a", events.ExpiryTimer{Due: setAt.Add(3 * time.Hour)})
	q.set("b", events.ExpiryTimer{Due: setAt.Add(1 * time.Hour)})
	q.set("c", events.ExpiryTimer{Due: setAt.Add(2 * time.Hour)})
	q.set("b", events.ExpiryTimer{Due: setAt.Add(4 * time.Hour)}) // moved later
	q.remove("c")
	var order []string
	for q.Len() > 0 {
		order = append(order, q.pop())
	}
	if fmt.Sprint(order) != "[a b]" {
		t.Fatalf("order = %v", order)
	}
}
