package notifier

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/natstest"
)

// alertsOnly is the notifier with only the Workflows webhook (no notices).
func alertsOnly(hookURL string, perWindow int, window time.Duration) config.Notify {
	set := settings()
	set.Enabled = false
	set.WorkflowsWebhookURL = config.NewSecret(hookURL + "/workflows/abc/triggers/manual/run?sig=s3cr3t")
	set.DeadLetters = config.DeadLetterAlerts{Enabled: true, PerWindow: perWindow, Window: window}
	return set
}

// deadLetters makes n dead letters the way the actuator does: actions that
// a consumer terminates, whose advisories land in DLQ.
func deadLetters(t *testing.T, js jetstream.JetStream, from, n int) {
	t.Helper()
	ctx := ctxT(t)
	cons, err := js.CreateOrUpdateConsumer(ctx, natsx.StreamActions, jetstream.ConsumerConfig{Durable: "refuser",
		FilterSubject: "actions.require_password_change", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	for i := from; i < from+n; i++ {
		a := events.Action{ID: fmt.Sprintf("act-%d", i), Kind: events.ActionRequireChange, EventID: fmt.Sprintf("ev-%d", i),
			User: events.UserRef{UPN: fmt.Sprintf("user%d@contoso.com", i), ObjectGUID: fmt.Sprintf("g%d", i)}}
		data, _ := json.Marshal(a)
		if _, err := js.Publish(ctx, a.Subject(), data, jetstream.WithMsgID(a.ID)); err != nil {
			t.Fatal(err)
		}
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if err := m.TermWithReason("graph: 403 Authorization_RequestDenied"); err != nil {
			t.Fatal(err)
		}
	}
	// the advisories are stored asynchronously
	dlq, err := js.Stream(ctx, natsx.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		info, err := dlq.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs >= uint64(from+n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d dead letters in DLQ, want %d", info.State.Msgs, from+n)
		}
	}
}

// runNotifier runs s until the returned stop is called.
func runNotifier(t *testing.T, s *Service) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("notifier run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("notifier did not stop")
		}
	}
	t.Cleanup(stop)
	return stop
}

// waitCards waits until the webhook holds n cards, and a little longer to
// see that no more come.
func waitCards(t *testing.T, hook *cardChecker, n int) []string {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		hook.mu.Lock()
		got := len(hook.cards)
		hook.mu.Unlock()
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d cards, want %d", got, n)
		}
	}
	time.Sleep(700 * time.Millisecond)
	hook.mu.Lock()
	defer hook.mu.Unlock()
	if len(hook.problems) > 0 {
		t.Fatalf("card problems: %v", hook.problems)
	}
	var out []string
	for _, c := range hook.cards {
		b, _ := json.Marshal(c)
		out = append(out, string(b))
	}
	if len(out) != n {
		t.Fatalf("%d cards, want %d:\n%s", len(out), n, strings.Join(out, "\n"))
	}
	return out
}

// TestDeadLettersAlertOnceAcrossRestarts: each dead letter becomes one card
// that names its subject, reason, user, action and how to retry it; a
// throttled post is retried; a restarted notifier alerts only about the
// new ones.
func TestDeadLettersAlertOnceAcrossRestarts(t *testing.T) {
	_, conn := natstest.Run(t)
	hook := &cardChecker{throttle: 1}
	srv := httptest.NewServer(hook)
	t.Cleanup(srv.Close)
	set := alertsOnly(srv.URL, 5, time.Minute)
	deadLetters(t, conn.JS, 0, 2)

	stop := runNotifier(t, newNotifier(t, conn.JS, nil, &fakeMessenger{}, set, time.Now))
	cards := waitCards(t, hook, 2)
	stop()
	for i := range 2 { // in any order: the throttled one came back later
		c := cardAbout(t, cards, fmt.Sprintf(`"act-%d"`, i))
		for _, want := range []string{"pwsync: dead letter", "actions.require_password_change", "graph: 403 Authorization_RequestDenied",
			fmt.Sprintf("user%d@contoso.com", i), fmt.Sprintf("/api/v1/deadletters/%d/retry", i+1)} {
			if !strings.Contains(c, want) {
				t.Errorf("card %d lacks %q: %s", i, want, c)
			}
		}
	}

	deadLetters(t, conn.JS, 2, 1)
	stop = runNotifier(t, newNotifier(t, conn.JS, nil, &fakeMessenger{}, set, time.Now))
	cards = waitCards(t, hook, 3)
	stop()
	cardAbout(t, cards, `"act-2"`)
	recs := auditRecords(t, conn.JS)
	for i := range 3 {
		if !hasAudit(recs, "post_alert", events.OutcomeOK, fmt.Sprintf("DLQ seq %d ", i+1)) {
			t.Errorf("dead letter %d: alert not audited", i+1)
		}
	}
	if !hasAudit(recs, "post_alert", events.OutcomeFailed, "429") {
		t.Error("throttled post not audited")
	}
	for _, r := range recs {
		if strings.Contains(r.Detail, "s3cr3t") {
			t.Fatalf("webhook secret in the audit: %+v", r)
		}
	}
}

