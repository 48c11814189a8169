package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/pwsync/pwsync/shared/logx"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/natstest"
)

const (
	subID   = "e3898f08-5cd0-4a6a-80fc-6addbfb73b7b"
	secret  = "s3cret-Client-State-4711"
	userID  = "8ebd5b5d-3c36-4f1e-9a2b-0d3f2a8c6e11"
	tenant  = "84bd8158-6d4d-4958-8b9f-9d6445542f95"
	expires = "2026-04-01T10:00:00.0000000+00:00"
)

var secrets = StaticSecrets{subID: secret}

// userNotification is one Graph notification for user u, as the docs show it.
func userNotification(sub, clientState, u string) string {
	return fmt.Sprintf(`{"changeType":"updated","clientState":%q,"resource":"Users/%s",`+
		`"resourceData":{"@odata.type":"#Microsoft.Graph.User","@odata.id":"Users/%s","id":"%s","organizationId":%q},`+
		`"subscriptionExpirationDateTime":%q,"subscriptionId":%q,"tenantId":%q}`,
		clientState, u, u, u, tenant, expires, sub, tenant)
}

func lifecycleNotification(sub, clientState, event string) string {
	return fmt.Sprintf(`{"lifecycleEvent":%q,"subscriptionId":%q,"subscriptionExpirationDateTime":%q,"clientState":%q,"tenantId":%q}`,
		event, sub, expires, clientState, tenant)
}

func collection(items ...string) string { return `{"value":[` + strings.Join(items, ",") + `]}` }

// fixedClock keeps the arrival-time window still, so that a re-POST in a test
// is a redelivery however slow the machine.
func fixedClock() time.Time { return time.Date(2026, 3, 3, 9, 0, 10, 0, time.UTC) }

// receiver is a Handler over a real JetStream behind a real HTTP server.
type receiver struct {
	h   *Handler
	srv *httptest.Server
	js  jetstream.JetStream
	log *syncBuffer
}

// publishers are the two ways the Handler publishes: the fast path and any
// plain Publisher.
var publishers = []struct {
	name string
	make func(t *testing.T, conn *natsx.Conn) Publisher
}{
	{"async", func(t *testing.T, conn *natsx.Conn) Publisher { return asyncPublisher(t, conn) }},
	{"natsx", func(_ *testing.T, conn *natsx.Conn) Publisher { return natsx.NewPublisher(conn.JS) }},
}

func asyncPublisher(t testing.TB, conn *natsx.Conn) *AsyncPublisher {
	t.Helper()
	p, err := NewAsyncPublisher(conn.NC, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newReceiver(t *testing.T, cfg Config) *receiver {
	t.Helper()
	_, conn := natstest.Run(t)
	return newReceiverOn(t, cfg, conn, asyncPublisher(t, conn))
}

func newReceiverOn(t *testing.T, cfg Config, conn *natsx.Conn, pub Publisher) *receiver {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = fixedClock
	}
	logs := &syncBuffer{}
	h := NewHandler(cfg, secrets, pub, zerolog.New(logs))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &receiver{h: h, srv: srv, js: conn.JS, log: logs}
}

func (rc *receiver) post(t *testing.T, path, contentType, body string) *http.Response {
	t.Helper()
	resp, err := http.Post(rc.srv.URL+path, contentType, strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func (rc *receiver) postJSON(t *testing.T, path, body string) *http.Response {
	t.Helper()
	return rc.post(t, path, "application/json", body)
}

// stored returns every message in EVENTS, oldest first.
func stored(t *testing.T, js jetstream.JetStream) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, natsx.StreamEvents)
	if err != nil {
		t.Fatalf("opening stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("getting message %d: %v", seq, err)
		}
		out = append(out, m)
	}
	return out
}

func wantStatus(t *testing.T, resp *http.Response, want int) {
	t.Helper()
	if resp.StatusCode != want {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status = %d (%s), want %d", resp.StatusCode, bytes.TrimSpace(b), want)
	}
}

func TestValidationHandshakeEchoesTheDecodedToken(t *testing.T) {
	rc := newReceiver(t, Config{})
	token := "Validation: Testing client application reachability for subscription Request-Id: 25d6bd4c+x&y=<b>é"
	for _, path := range []string{PathNotifications, PathLifecycle} {
		for _, method := range []string{http.MethodPost, http.MethodGet} {
			t.Run(strings.TrimPrefix(path, "/graph/")+"_"+method, func(t *testing.T) {
				// Graph's handshake is a POST with a text/plain (empty) body.
				req, _ := http.NewRequest(method, rc.srv.URL+path+"?validationToken="+url.QueryEscape(token), strings.NewReader(""))
				req.Header.Set("Content-Type", "text/plain; charset=utf-8")
				start := time.Now()
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				wantStatus(t, resp, http.StatusOK)
				if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/plain" {
					t.Errorf("Content-Type = %q, want text/plain", resp.Header.Get("Content-Type"))
				}
				if string(body) != token {
					t.Errorf("body = %q, want the decoded token %q", body, token)
				}
				if d := time.Since(start); d > time.Second {
					t.Errorf("handshake took %s", d)
				}
			})
		}
	}
	if got := stored(t, rc.js); len(got) != 0 {
		t.Errorf("handshakes stored %d messages", len(got))
	}
	if s := rc.h.Stats(); s != (Stats{}) {
		t.Errorf("handshakes counted: %+v", s)
	}
}

