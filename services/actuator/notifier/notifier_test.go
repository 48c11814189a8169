package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/natstest"
)

var (
	ann = graph.User{ID: "c-ann", UPN: "ann@contoso.com", Mail: "ann@contoso.com", DisplayName: "Ann", PreferredLanguage: "fr-FR"}
	bob = graph.User{ID: "c-bob", UPN: "bob@contoso.com", Mail: "bob@contoso.com", DisplayName: "Bob"}
)

func settings() config.Notify {
	s := config.Default().Notify
	s.Enabled = true
	s.Senders = []string{"noreply1@contoso.com", "noreply2@contoso.com"}
	s.MaxAttempts = 3
	return s
}

type fixedClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fixedClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fixedClock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

var noon = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)

func newNotifier(t *testing.T, js jetstream.JetStream, g graph.Client, m graph.Messenger, set config.Notify, now func() time.Time) *Service {
	t.Helper()
	s, err := New(context.Background(), Deps{JS: js, Graph: g, Messenger: m, Settings: set, Log: zerolog.Nop(), Now: now, MaxWait: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func notifyAction(u graph.User, template string, lead int, eventID string) events.Action {
	ref := events.UserRef{ObjectGUID: "guid-" + u.ID, UPN: u.UPN, CloudID: u.ID, Mail: u.Mail}
	set := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	n := &events.Notice{Template: template, LeadDays: lead, PasswordSetAt: set, Expiry: noon.AddDate(0, 0, max(lead, 0)+1)}
	return events.Action{ID: events.ActionID("expiry_notice", ref, eventID), Kind: events.ActionNotify, Rule: "expiry_notice",
		EventID: eventID, User: ref, Notice: n}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNoticeEmailInUserLanguage(t *testing.T) {
	_, conn := natstest.Run(t)
	m := &fakeMessenger{}
	s := newNotifier(t, conn.JS, newFakeGraph(ann), m, settings(), func() time.Time { return noon })
	if err := s.Handle(ctxT(t), notifyAction(ann, events.NoticeExpiryWarning, 7, "e1"), natsx.Meta{}); err != nil {
		t.Fatal(err)
	}
	if len(m.mails) != 1 {
		t.Fatalf("%d mails", len(m.mails))
	}
	got := m.mails[0]
	if got.From != "noreply1@contoso.com" || got.Mail.To[0] != "ann@contoso.com" ||
		!strings.HasPrefix(got.Mail.Subject, "Votre mot de passe expire dans 7 jours") || !strings.Contains(got.Mail.HTML, "<html lang=\"fr\">") ||
		got.Mail.Headers["x-pwsync-notice"] == "" {
		t.Fatalf("mail %+v", got)
	}
	if recs := auditRecords(t, conn.JS); !hasAudit(recs, "send_email", events.OutcomeOK, "noreply1@contoso.com") || !hasAudit(recs, "", events.OutcomeOK, "email") {
		t.Fatalf("audit %+v", recs)
	}
}

func TestLedgerExactlyOnce(t *testing.T) {
	dir := t.TempDir()
	emb, err := natsx.StartEmbedded(natsx.EmbeddedConfig{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	conn := natstest.Connect(t, emb)
	m := &fakeMessenger{}
	now := func() time.Time { return noon }
	s := newNotifier(t, conn.JS, newFakeGraph(ann, bob), m, settings(), now)
	a := notifyAction(bob, events.NoticeExpiryWarning, 7, "e1")
	ctx := ctxT(t)

	// Delivered, then redelivered (same action), then decided again from
	// another event (same user, password, template and lead day).
	again := notifyAction(bob, events.NoticeExpiryWarning, 7, "e2")
	for i, act := range []events.Action{a, a, again} {
		if err := s.Handle(ctx, act, natsx.Meta{NumDelivered: uint64(i + 1)}); err != nil {
			t.Fatalf("delivery %d: %v", i, err)
		}
	}
	// The process restarts, with its NATS server (same data dir).
	conn.NC.Close()
	emb.Shutdown()
	emb, err = natsx.StartEmbedded(natsx.EmbeddedConfig{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	conn = natstest.Connect(t, emb)
	s = newNotifier(t, conn.JS, newFakeGraph(ann, bob), m, settings(), now)
	if err := s.Handle(ctx, a, natsx.Meta{NumDelivered: 4}); err != nil {
		t.Fatal(err)
	}
	if mails, _ := m.counts(); mails != 1 {
		t.Fatalf("%d mails for one notice, want 1", mails)
	}
	// The next lead day, and a new password, are other notices.
	next := notifyAction(bob, events.NoticeExpiryWarning, 3, "e3")
	newPassword := notifyAction(bob, events.NoticeExpiryWarning, 7, "e4")
	newPassword.Notice.PasswordSetAt = newPassword.Notice.PasswordSetAt.AddDate(0, 3, 0)
	for _, act := range []events.Action{next, newPassword} {
		if err := s.Handle(ctx, act, natsx.Meta{}); err != nil {
			t.Fatal(err)
		}
	}
	if mails, _ := m.counts(); mails != 3 {
		t.Fatalf("%d mails, want 3", mails)
	}
	if recs := auditRecords(t, conn.JS); !hasAudit(recs, "", events.OutcomeSkipped, "already sent") {
		t.Fatalf("duplicates not audited as skipped: %+v", recs)
	}
}

func TestLedgerCrashWindowAndFailures(t *testing.T) {
	_, conn := natstest.Run(t)
	ctx := ctxT(t)
	m := &fakeMessenger{}
	s := newNotifier(t, conn.JS, newFakeGraph(ann, bob), m, settings(), func() time.Time { return noon })

	// A crash between the send and the ledger write leaves "sending":
	// the notice is not sent again (at most once), and that is audited.
	crashed := notifyAction(bob, events.NoticeExpired, 0, "c1")
	key := crashed.Notice.LedgerKey(crashed.User)
	if _, err := s.ledger.kv.Create(ctx, key, mustJSON(ledgerEntry{State: stateSending, ActionID: "earlier", At: noon})); err != nil {
		t.Fatal(err)
	}
	if err := s.Handle(ctx, crashed, natsx.Meta{}); err != nil {
		t.Fatal(err)
	}
	if mails, _ := m.counts(); mails != 0 {
		t.Fatal("an in-doubt notice was sent again")
	}
	if !hasAudit(auditRecords(t, conn.JS), "", events.OutcomeSkipped, "in doubt") {
		t.Fatal("in-doubt notice not audited")
	}

	// Graph refused (503): the claim is released, the redelivery sends once.
	retry := notifyAction(bob, events.NoticeExpiryWarning, 1, "r1")
	m.failMail = []error{&graph.Error{Status: http.StatusServiceUnavailable, RetryAfter: 2 * time.Second}}
	var later *natsx.RetryLater
	if err := s.Handle(ctx, retry, natsx.Meta{}); !errors.As(err, &later) || later.After != 2*time.Second {
		t.Fatalf("503 with Retry-After: got %v", err)
	}
	if err := s.Handle(ctx, retry, natsx.Meta{NumDelivered: 2}); err != nil {
		t.Fatal(err)
	}
	if mails, _ := m.counts(); mails != 1 {
		t.Fatalf("%d mails after a retried 503, want 1", mails)
	}

	// A connection that never opened did not send: retried, not in doubt.
	dial := notifyAction(ann, events.NoticeExpiryWarning, 1, "d1")
	m.failMail = []error{&graph.Error{Err: fmt.Errorf("post: %w", &netOpDial)}}
	if err := s.Handle(ctx, dial, natsx.Meta{}); err == nil || errors.Is(err, natsx.ErrPermanent) {
		t.Fatalf("dial error: got %v, want a retry", err)
	}
	if err := s.Handle(ctx, dial, natsx.Meta{}); err != nil {
		t.Fatal(err)
	}
	// A timeout mid-request may have sent: in doubt, not resent.
	timeout := notifyAction(ann, events.NoticeExpired, 0, "t1")
	m.failMail = []error{&graph.Error{Err: context.DeadlineExceeded}}
	if err := s.Handle(ctx, timeout, natsx.Meta{}); err != nil {
		t.Fatalf("timeout: %v", err)
	}
	if err := s.Handle(ctx, timeout, natsx.Meta{}); err != nil {
		t.Fatal(err)
	}
	if mails, _ := m.counts(); mails != 2 {
		t.Fatalf("%d mails, want 2 (retry after dial error; none after the timeout)", mails)
	}

	// Failing every time: dead-lettered after max_attempts.
	dead := notifyAction(bob, events.NoticePasswordReset, 0, "x1")
	for i := range 3 {
		m.failMail = []error{&graph.Error{Status: http.StatusInternalServerError}}
		err := s.Handle(ctx, dead, natsx.Meta{})
		if perm := errors.Is(err, natsx.ErrPermanent); perm != (i == 2) {
			t.Fatalf("attempt %d: %v", i+1, err)
		}
	}
	// A refusal (400) is permanent at once.
	bad := notifyAction(ann, events.NoticePasswordReset, 0, "b1")
	m.failMail = []error{&graph.Error{Status: http.StatusBadRequest, Code: "ErrorInvalidRecipients"}}
	if err := s.Handle(ctx, bad, natsx.Meta{}); !errors.Is(err, natsx.ErrPermanent) {
		t.Fatalf("400: %v", err)
	}
	if !hasAudit(auditRecords(t, conn.JS), "", events.OutcomeDeadLetter, "") {
		t.Fatal("dead letter not audited")
	}
}

func TestTeamsThenEmailFallback(t *testing.T) {
	_, conn := natstest.Run(t)
	ctx := ctxT(t)
	m := &fakeMessenger{noApp: map[string]bool{"c-bob": true}}
	set := settings()
	set.Teams.Enabled = true
	s := newNotifier(t, conn.JS, newFakeGraph(ann, bob), m, set, func() time.Time { return noon })
	for _, a := range []events.Action{notifyAction(ann, events.NoticeExpiryWarning, 3, "t1"), notifyAction(bob, events.NoticeExpiryWarning, 3, "t2")} {
		if err := s.Handle(ctx, a, natsx.Meta{}); err != nil {
			t.Fatal(err)
		}
	}
	if len(m.activities) != 1 || m.activities[0].User != "c-ann" || len(m.mails) != 1 || m.mails[0].Mail.To[0] != "bob@contoso.com" {
		t.Fatalf("activities %+v mails %+v", m.activities, m.mails)
	}
	act := m.activities[0].Activity
	if act.ActivityType != "systemDefault" || act.TemplateParameters["systemDefaultText"] == "" || act.TopicWebURL == "" ||
		!strings.Contains(act.PreviewText, "expire") {
		t.Fatalf("activity %+v", act)
	}
	if !hasAudit(auditRecords(t, conn.JS), "send_teams", events.OutcomeSkipped, "falling back to email") {
		t.Fatal("fallback not audited")
	}
	// Redelivering Bob's notice sends nothing more: the ledger holds it as sent by email.
	if err := s.Handle(ctx, notifyAction(bob, events.NoticeExpiryWarning, 3, "t2"), natsx.Meta{}); err != nil {
		t.Fatal(err)
	}
	if mails, acts := m.counts(); mails != 1 || acts != 1 {
		t.Fatalf("after redelivery: %d mails %d activities", mails, acts)
	}
}

func TestQuietHoursDefer(t *testing.T) {
	_, conn := natstest.Run(t)
	ctx := ctxT(t)
	m := &fakeMessenger{}
	set := settings()
	set.DefaultTimeZone = "Europe/Paris"
	set.QuietHours = config.QuietHours{Start: "21:00", End: "07:30"}
	clk := &fixedClock{t: time.Date(2026, 3, 10, 22, 0, 0, 0, time.UTC)} // 23:00 in Paris
	s := newNotifier(t, conn.JS, newFakeGraph(bob), m, set, clk.Now)
	a := notifyAction(bob, events.NoticeExpiryWarning, 7, "q1")
	a.Notice.Expiry = clk.Now().AddDate(0, 0, 7)
	var later *natsx.RetryLater
	if err := s.Handle(ctx, a, natsx.Meta{}); !errors.As(err, &later) || later.After != 8*time.Hour+30*time.Minute {
		t.Fatalf("in quiet hours: %v", err)
	}
	if mails, _ := m.counts(); mails != 0 {
		t.Fatal("sent during quiet hours")
	}
	if !hasAudit(auditRecords(t, conn.JS), "quiet_hours", OutcomeDeferred, "2026-03-11 07:30 CET") {
		t.Fatal("deferral not audited")
	}
	clk.Set(clk.Now().Add(later.After)) // redelivered when quiet hours end
	if err := s.Handle(ctx, a, natsx.Meta{NumDelivered: 2}); err != nil {
		t.Fatal(err)
	}
	if mails, _ := m.counts(); mails != 1 {
		t.Fatal("not sent after quiet hours")
	}
}

func TestNoticeSkipsAndDryRun(t *testing.T) {
	_, conn := natstest.Run(t)
	ctx := ctxT(t)
	m := &fakeMessenger{}
	s := newNotifier(t, conn.JS, newFakeGraph(bob), m, settings(), func() time.Time { return noon })
	stale := notifyAction(bob, events.NoticeExpiryWarning, 3, "s1")
	stale.Notice.Expiry = noon.Add(-time.Hour)
	dry := notifyAction(bob, events.NoticePasswordReset, 0, "d1")
	dry.DryRun = true
	gone := notifyAction(graph.User{ID: "c-gone", UPN: "gone@contoso.com"}, events.NoticeExpired, 0, "g1")
	goneWithMail := notifyAction(graph.User{ID: "c-gone2", UPN: "gone2@contoso.com", Mail: "gone2@contoso.com"}, events.NoticeExpired, 0, "g2")
	noNotice := notifyAction(bob, events.NoticeExpired, 0, "n1")
	noNotice.Notice = nil
	tests := []struct {
		name      string
		a         events.Action
		permanent bool
		audit     string
	}{
		{"stale_warning", stale, false, "stale"},
		{"dry_run", dry, false, "would send"},
		{"no_mail_address", gone, true, "no mail address"},
		{"ad_mail_when_no_cloud_account", goneWithMail, false, "email from"},
		{"no_notice", noNotice, true, "without a notice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Handle(ctx, tt.a, natsx.Meta{})
			if errors.Is(err, natsx.ErrPermanent) != tt.permanent || (!tt.permanent && err != nil) {
				t.Fatalf("err %v, permanent want %v", err, tt.permanent)
			}
			if !hasAuditDetail(auditRecords(t, conn.JS), tt.a.ID, tt.audit) {
				t.Fatalf("no audit for %s with %q", tt.a.ID, tt.audit)
			}
		})
	}
	if mails, _ := m.counts(); mails != 1 {
		t.Fatalf("%d mails, want only the AD-mail one", mails)
	}
}

func hasAuditDetail(recs []events.AuditRecord, actionID, detail string) bool {
	for _, r := range recs {
		if r.ActionID == actionID && r.Step == "" && strings.Contains(r.Detail, detail) {
			return true
		}
	}
	return false
}

// cardChecker is a Workflows webhook stand-in that checks each card's shape
// (Microsoft's documented envelope) and can throttle.
type cardChecker struct {
	mu       sync.Mutex
	cards    []map[string]any
	problems []string
	throttle int
}

func (c *cardChecker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.throttle > 0 {
		c.throttle--
		w.Header().Set("Retry-After", "1")
		http.Error(w, "throttled", http.StatusTooManyRequests)
		return
	}
	body, _ := io.ReadAll(r.Body)
	bad := func(s string) { c.problems = append(c.problems, s) }
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || r.URL.Query().Get("sig") != "s3cr3t" {
		bad(fmt.Sprintf("request %s %s %q", r.Method, r.URL, r.Header.Get("Content-Type")))
	}
	var env struct {
		Type        string `json:"type"`
		Attachments []struct {
			ContentType string          `json:"contentType"`
			ContentURL  *string         `json:"contentUrl"`
			Content     json.RawMessage `json:"content"`
		} `json:"attachments"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		bad("envelope: " + err.Error())
	}
	if env.Type != "message" || len(env.Attachments) != 1 || env.Attachments[0].ContentType != "application/vnd.microsoft.card.adaptive" ||
		env.Attachments[0].ContentURL != nil || !strings.Contains(string(body), `"contentUrl":null`) {
		bad("envelope shape: " + string(body))
	}
	var cardBody map[string]any
	if len(env.Attachments) == 1 {
		_ = json.Unmarshal(env.Attachments[0].Content, &cardBody)
	}
	if cardBody["type"] != "AdaptiveCard" || cardBody["version"] == nil || cardBody["$schema"] == nil {
		bad("card: " + string(body))
	}
	items, _ := cardBody["body"].([]any)
	if len(items) == 0 {
		bad("card without body")
	}
	for _, it := range items {
		el, _ := it.(map[string]any)
		switch el["type"] {
		case "TextBlock":
			if s, _ := el["text"].(string); s == "" {
				bad("empty TextBlock")
			}
		case "FactSet":
			for _, f := range el["facts"].([]any) {
				fm := f.(map[string]any)
				if fm["title"] == "" || fm["value"] == "" {
					bad("empty fact")
				}
			}
		default:
			bad(fmt.Sprintf("unexpected element %v", el["type"]))
		}
	}
	if strings.Contains(string(body), "Action.Submit") {
		bad("Action.Submit is not supported in webhook cards")
	}
	c.cards = append(c.cards, cardBody)
	w.WriteHeader(http.StatusAccepted)
}

func TestAlertToWorkflowsWebhook(t *testing.T) {
	_, conn := natstest.Run(t)
	ctx := ctxT(t)
	hook := &cardChecker{throttle: 1}
	srv := httptest.NewServer(hook)
	t.Cleanup(srv.Close)
	set := settings()
	set.Enabled = false // alerts only
	set.WorkflowsWebhookURL = config.NewSecret(srv.URL + "/workflows/abc/triggers/manual/run?sig=s3cr3t")
	s := newNotifier(t, conn.JS, nil, &fakeMessenger{}, set, func() time.Time { return noon })
	a := events.Action{ID: "alert.drift_storm.1", Kind: events.ActionAlert, Rule: "drift_storm", EventID: "ev9",
		EventTime: noon, Reason: "37 users drifted in 5 minutes", User: events.UserRef{UPN: "bob@contoso.com"}}

	var later *natsx.RetryLater
	if err := s.Handle(ctx, a, natsx.Meta{}); !errors.As(err, &later) || later.After != time.Second {
		t.Fatalf("throttled webhook: %v", err)
	}
	for range 2 { // delivered, then redelivered
		if err := s.Handle(ctx, a, natsx.Meta{}); err != nil {
			t.Fatal(err)
		}
	}
	hook.mu.Lock()
	defer hook.mu.Unlock()
	if len(hook.problems) > 0 {
		t.Fatalf("card problems: %v", hook.problems)
	}
	if len(hook.cards) != 1 {
		t.Fatalf("%d cards, want 1", len(hook.cards))
	}
	b, _ := json.Marshal(hook.cards[0])
	for _, want := range []string{"drift_storm", "37 users drifted", "bob@contoso.com", "FactSet"} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("card lacks %q: %s", want, b)
		}
	}
	recs := auditRecords(t, conn.JS)
	for _, r := range recs {
		if strings.Contains(r.Detail, "s3cr3t") {
			t.Fatalf("webhook secret in the audit: %+v", r)
		}
	}
	if !hasAudit(recs, "post_alert", events.OutcomeOK, "") || !hasAudit(recs, "post_alert", events.OutcomeFailed, "429") {
		t.Fatalf("audit %+v", recs)
	}
}

func TestAlertWithoutWebhookIsAudited(t *testing.T) {
	_, conn := natstest.Run(t)
	s := newNotifier(t, conn.JS, nil, &fakeMessenger{}, settings(), nil)
	a := events.Action{ID: "alert.x", Kind: events.ActionAlert, Rule: "writeback_gap", Reason: "AD did not follow"}
	if err := s.Handle(ctxT(t), a, natsx.Meta{}); err != nil {
		t.Fatal(err)
	}
	if !hasAudit(auditRecords(t, conn.JS), "", events.OutcomeOK, "AD did not follow") {
		t.Fatal("alert not audited")
	}
}

func TestWebhookErrorsHideTheURL(t *testing.T) {
	url := "http://127.0.0.1:1/workflows/x?sig=s3cr3t"
	err := postCard(context.Background(), &http.Client{Timeout: time.Second}, url, Alert{Title: "t"})
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("error %v", err)
	}
}
