// Package webhook receives Microsoft Graph change notifications and lifecycle
// notifications, authenticates each one by its clientState and publishes it to
// JetStream with a stable ID. It answers Graph only after JetStream has stored
// everything it accepted, so a 2xx means "persisted" and a 5xx makes Graph
// redeliver.
//
// Wiring, in the ingest command:
//
//	pub, err := webhook.NewAsyncPublisher(conn.NC, 2*time.Second)
//	h := webhook.NewHandler(webhook.Config{Ready: webhook.NATSReady(conn.NC)}, subscriptions, pub, log)
//	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second}
package webhook

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/metrics"
)

// Routes served by the Handler. Graph may be given the same URL for both
// kinds of notification, so each route accepts both and routes them by
// content.
const (
	PathNotifications = "/graph/notifications"
	PathLifecycle     = "/graph/lifecycle"
	PathHealth        = "/healthz"
	PathReady         = "/readyz"
)

// SecretLookup gives the clientState a subscription was created with. The
// subscription manager implements it.
type SecretLookup interface {
	ClientState(subscriptionID string) (secret string, ok bool)
}

// StaticSecrets is a fixed subscriptionId -> clientState map.
type StaticSecrets map[string]string

// ClientState implements SecretLookup.
func (s StaticSecrets) ClientState(subscriptionID string) (string, bool) {
	secret, ok := s[subscriptionID]
	return secret, ok
}