func TestGoodNotificationIsStoredWithoutItsClientState(t *testing.T) {
	rc := newReceiver(t, Config{})
	resp := rc.post(t, PathNotifications, "application/json; charset=utf-8", collection(userNotification(subID, secret, userID)))
	wantStatus(t, resp, http.StatusAccepted)

	msgs := stored(t, rc.js)
	if len(msgs) != 1 {
		t.Fatalf("stored %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.Subject != "events.graph.notification" {
		t.Errorf("subject = %q", m.Subject)
	}
	var env events.Envelope
	if err := json.Unmarshal(m.Data, &env); err != nil {
		t.Fatalf("decoding envelope: %v", err)
	}
	if want := "graph." + subID + ".updated." + userID + "."; !strings.HasPrefix(env.ID, want) {
		t.Errorf("event id = %q, want prefix %q", env.ID, want)
	}
	if got := m.Header.Get(nats.MsgIdHdr); got != env.ID {
		t.Errorf("Nats-Msg-Id = %q, want the event id %q", got, env.ID)
	}
	if env.Source != events.SourceGraph || env.Type != events.TypeGraphNotification || !env.Time.Equal(fixedClock()) {
		t.Errorf("envelope = %+v", env)
	}
	if bytes.Contains(m.Data, []byte(secret)) || bytes.Contains(m.Data, []byte("clientState")) {
		t.Errorf("stored event holds the clientState: %s", m.Data)
	}
	var n events.GraphNotification
	if err := env.Decode(&n); err != nil {
		t.Fatal(err)
	}
	if n.UserID() != userID || n.SubscriptionID != subID || n.TenantID != tenant || n.SubscriptionExpirationDateTime.IsZero() {
		t.Errorf("stored notification = %+v", n)
	}
	if s := rc.h.Stats(); s != (Stats{Received: 1, Published: 1}) {
		t.Errorf("stats = %+v", s)
	}
	if strings.Contains(rc.log.String(), secret) {
		t.Errorf("the secret was logged: %s", rc.log)
	}
}

func TestUnauthenticatedNotificationsAreDroppedAndCounted(t *testing.T) {
	tests := []struct {
		name, item, reason string
	}{
		{"wrong_client_state", userNotification(subID, "guessed-secret", userID), "client_state_mismatch"},
		{"secret_with_a_suffix", userNotification(subID, secret+"x", userID), "client_state_mismatch"},
		{"missing_client_state", strings.Replace(userNotification(subID, "", userID), `"clientState":"",`, "", 1), "client_state_mismatch"},
		{"unknown_subscription", userNotification("7f105c7d-0000-4530-97cd-4e7ae6534c07", secret, userID), "unknown_subscription"},
		{"subscription_with_empty_secret", userNotification("no-secret", "", userID), "unknown_subscription"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, conn := natstest.Run(t)
			logs := &syncBuffer{}
			h := NewHandler(Config{Now: fixedClock}, StaticSecrets{subID: secret, "no-secret": ""}, asyncPublisher(t, conn), zerolog.New(logs))
			srv := httptest.NewServer(h)
			defer srv.Close()

			resp, err := http.Post(srv.URL+PathNotifications, "application/json", strings.NewReader(collection(tt.item)))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			// 202 anyway: see Handler.ingest for why.
			wantStatus(t, resp, http.StatusAccepted)
			if got := stored(t, conn.JS); len(got) != 0 {
				t.Errorf("stored %d messages, want none", len(got))
			}
			if s := h.Stats(); s != (Stats{Received: 1, RejectedClientState: 1}) {
				t.Errorf("stats = %+v", s)
			}
			if !strings.Contains(logs.String(), `"reason":"`+tt.reason+`"`) || !strings.Contains(logs.String(), `"subscription_id":"`) {
				t.Errorf("log does not say why: %s", logs)
			}
			if strings.Contains(logs.String(), secret) || strings.Contains(logs.String(), "guessed-secret") {
				t.Errorf("a client state was logged: %s", logs)
			}
		})
	}
}

