package console_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/console"
	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/shared/adminapi"
	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/shared/userstate"
	"github.com/pwsync/pwsync/testrig/adminapitest"
	"github.com/pwsync/pwsync/testrig/natstest"
)

type fixture struct {
	conn             *natsx.Conn
	env              *adminapitest.Env
	viewer, operator *adminapi.Client
	audit            *audit.Writer
}

func start(t *testing.T) *fixture {
	t.Helper()
	_, conn := natstest.Run(t)
	vt, vc := adminapitest.NewToken(t, "vera", adminapi.RoleViewer)
	ot, oc := adminapitest.NewToken(t, "otto", adminapi.RoleOperator)
	pol := rules.Policy{BreakGlassUPNs: []string{"bg@example.test"}, ForcedChange: true, PasswordChanged: true}
	env := adminapitest.Start(t, conn, func(s *adminapi.Server) {
		console.Register(s, console.Deps{JS: conn.JS, Policy: pol, Log: zerolog.Nop()})
	}, vc, oc)
	return &fixture{conn: conn, env: env, viewer: env.Client(t, vt), operator: env.Client(t, ot),
		audit: audit.NewWriter(natsx.NewPublisher(conn.JS), nil)}
}

func (f *fixture) putUser(t *testing.T, st rules.State) {
	t.Helper()
	ctx := context.Background()
	identity, _ := f.conn.JS.KeyValue(ctx, natsx.BucketIdentity)
	users, _ := f.conn.JS.KeyValue(ctx, natsx.BucketUsers)
	data, _ := json.Marshal(st)
	if _, err := users.Put(ctx, userstate.UserKey(st.AD.ObjectGUID), data); err != nil {
		t.Fatal(err)
	}
	if _, err := identity.Put(ctx, userstate.UPNKey(st.AD.UPN), []byte(st.AD.ObjectGUID)); err != nil {
		t.Fatal(err)
	}
}

func status(err error) int {
	var e *adminapi.APIError
	if errors.As(err, &e) {
		return e.Status
	}
	if err == nil {
		return 200
	}
	return -1
}

func TestUsersAndPolicy(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	exp := events.ToFileTime(time.Now().Add(10 * 24 * time.Hour))
	f.putUser(t, rules.State{Seen: true, InScope: true, ChangeRequired: true, RequiredByAction: "forced-change.g1.ev1",
		AD: events.ADUser{ObjectGUID: "g1", DN: "CN=Alice Liddell,OU=Corp,DC=example,DC=test", UPN: "alice@example.test",
			DisplayName: "Alice Liddell", SAMAccountName: "alice", PwdLastSet: events.ToFileTime(time.Now()), Expiry: exp, ExpirySource: "computed"},
		Cloud: &events.CloudUser{ID: "c1", UPN: "alice@example.test", SyncEnabled: true}})
	f.putUser(t, rules.State{Seen: true, AD: events.ADUser{ObjectGUID: "g2", UPN: "bob@example.test", DisplayName: "Bob Stone"}})
	for _, r := range []events.AuditRecord{
		{Kind: "decision", Rule: "forced-change", User: events.UserRef{ObjectGUID: "g1"}, Outcome: "act"},
		{Kind: "step", Action: "require_password_change", Step: "patch", User: events.UserRef{ObjectGUID: "g1"}, Outcome: "ok", HTTPStatus: 204},
		{Kind: "step", Step: "someone else", User: events.UserRef{ObjectGUID: "g2"}, Outcome: "ok"},
	} {
		if err := f.audit.Write(ctx, r); err != nil {
			t.Fatal(err)
		}
	}

	var v struct {
		Found    bool                 `json:"found"`
		Expiry   *time.Time           `json:"expiry"`
		Pending  []string             `json:"pending"`
		Timeline []events.AuditRecord `json:"timeline"`
		State    rules.State          `json:"state"`
	}
	if err := f.viewer.Do(ctx, "GET", "/api/v1/users/Alice@Example.test", nil, &v); err != nil {
		t.Fatal(err)
	}
	if !v.Found || v.State.Cloud == nil || v.State.Cloud.ID != "c1" || v.Expiry == nil || len(v.Timeline) != 2 ||
		v.Timeline[1].Step != "patch" || len(v.Pending) != 1 || !strings.Contains(v.Pending[0], "forced-change.g1.ev1") {
		t.Fatalf("user view: %+v", v)
	}
	if err := f.viewer.Do(ctx, "GET", "/api/v1/users/nobody@example.test", nil, nil); status(err) != 404 {
		t.Fatalf("unknown user: %v", err)
	}

	cases := []struct {
		q    string
		want []string
	}{
		{"alice", []string{"alice@example.test"}},
		{"STONE", []string{"bob@example.test"}},
		{"example.test", []string{"alice@example.test", "bob@example.test"}},
		{"zz", nil},
	}
	for _, c := range cases {
		var res struct {
			Users []struct {
				UPN string `json:"upn"`
			} `json:"users"`
		}
		if err := f.viewer.Do(ctx, "GET", "/api/v1/users?q="+c.q, nil, &res); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, u := range res.Users {
			got = append(got, u.UPN)
		}
		if strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("search %q: %v, want %v", c.q, got, c.want)
		}
	}

	var pol, ex struct {
		Text string `json:"text"`
	}
	if err := f.viewer.Do(ctx, "GET", "/api/v1/policy", nil, &pol); err != nil || !strings.Contains(pol.Text, "bg@example.test") {
		t.Fatalf("policy: %q %v", pol.Text, err)
	}
	if err := f.viewer.Do(ctx, "GET", "/api/v1/policy/explain/alice@example.test", nil, &ex); err != nil ||
		!strings.Contains(ex.Text, "alice@example.test") || !strings.Contains(ex.Text, "Expiry") {
		t.Fatalf("explain: %q %v", ex.Text, err)
	}
}