// Config tunes the Handler. Zero values take the defaults.
type Config struct {
	// MaxBody bounds a notification POST body (default 1 MiB): Graph batches
	// are far smaller.
	MaxBody int64
	// PublishTimeout bounds the wait for JetStream's acks (default 2 s), so
	// that Graph gets its answer within its 3 s budget even when NATS hangs.
	PublishTimeout time.Duration
	// RetryAfter is sent with a 503 (default 10 s).
	RetryAfter time.Duration
	// DedupWindow is the arrival-time window of notifications that carry no
	// change marker (default 1 min; negative: content only); see EventID.
	DedupWindow time.Duration
	// Ready reports readiness for /readyz (e.g. the NATS connection's
	// state); nil means always ready.
	Ready func() error
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.MaxBody <= 0 {
		c.MaxBody = 1 << 20
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = 2 * time.Second
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = 10 * time.Second
	}
	if c.DedupWindow == 0 {
		c.DedupWindow = time.Minute
	}
	if c.Ready == nil {
		c.Ready = func() error { return nil }
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Stats counts what the Handler did since it was created. Received,
// Published, Duplicates, RejectedClientState and PublishFailed count
// notifications; Malformed counts requests whose body was refused as a whole.
type Stats struct {
	Received            uint64 `json:"received"`
	Published           uint64 `json:"published"`
	Duplicates          uint64 `json:"duplicates"`
	RejectedClientState uint64 `json:"rejected_client_state"`
	Malformed           uint64 `json:"malformed"`
	PublishFailed       uint64 `json:"publish_failed"`
}

type counters struct {
	received, published, duplicates, rejected, malformed, publishFailed atomic.Uint64
}

// Handler is the http.Handler of the Graph webhook receiver.
type Handler struct {
	cfg     Config
	secrets SecretLookup
	pub     Publisher
	log     zerolog.Logger
	http    http.Handler
	stats   counters
	bufs    sync.Pool // *bytes.Buffer for request bodies
}

// NewHandler returns the receiver. Serve it from an http.Server with
// ReadHeaderTimeout and ReadTimeout set: Graph's requests are small and fast.
func NewHandler(cfg Config, secrets SecretLookup, pub Publisher, log zerolog.Logger) *Handler {
	h := &Handler{cfg: cfg.withDefaults(), secrets: secrets, pub: pub, log: log}
	h.bufs.New = func() any { return new(bytes.Buffer) }
	mux := http.NewServeMux()
	mux.HandleFunc(PathNotifications, h.serveNotifications)
	mux.HandleFunc(PathLifecycle, h.serveNotifications)
	mux.HandleFunc("GET "+PathHealth, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET "+PathReady, h.serveReady)
	h.http = mux
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.http.ServeHTTP(w, r) }

// Stats returns a snapshot of the counters.
func (h *Handler) Stats() Stats {
	return Stats{
		Received:            h.stats.received.Load(),
		Published:           h.stats.published.Load(),
		Duplicates:          h.stats.duplicates.Load(),
		RejectedClientState: h.stats.rejected.Load(),
		Malformed:           h.stats.malformed.Load(),
		PublishFailed:       h.stats.publishFailed.Load(),
	}
}

func (h *Handler) serveReady(w http.ResponseWriter, r *http.Request) {
	if err := h.cfg.Ready(); err != nil {
		h.log.Debug().Err(err).Msg("not ready")
		http.Error(w, "not ready", http.StatusServiceUnavailable) // the reason stays in the log
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

func (h *Handler) serveNotifications(w http.ResponseWriter, r *http.Request) {
	// Graph validates an endpoint with a POST carrying ?validationToken=;
	// real notifications never have it. GET is answered too, for people
	// checking the endpoint by hand.
	if r.URL.RawQuery != "" {
		if q := r.URL.Query(); q.Has("validationToken") {
			writeToken(w, q.Get("validationToken"))
			return
		}
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h.ingest(w, r)
}

// writeToken answers the validation handshake: 200, text/plain, the decoded
// token (r.URL.Query already decoded it). nosniff keeps a browser from
// rendering a crafted token as HTML.
func writeToken(w http.ResponseWriter, token string) {
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, token)
}

// ingest handles one notification POST.
//
// Notifications that fail authentication (unknown subscription, clientState
// mismatch) are dropped, counted and logged, and the POST is still answered
// 202 when everything else was stored. Graph redelivers any non-2xx answer for
// up to 4 hours, and a wrong secret does not fix itself by retrying: an error
// answer would only keep the request coming, count against the endpoint in
// Graph's slow/drop throttling that the valid subscriptions on the same URL
// share, and tell a forger which of his guesses was wrong. A genuinely
// misconfigured subscription shows up in the warning log and in
// Stats.RejectedClientState; the changes it carried are recovered by the
// scheduled delta poll.
func (h *Handler) ingest(w http.ResponseWriter, r *http.Request) {
	if !isJSON(r.Header.Get("Content-Type")) {
		h.refuse(w, r, http.StatusUnsupportedMediaType, errors.New("content type is not application/json"))
		return
	}
	buf := h.bufs.Get().(*bytes.Buffer)
	defer h.putBuf(buf)
	if err := h.readBody(w, r, buf); err != nil {
		status := http.StatusBadRequest
		if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
			status = http.StatusRequestEntityTooLarge
		}
		h.refuse(w, r, status, err)
		return
	}
	ns, err := ParseNotifications(buf.Bytes())
	if err != nil {
		h.refuse(w, r, http.StatusBadRequest, err)
		return
	}
	h.stats.received.Add(uint64(len(ns)))

	received := h.cfg.Now()
	msgs := make([]Message, 0, len(ns))
	rejected, firstReason, firstSub := 0, "", ""
	for _, n := range ns {
		if reason := h.authenticate(n); reason != "" {
			if rejected == 0 {
				firstReason, firstSub = reason, n.SubscriptionID
			}
			rejected++
			continue
		}
		m, err := h.encode(n, received)
		if err != nil { // cannot happen with parsed input; refuse rather than drop silently
			h.refuse(w, r, http.StatusBadRequest, err)
			return
		}
		msgs = append(msgs, m)
	}
	if rejected > 0 {
		// One line per POST, not per notification: a forged batch must not
		// flood the log.
		h.stats.rejected.Add(uint64(rejected))
		withRequest(h.log.Warn(), r).Int("rejected", rejected).Int("notifications", len(ns)).
			Str("reason", firstReason).Str("subscription_id", firstSub).
			Msg("graph notifications rejected: unknown subscription or wrong clientState")
	}
	if len(msgs) == 0 {
		w.WriteHeader(http.StatusAccepted)
		return
	}

	failed, err := h.publishAll(r.Context(), msgs)
	if err != nil {
		h.stats.publishFailed.Add(uint64(failed))
		withRequest(h.log.Error(), r).Err(err).Int("failed", failed).Int("notifications", len(msgs)).
			Msg("publishing graph notifications failed; asking graph to redeliver")
		w.Header().Set("Retry-After", strconv.Itoa(int(h.cfg.RetryAfter.Round(time.Second)/time.Second)))
		http.Error(w, "try again", http.StatusServiceUnavailable)
		return
	}
	withRequest(h.log.Debug(), r).Int("notifications", len(msgs)).Msg("graph notifications stored")
	w.WriteHeader(http.StatusAccepted)
}

// withRequest adds the request's fields to a log event. Events of a disabled
// level cost nothing, so the hot path does not pay for a per-request logger.
func withRequest(e *zerolog.Event, r *http.Request) *zerolog.Event {
	return e.Str("path", r.URL.Path).Str("remote_addr", r.RemoteAddr)
}

// refuse answers a request whose body is refused as a whole.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, status int, err error) {
	h.stats.malformed.Add(1)
	withRequest(h.log.Warn(), r).Err(err).Int("status", status).Msg("graph notification request refused")
	http.Error(w, http.StatusText(status), status)
}

func (h *Handler) readBody(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer) error {
	if r.ContentLength > h.cfg.MaxBody {
		return &http.MaxBytesError{Limit: h.cfg.MaxBody}
	}
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + bytes.MinRead) // one allocation at most, none once pooled
	}
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, h.cfg.MaxBody)); err != nil {
		return fmt.Errorf("reading body: %w", err)
	}
	return nil
}