func TestForgedNotificationInABatchDoesNotStopTheGenuineOnes(t *testing.T) {
	rc := newReceiver(t, Config{})
	body := collection(
		userNotification(subID, secret, userID),
		userNotification(subID, "forged", "11111111-2222-3333-4444-555555555555"),
		userNotification(subID, secret, "66666666-2222-3333-4444-555555555555"),
	)
	wantStatus(t, rc.postJSON(t, PathNotifications, body), http.StatusAccepted)
	if got := stored(t, rc.js); len(got) != 2 {
		t.Errorf("stored %d messages, want the 2 genuine ones", len(got))
	}
	if s := rc.h.Stats(); s != (Stats{Received: 3, Published: 2, RejectedClientState: 1}) {
		t.Errorf("stats = %+v", s)
	}
}

func TestMalformedRequestsAreRefusedAndNothingIsStored(t *testing.T) {
	good := userNotification(subID, secret, userID)
	tests := []struct {
		name, contentType, body string
		want                    int
	}{
		{"not_json", "application/json", `value=1`, http.StatusBadRequest},
		{"truncated_json", "application/json", collection(good)[:40], http.StatusBadRequest},
		{"wrong_type", "application/json", strings.Replace(collection(good), `"subscriptionId":"`+subID+`"`, `"subscriptionId":42`, 1), http.StatusBadRequest},
		{"value_not_an_array", "application/json", `{"value":` + good + `}`, http.StatusBadRequest},
		{"trailing_garbage", "application/json", collection(good) + `{"value":[]}`, http.StatusBadRequest},
		{"empty_value", "application/json", `{"value":[]}`, http.StatusBadRequest},
		{"missing_subscription_id", "application/json", strings.Replace(collection(good), `"subscriptionId":"`+subID+`",`, ``, 1), http.StatusBadRequest},
		{"wrong_content_type", "text/plain", collection(good), http.StatusUnsupportedMediaType},
		{"no_content_type", "", collection(good), http.StatusUnsupportedMediaType},
		{"oversized", "application/json", collection(good, good, good, good, good), http.StatusRequestEntityTooLarge},
	}
	rc := newReceiver(t, Config{MaxBody: 2048})
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantStatus(t, rc.post(t, PathNotifications, tt.contentType, tt.body), tt.want)
			if got := rc.h.Stats().Malformed; got != uint64(i+1) {
				t.Errorf("malformed = %d, want %d", got, i+1)
			}
		})
	}
	t.Run("oversized_without_content_length", func(t *testing.T) {
		// Chunked: only the MaxBytesReader can stop it.
		req, _ := http.NewRequest(http.MethodPost, rc.srv.URL+PathNotifications,
			io.MultiReader(strings.NewReader(collection(good, good, good, good, good))))
		req.Header.Set("Content-Type", "application/json")
		req.ContentLength = -1
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		wantStatus(t, resp, http.StatusRequestEntityTooLarge)
	})
	if got := stored(t, rc.js); len(got) != 0 {
		t.Errorf("stored %d messages, want none", len(got))
	}
	if s := rc.h.Stats(); s.Published != 0 || s.Received != 0 {
		t.Errorf("stats = %+v", s)
	}
}

func TestRedeliveredPostIsStoredOnce(t *testing.T) {
	for _, p := range publishers {
		t.Run(p.name, func(t *testing.T) {
			_, conn := natstest.Run(t)
			rc := newReceiverOn(t, Config{}, conn, p.make(t, conn))
			body := collection(userNotification(subID, secret, userID), lifecycleNotification(subID, secret, "reauthorizationRequired"))
			for range 3 {
				wantStatus(t, rc.postJSON(t, PathNotifications, body), http.StatusAccepted)
			}
			if got := stored(t, rc.js); len(got) != 2 {
				t.Errorf("stored %d messages, want 2", len(got))
			}
			if s := rc.h.Stats(); s != (Stats{Received: 6, Published: 2, Duplicates: 4}) {
				t.Errorf("stats = %+v", s)
			}
		})
	}
}