// TestDeadLetterStormCoalesced: beyond per_window cards in a window, the
// rest of a storm is one summary card; every dead letter is covered once.
func TestDeadLetterStormCoalesced(t *testing.T) {
	_, conn := natstest.Run(t)
	hook := &cardChecker{}
	srv := httptest.NewServer(hook)
	t.Cleanup(srv.Close)
	deadLetters(t, conn.JS, 0, 12)
	start := time.Now()
	runNotifier(t, newNotifier(t, conn.JS, nil, &fakeMessenger{}, alertsOnly(srv.URL, 2, 800*time.Millisecond), time.Now))
	cards := waitCards(t, hook, 3)
	if took := time.Since(start); took < 800*time.Millisecond {
		t.Errorf("summary after %s, before the window ended", took)
	}
	for i, c := range cards[:2] {
		if !strings.Contains(c, fmt.Sprintf("act-%d", i)) {
			t.Errorf("card %d: %s", i, c)
		}
	}
	for _, want := range []string{"10 more dead letters", "3 to 12", "10 × actions.require_password_change: graph: 403", "user2@contoso.com"} {
		if !strings.Contains(cards[2], want) {
			t.Errorf("summary lacks %q: %s", want, cards[2])
		}
	}
	recs := auditRecords(t, conn.JS)
	if n := countAudit(recs, "summarised in one alert card of 10"); n != 10 {
		t.Errorf("%d dead letters audited as summarised, want 10", n)
	}
}

// cardAbout returns the one card containing s.
func cardAbout(t *testing.T, cards []string, s string) string {
	t.Helper()
	var found []string
	for _, c := range cards {
		if strings.Contains(c, s) {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d cards about %s, want 1:\n%s", len(found), s, strings.Join(cards, "\n"))
	}
	return found[0]
}

func countAudit(recs []events.AuditRecord, detail string) int {
	n := 0
	for _, r := range recs {
		if r.Step == "post_alert" && strings.Contains(r.Detail, detail) {
			n++
		}
	}
	return n
}

// TestDeadLetterRedeliveredAfterPost: the process died after posting but
// before the ack; the redelivered dead letter is acknowledged, not posted
// again.
func TestDeadLetterRedeliveredAfterPost(t *testing.T) {
	_, conn := natstest.Run(t)
	hook := &cardChecker{}
	srv := httptest.NewServer(hook)
	t.Cleanup(srv.Close)
	deadLetters(t, conn.JS, 0, 1)
	s := newNotifier(t, conn.JS, nil, &fakeMessenger{}, alertsOnly(srv.URL, 5, time.Minute), time.Now)
	dlq, err := conn.JS.Stream(ctxT(t), natsx.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := dlq.GetMsg(ctxT(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	a := &deadLetterAlerts{s: s, log: zerolog.Nop()}
	first := &fakeMsg{subject: raw.Subject, data: raw.Data, seq: 1, delivered: 1}
	a.handle(ctxT(t), first)
	again := &fakeMsg{subject: raw.Subject, data: raw.Data, seq: 1, delivered: 2}
	a.handle(ctxT(t), again)
	waitCards(t, hook, 1)
	if first.acks != 1 || again.acks != 1 || first.naks+again.naks+first.terms+again.terms != 0 {
		t.Fatalf("first %+v again %+v: want each acknowledged once", first, again)
	}
}

// fakeMsg is a DLQ message handed to the alerter directly.
type fakeMsg struct {
	subject           string
	data              []byte
	seq, delivered    uint64
	acks, naks, terms int
}

func (m *fakeMsg) Data() []byte         { return m.data }
func (m *fakeMsg) Subject() string      { return m.subject }
func (m *fakeMsg) Headers() nats.Header { return nil }
func (m *fakeMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: m.seq}, NumDelivered: m.delivered, Timestamp: time.Now()}, nil
}
func (m *fakeMsg) Ack() error                       { m.acks++; return nil }
func (m *fakeMsg) NakWithDelay(time.Duration) error { m.naks++; return nil }
func (m *fakeMsg) TermWithReason(string) error      { m.terms++; return nil }
func (m *fakeMsg) InProgress() error                { return nil }