func TestAuditExportAndLatency(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	now := time.Now()
	recs := []events.AuditRecord{
		{Time: now.Add(-2 * time.Hour), Kind: "action", Action: "require_password_change", User: events.UserRef{UPN: "old@example.test", ObjectGUID: "g0"}, Outcome: "ok", LatencyMS: 900},
		{Kind: "action", Action: "require_password_change", User: events.UserRef{UPN: "alice@example.test", ObjectGUID: "g1"}, Outcome: "ok", LatencyMS: 250},
		{Kind: "action", Action: "require_password_change", User: events.UserRef{UPN: "bob@example.test", ObjectGUID: "g2"}, Outcome: "ok", LatencyMS: 450},
		{Kind: "action", Action: "notify", User: events.UserRef{UPN: "bob@example.test", ObjectGUID: "g2"}, Outcome: "ok", LatencyMS: 9000},
		{Kind: "action", Action: "require_password_change", User: events.UserRef{UPN: "carol@example.test", ObjectGUID: "g3"}, Outcome: "failed", LatencyMS: 100},
	}
	for _, r := range recs {
		if err := f.audit.Write(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	var lat struct {
		Points  []console.LatencyPoint `json:"points"`
		Summary console.Summary        `json:"summary"`
	}
	if err := f.viewer.Do(ctx, "GET", "/api/v1/latency", nil, &lat); err != nil {
		t.Fatal(err)
	}
	// Old records are stored now (the stream's time is what filters), so all
	// directory writes that succeeded count: 900, 250, 450.
	if lat.Summary.Count != 3 || lat.Summary.Max != 900 || lat.Points[1].UPN != "alice@example.test" {
		t.Fatalf("latency: %+v", lat)
	}

	var b strings.Builder
	if err := f.viewer.Do(ctx, "GET", "/api/v1/audit?user=bob@example.test&format=csv&since=1h", nil, &b); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(b.String(), "\n"); n != 3 || !strings.HasPrefix(b.String(), "time,kind") {
		t.Fatalf("csv export:\n%s", b.String())
	}
	b.Reset()
	if err := f.viewer.Do(ctx, "GET", "/api/v1/audit", nil, &b); err != nil {
		t.Fatal(err)
	}
	// Every record, plus the admin requests made so far (latency, csv export).
	if n := strings.Count(b.String(), "\n"); n != len(recs)+2 {
		t.Fatalf("jsonl export has %d lines:\n%s", n, b.String())
	}
	for _, bad := range []string{"?format=xml", "?since=soon"} {
		if err := f.viewer.Do(ctx, "GET", "/api/v1/audit"+bad, nil, nil); status(err) != 400 {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

func TestDeadLetterRetry(t *testing.T) {
	f := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// A consumer that refuses the message: JetStream's advisory lands in DLQ.
	act := events.Action{ID: "a1", Kind: events.ActionRequireChange, User: events.UserRef{UPN: "alice@example.test", ObjectGUID: "g1"}}
	data, _ := json.Marshal(act)
	if _, err := f.conn.JS.Publish(ctx, "actions.require_password_change", data, jetstream.WithMsgID("a1")); err != nil {
		t.Fatal(err)
	}
	cons, err := f.conn.JS.CreateConsumer(ctx, natsx.StreamActions, jetstream.ConsumerConfig{Durable: "refuser", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.TermWithReason("graph: 403 Authorization_RequestDenied"); err != nil {
		t.Fatal(err)
	}
	var list struct {
		DeadLetters []console.DeadLetter `json:"dead_letters"`
	}
	for deadline := time.Now().Add(5 * time.Second); len(list.DeadLetters) == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no dead letter listed")
		}
		if err := f.viewer.Do(ctx, "GET", "/api/v1/deadletters", nil, &list); err != nil {
			t.Fatal(err)
		}
	}
	d := list.DeadLetters[0]
	if d.Why != "terminated" || d.Reason != "graph: 403 Authorization_RequestDenied" || d.UPN != "alice@example.test" ||
		!d.Available || d.Subject != "actions.require_password_change" {
		t.Fatalf("dead letter: %+v", d)
	}
	path := "/api/v1/deadletters/" + itoa(d.Seq) + "/retry"
	if err := f.viewer.Do(ctx, "POST", path, nil, nil); status(err) != 403 {
		t.Fatalf("viewer retry: %v", err)
	}
	if err := f.operator.Do(ctx, "POST", "/api/v1/deadletters/999/retry", nil, nil); status(err) != 404 {
		t.Fatalf("unknown seq: %v", err)
	}
	var res struct {
		Retried, Duplicate bool
	}
	for i, wantRetried := range []bool{true, false} { // the second click is a duplicate
		if err := f.operator.Do(ctx, "POST", path, nil, &res); err != nil || res.Retried != wantRetried {
			t.Fatalf("retry %d: %+v %v", i, res, err)
		}
	}
	m, err = cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatalf("republished message not delivered: %v", err)
	}
	if m.Subject() != "actions.require_password_change" || string(m.Data()) != string(data) {
		t.Fatalf("republished %s %s", m.Subject(), m.Data())
	}
	recs, err := audit.Last(ctx, f.conn.JS, audit.Query{Kinds: []string{events.KindAdmin}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var retries int
	for _, r := range recs {
		if r.Action == "retry_dead_letter" && strings.Contains(r.Detail, "otto republished ACTIONS") {
			retries++
		}
	}
	if retries != 2 {
		t.Fatalf("retry audit records: %d, want 2 (one ok, one skipped)", retries)
	}
}

func itoa(n uint64) string { b, _ := json.Marshal(n); return string(b) }

func TestLiveStream(t *testing.T) {
	f := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	// Before the stream opens: replayed (since=10m).
	env, _ := events.NewEnvelope("ad.g1.7", events.SourceAD, events.TypeADUser, time.Now(),
		events.ADUser{ObjectGUID: "g1", UPN: "alice@example.test", PwdLastSet: 0})
	data, _ := json.Marshal(env)
	if _, err := f.conn.JS.Publish(ctx, env.Subject(), data); err != nil {
		t.Fatal(err)
	}
	resp, err := f.viewer.Raw(ctx, "GET", "/api/v1/live", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	// After: followed live.
	if err := f.audit.Write(ctx, events.AuditRecord{Kind: "action", Action: "require_password_change", Outcome: "ok",
		User: events.UserRef{UPN: "alice@example.test"}, HTTPStatus: 204}); err != nil {
		t.Fatal(err)
	}
	got := map[string]console.LiveItem{}
	sc := bufio.NewScanner(resp.Body)
	kind := ""
	for len(got) < 2 && sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			kind = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			var it console.LiveItem
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &it); err != nil {
				t.Fatal(err)
			}
			got[kind] = it
		}
	}
	ev, au := got["event"], got["audit"]
	if ev.UPN != "alice@example.test" || ev.MustChange == nil || !*ev.MustChange || ev.Source != "ad" {
		t.Errorf("event item: %+v", ev)
	}
	if au.Record == nil || au.Record.Action != "require_password_change" || au.Record.HTTPStatus != 204 {
		t.Errorf("audit item: %+v", au)
	}
	if err := f.viewer.Do(ctx, "GET", "/api/v1/live?since=forever", nil, nil); status(err) != http.StatusBadRequest {
		t.Errorf("bad since: %v", err)
	}
}

func TestConsoleIsServedWithoutData(t *testing.T) {
	f := start(t)
	c := adminapi.HTTPClient(f.viewer)
	resp, err := c.Get(f.env.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Fatalf("console page: %d %v", resp.StatusCode, resp.Header)
	}
	for _, p := range []string{"/api/v1/users/alice@example.test", "/api/v1/whoami", "/api/v1/unknown"} {
		resp, err := c.Get(f.env.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("%s without token: %d", p, resp.StatusCode)
		}
	}
}

// readLive collects the stream's items until done says it has them all.
func readLive(t *testing.T, ctx context.Context, f *fixture, query string, done func([]console.LiveItem) bool) []console.LiveItem {
	t.Helper()
	resp, err := f.viewer.Raw(ctx, "GET", "/api/v1/live"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got []console.LiveItem
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var it console.LiveItem
		if err := json.Unmarshal([]byte(line), &it); err != nil {
			t.Fatal(err)
		}
		if got = append(got, it); done(got) {
			return got
		}
	}
	t.Fatalf("%s: stream ended early (%v); got %+v", query, sc.Err(), got)
	return nil
}

// ?user= keeps the items whose UPN contains the text, in any case, from both
// streams; other users and items without a UPN stay out.
func TestLiveStreamUserFilter(t *testing.T) {
	f := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	publish := func(id, typ string, data any) {
		t.Helper()
		env, err := events.NewEnvelope(id, events.SourceAD, typ, time.Now(), data)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(env)
		if _, err := f.conn.JS.Publish(ctx, env.Subject(), b); err != nil {
			t.Fatal(err)
		}
	}
	// Each stream ends with an item of alice's (the "last" ones), so that
	// every reader knows when it has seen everything it will get.
	publish("ad.g1.1", events.TypeADUser, events.ADUser{ObjectGUID: "g1", UPN: "Alice.Liddell@Example.test", PwdLastSet: 0})
	publish("ad.g2.2", events.TypeADUser, events.ADUser{ObjectGUID: "g2", UPN: "bob@example.test", PwdLastSet: 0})
	publish("ad.policy.example.test.3", events.TypeADPolicy, events.ADPolicy{Domain: "example.test", Rev: 3})
	publish("ad.g1.4", events.TypeADUser, events.ADUser{ObjectGUID: "g1", UPN: "alice.liddell@example.test", PwdLastSet: 1})
	for _, r := range []events.AuditRecord{
		{Kind: "action", Action: "require_password_change", Outcome: "ok", User: events.UserRef{UPN: "bob@example.test"}},
		{Kind: "action", Action: "require_password_change", Outcome: "ok", User: events.UserRef{UPN: "alice.liddell@example.test"}, Detail: "last"},
	} {
		if err := f.audit.Write(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	sawBothLast := func(items []console.LiveItem) bool {
		var ev, au bool
		for _, it := range items {
			ev = ev || it.EventID == "ad.g1.4"
			au = au || it.Record != nil && it.Record.Detail == "last"
		}
		return ev && au
	}
	alice := []string{"EVENTS Alice.Liddell@Example.test", "EVENTS alice.liddell@example.test", "AUDIT alice.liddell@example.test"}
	cases := []struct {
		query string
		want  []string // "stream upn", in stream order
	}{
		{"?user=LIDDELL", alice},
		{"?user=" + url.QueryEscape(" alice.liddell@EXAMPLE.test "), alice},
		{"?user=alice&since=1h", alice},
		{"", []string{"EVENTS Alice.Liddell@Example.test", "EVENTS bob@example.test", "EVENTS ", "EVENTS alice.liddell@example.test",
			"AUDIT bob@example.test", "AUDIT alice.liddell@example.test"}},
	}
	for _, c := range cases {
		// The streams interleave in any order; each keeps its own.
		var evs, audits []string
		for _, it := range readLive(t, ctx, f, c.query, sawBothLast) {
			if it.Stream == natsx.StreamAudit {
				audits = append(audits, it.Stream+" "+it.UPN)
			} else {
				evs = append(evs, it.Stream+" "+it.UPN)
			}
		}
		if got := append(evs, audits...); strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("%q: items\n%q\nwant\n%q", c.query, got, c.want)
		}
	}
	if err := f.viewer.Do(ctx, "GET", "/api/v1/live?user="+strings.Repeat("a", 257), nil, nil); status(err) != http.StatusBadRequest {
		t.Errorf("long user filter: %v", err)
	}
}