func TestSameUserChangedTwiceIsStoredTwice(t *testing.T) {
	now := fixedClock()
	_, conn := natstest.Run(t)
	rc := newReceiverOn(t, Config{Now: func() time.Time { return now }}, conn, asyncPublisher(t, conn))
	body := collection(userNotification(subID, secret, userID))

	wantStatus(t, rc.postJSON(t, PathNotifications, body), http.StatusAccepted)
	now = now.Add(3 * time.Minute) // Graph's second notification for a later change looks the same
	wantStatus(t, rc.postJSON(t, PathNotifications, body), http.StatusAccepted)
	if got := stored(t, rc.js); len(got) != 2 {
		t.Errorf("stored %d messages, want one per change", len(got))
	}

	// With a change marker, the content alone tells changes apart.
	marked := func(seq int) string {
		return collection(strings.Replace(userNotification(subID, secret, userID), `"organizationId"`, fmt.Sprintf(`"sequenceNumber":%d,"organizationId"`, seq), 1))
	}
	for _, b := range []string{marked(1), marked(2), marked(1)} {
		wantStatus(t, rc.postJSON(t, PathNotifications, b), http.StatusAccepted)
	}
	if got := stored(t, rc.js); len(got) != 4 {
		t.Errorf("stored %d messages, want 4", len(got))
	}
}

func TestLifecycleNotificationsGoToTheLifecycleSubject(t *testing.T) {
	rc := newReceiver(t, Config{})
	// Graph allows one URL for both kinds: routing is by content.
	wantStatus(t, rc.postJSON(t, PathLifecycle, collection(lifecycleNotification(subID, secret, "reauthorizationRequired"))), http.StatusAccepted)
	wantStatus(t, rc.postJSON(t, PathNotifications, collection(lifecycleNotification(subID, secret, "missed"), userNotification(subID, secret, userID))), http.StatusAccepted)

	subjects := map[string]int{}
	for _, m := range stored(t, rc.js) {
		subjects[m.Subject]++
		var env events.Envelope
		if err := json.Unmarshal(m.Data, &env); err != nil {
			t.Fatal(err)
		}
		if m.Subject == "events.graph.lifecycle" && (env.Type != events.TypeGraphLifecycle || !strings.HasPrefix(env.ID, "graph."+subID+".")) {
			t.Errorf("lifecycle envelope = %+v", env)
		}
	}
	if subjects["events.graph.lifecycle"] != 2 || subjects["events.graph.notification"] != 1 {
		t.Errorf("subjects = %v", subjects)
	}
}

func TestLifecycleNotificationWithWrongClientStateIsDropped(t *testing.T) {
	rc := newReceiver(t, Config{})
	wantStatus(t, rc.postJSON(t, PathLifecycle, collection(lifecycleNotification(subID, "nope", "subscriptionRemoved"))), http.StatusAccepted)
	if got := stored(t, rc.js); len(got) != 0 {
		t.Errorf("stored %d messages", len(got))
	}
}