// putBuf pools a body buffer unless it grew big: one large request must not
// pin its buffer for good.
func (h *Handler) putBuf(buf *bytes.Buffer) {
	if buf.Cap() > 64<<10 {
		return
	}
	buf.Reset()
	h.bufs.Put(buf)
}

// authenticate compares n's clientState with its subscription's secret and
// returns why it is refused, or "".
func (h *Handler) authenticate(n events.GraphNotification) string {
	secret, ok := h.secrets.ClientState(n.SubscriptionID)
	if !ok || secret == "" { // an empty secret would let an empty clientState in
		return "unknown_subscription"
	}
	// Hashing first makes the constant-time comparison independent of the
	// lengths too, so a forger does not learn the secret's length.
	got, want := sha256.Sum256([]byte(n.ClientState)), sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return "client_state_mismatch"
	}
	return ""
}

// encode wraps an authenticated notification in an envelope, without its
// clientState.
func (h *Handler) encode(n events.GraphNotification, received time.Time) (Message, error) {
	n.ClientState = ""
	typ := events.TypeGraphNotification
	if n.IsLifecycle() {
		typ = events.TypeGraphLifecycle
	}
	data, err := json.Marshal(n)
	if err != nil {
		return Message{}, fmt.Errorf("encoding notification of subscription %s: %w", n.SubscriptionID, err)
	}
	id := EventID(n, data, received, h.cfg.DedupWindow)
	env := events.Envelope{ID: id, Source: events.SourceGraph, Type: typ, Time: received.UTC()}
	return Message{Subject: env.Subject(), ID: id, Data: appendEnvelope(make([]byte, 0, len(data)+160), env, data)}, nil
}

// appendEnvelope appends env with data as its Data, byte for byte what
// json.Marshal(env) gives. json.Marshal would validate and compact data again,
// which json.Marshal just produced: that was a tenth of a POST's CPU time.
// env's strings need no escaping: the ID is KeySafe, the rest are constants.
func appendEnvelope(dst []byte, env events.Envelope, data []byte) []byte {
	dst = append(dst, `{"id":"`...)
	dst = append(dst, env.ID...)
	dst = append(dst, `","source":"`...)
	dst = append(dst, env.Source...)
	dst = append(dst, `","type":"`...)
	dst = append(dst, env.Type...)
	dst = append(dst, `","time":"`...)
	dst = env.Time.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","data":`...)
	dst = append(dst, data...)
	return append(dst, '}')
}

// publishAll publishes msgs, all in flight at once, and waits for every ack
// or the publish timeout. It returns how many failed and the first error.
func (h *Handler) publishAll(ctx context.Context, msgs []Message) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	defer cancel()
	var results []Result
	if bp, ok := h.pub.(BatchPublisher); ok {
		results = bp.PublishBatch(ctx, msgs)
	} else {
		results = publishConcurrently(ctx, h.pub, msgs)
	}
	failed, first := 0, error(nil)
	for _, r := range results {
		switch {
		case r.Err != nil:
			failed++
			if first == nil {
				first = r.Err
			}
		case r.Duplicate:
			h.stats.duplicates.Add(1)
		default:
			h.stats.published.Add(1)
			metrics.Ingested("webhook", 1)
		}
	}
	return failed, first
}

// isJSON reports whether a Content-Type header is application/json. The
// parameters (charset=utf-8 from Graph) are ignored: JSON is UTF-8 anyway.
func isJSON(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/json")
}