// startNATSAt starts an embedded server on a fixed store dir and port, so
// that a test can stop it and start it again where the client reconnects.
func startNATSAt(t *testing.T, dir string, port int) *natsx.Embedded {
	t.Helper()
	emb, err := natsx.StartEmbedded(natsx.EmbeddedConfig{DataDir: dir, Listen: fmt.Sprintf("127.0.0.1:%d", port)})
	if err != nil {
		t.Fatalf("starting nats: %v", err)
	}
	t.Cleanup(emb.Shutdown)
	return emb
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestNATSOutageAnswers503AndNothingIsLost(t *testing.T) {
	for _, p := range publishers {
		t.Run(p.name, func(t *testing.T) { testNATSOutage(t, p.make) })
	}
}

func testNATSOutage(t *testing.T, newPub func(*testing.T, *natsx.Conn) Publisher) {
	dir, port := t.TempDir(), freePort(t)
	emb := startNATSAt(t, dir, port)
	// Over TCP rather than in-process: the client must reconnect to the new server.
	conn, err := natsx.Connect(natsx.ConnectConfig{URL: emb.ClientURL(), Name: t.Name()}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.NC.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := natsx.NewTopology(natsx.DefaultOptions()).Ensure(ctx, conn.JS); err != nil {
		t.Fatal(err)
	}
	rc := newReceiverOn(t, Config{PublishTimeout: 300 * time.Millisecond, RetryAfter: 5 * time.Second, Ready: NATSReady(conn.NC)}, conn, newPub(t, conn))

	first := userNotification(subID, secret, userID)
	second := userNotification(subID, secret, "66666666-2222-3333-4444-555555555555")
	wantStatus(t, rc.postJSON(t, PathNotifications, collection(first)), http.StatusAccepted)

	emb.Shutdown()
	start := time.Now()
	resp := rc.postJSON(t, PathNotifications, collection(first, second))
	wantStatus(t, resp, http.StatusServiceUnavailable)
	if resp.Header.Get("Retry-After") != "5" {
		t.Errorf("Retry-After = %q", resp.Header.Get("Retry-After"))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("503 took %s, Graph wants an answer within 3s", d)
	}
	if s := rc.h.Stats(); s.PublishFailed == 0 {
		t.Errorf("stats = %+v", s)
	}
	ready, err := http.Get(rc.srv.URL + PathReady)
	if err != nil {
		t.Fatal(err)
	}
	ready.Body.Close()
	wantStatus(t, ready, http.StatusServiceUnavailable)

	startNATSAt(t, dir, port)
	deadline := time.Now().Add(10 * time.Second)
	for conn.NC.Status() != nats.CONNECTED {
		if time.Now().After(deadline) {
			t.Fatal("client did not reconnect")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Graph redelivers the whole POST; the one that had landed before collapses.
	wantStatus(t, rc.postJSON(t, PathNotifications, collection(first, second)), http.StatusAccepted)

	msgs := stored(t, conn.JS)
	if len(msgs) != 2 {
		t.Fatalf("stored %d messages, want 2", len(msgs))
	}
	ids := map[string]bool{}
	for _, m := range msgs {
		ids[m.Header.Get(nats.MsgIdHdr)] = true
	}
	if len(ids) != 2 {
		t.Errorf("stored ids = %v", ids)
	}
}

// barrierPublisher fails the test unless all n publishes of one POST are in
// flight at the same time.
type barrierPublisher struct {
	mu      sync.Mutex
	waiting int
	n       int
	all     chan struct{}
}

func (p *barrierPublisher) Publish(ctx context.Context, _, _ string, _ []byte) (bool, error) {
	p.mu.Lock()
	p.waiting++
	if p.waiting == p.n {
		close(p.all)
	}
	p.mu.Unlock()
	select {
	case <-p.all:
		return false, nil
	case <-ctx.Done():
		return false, fmt.Errorf("only %d of %d publishes in flight: %w", p.waiting, p.n, ctx.Err())
	}
}

func TestNotificationsOfAPostArePublishedConcurrently(t *testing.T) {
	const n = 10
	pub := &barrierPublisher{n: n, all: make(chan struct{})}
	h := NewHandler(Config{PublishTimeout: 2 * time.Second}, secrets, pub, zerolog.Nop())
	items := make([]string, n)
	for i := range items {
		items[i] = userNotification(subID, secret, fmt.Sprintf("user-%d", i))
	}
	req := httptest.NewRequest(http.MethodPost, PathNotifications, strings.NewReader(collection(items...)))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status = %d: %s", rec.Code, rec.Body)
	}
	if s := h.Stats(); s.Published != n {
		t.Errorf("stats = %+v", s)
	}
}

type failingPublisher struct{}

func (failingPublisher) Publish(context.Context, string, string, []byte) (bool, error) {
	return false, errors.New("nats: no responders available for request")
}

func TestPublishErrorAnswers503(t *testing.T) {
	h := NewHandler(Config{}, secrets, failingPublisher{}, zerolog.Nop())
	req := httptest.NewRequest(http.MethodPost, PathNotifications, strings.NewReader(collection(userNotification(subID, secret, userID))))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "10" {
		t.Errorf("status = %d, Retry-After = %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	if s := h.Stats(); s != (Stats{Received: 1, PublishFailed: 1}) {
		t.Errorf("stats = %+v", s)
	}
}

func TestHealthReadinessAndMethods(t *testing.T) {
	notReady := errors.New("nats connection is RECONNECTING")
	var readyErr error
	h := NewHandler(Config{Ready: func() error { return readyErr }}, secrets, failingPublisher{}, zerolog.Nop())
	do := func(method, path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		return rec
	}
	if rec := do(http.MethodGet, PathHealth); rec.Code != http.StatusOK {
		t.Errorf("healthz = %d", rec.Code)
	}
	if rec := do(http.MethodGet, PathReady); rec.Code != http.StatusOK {
		t.Errorf("readyz = %d", rec.Code)
	}
	readyErr = notReady
	if rec := do(http.MethodGet, PathReady); rec.Code != http.StatusServiceUnavailable || strings.Contains(rec.Body.String(), "RECONNECTING") {
		t.Errorf("readyz = %d %q", rec.Code, rec.Body)
	}
	if rec := do(http.MethodGet, PathNotifications); rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != http.MethodPost {
		t.Errorf("GET without token = %d", rec.Code)
	}
	if rec := do(http.MethodGet, "/other"); rec.Code != http.StatusNotFound {
		t.Errorf("unknown path = %d", rec.Code)
	}
}

type syncBuffer = logx.Buffer
