package metrics_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pwsync/pwsync/shared/metrics"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/natstest"
)

func TestGraphTransportCountsEveryExchangeAnd429s(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/throttled" {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	c := &http.Client{Transport: metrics.GraphTransport(http.DefaultTransport)}
	before429 := testutil.ToFloat64(metrics.GraphThrottled)
	beforeOK := testutil.CollectAndCount(metrics.GraphRequests)
	for _, p := range []string{"/ok", "/throttled", "/throttled"} {
		req, _ := http.NewRequest(http.MethodPatch, srv.URL+p, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if got := testutil.ToFloat64(metrics.GraphThrottled) - before429; got != 2 {
		t.Errorf("throttled: got %v, want 2", got)
	}
	if testutil.CollectAndCount(metrics.GraphRequests) < beforeOK+2 {
		t.Errorf("want series for PATCH 204 and PATCH 429")
	}
	// No answer at all is code "error".
	resp, err := c.Get("http://127.0.0.1:1/unreachable")
	if err == nil {
		resp.Body.Close()
		t.Fatal("want a transport error")
	}
	out := expose(t)
	for _, want := range []string{`pwsync_graph_request_duration_seconds_count{code="429",method="PATCH"} 2`,
		`pwsync_graph_request_duration_seconds_count{code="204",method="PATCH"} 1`,
		`pwsync_graph_request_duration_seconds_count{code="error",method="GET"} 1`} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %s", want)
		}
	}
}

// expose returns what /metrics serves.
func expose(t *testing.T) string {
	t.Helper()
	rec := httptest.NewRecorder()
	metrics.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	return rec.Body.String()
}

func TestActionLatencyOnlyForWrites(t *testing.T) {
	start := time.Now()
	metrics.Action("test_kind", "ok", start, start.Add(1500*time.Millisecond))
	metrics.Action("test_kind", "failed", start, start.Add(time.Second))   // not a write done
	metrics.Action("test_kind", "ok", time.Time{}, start.Add(time.Second)) // no start known
	metrics.Action("test_kind", "dry_run", start, start.Add(time.Second))  // no write
	if got := testutil.ToFloat64(metrics.Actions.WithLabelValues("test_kind", "ok")); got != 2 {
		t.Errorf("actions ok: %v", got)
	}
	out := expose(t)
	for _, want := range []string{`pwsync_ad_to_graph_write_seconds_count{kind="test_kind"} 1`, `pwsync_ad_to_graph_write_seconds_sum{kind="test_kind"} 1.5`} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %s in\n%s", want, out)
		}
	}
}

// TestSamplerReadsLagAndLeaseHolders against a real nats-server.
func TestSamplerReadsLagAndLeaseHolders(t *testing.T) {
	_, conn := natstest.Run(t)
	ctx := context.Background()
	for i := range 3 {
		if _, err := conn.JS.Publish(ctx, "events.ad.user", []byte(`{}`), jetstreamMsgID(i)); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := natsx.Bucket(ctx, conn.JS, natsx.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "graph-delta", []byte("host-b-42")); err != nil {
		t.Fatal(err)
	}
	metrics.LeaseHolder.WithLabelValues("gone", "old").Set(1) // a stale series is dropped
	s := metrics.Sampler{JS: conn.JS, LeasesBucket: natsx.BucketLeases}
	if err := s.Sample(ctx); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(metrics.ConsumerPending.WithLabelValues(natsx.StreamEvents, natsx.ConsumerEvaluator)); got != 3 {
		t.Errorf("evaluator num_pending: got %v, want 3", got)
	}
	if got := testutil.ToFloat64(metrics.LeaseHolder.WithLabelValues("graph-delta", "host-b-42")); got != 1 {
		t.Errorf("lease holder: got %v", got)
	}
	if n := testutil.CollectAndCount(metrics.LeaseHolder); n != 1 {
		t.Errorf("lease holder series: got %d, want 1", n)
	}
	// The exposition carries them under their Prometheus names.
	out := expose(t)
	for _, want := range []string{`pwsync_consumer_pending_messages{consumer="evaluator",stream="EVENTS"} 3`, `pwsync_lease_holder{holder="host-b-42",lease="graph-delta"} 1`, "go_goroutines"} {
		if !strings.Contains(out, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func jetstreamMsgID(i int) jetstream.PublishOpt {
	return jetstream.WithMsgID("m" + string(rune('a'+i)))
}

// TestSamplerSkipsShortLivedConsumersAndForgetsGoneOnes: ordered consumers
// (the audit reader's, the console's) and the KV watches' consumers are not
// sampled, and a durable consumer deleted since the last sample loses its
// series, as does a stream deleted since.
func TestSamplerSkipsShortLivedConsumersAndForgetsGoneOnes(t *testing.T) {
	_, conn := natstest.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := conn.JS
	if _, err := js.Publish(ctx, "events.ad.user", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	// Open a KV watch (its ordered consumer lives on KV_*) and an ordered
	// consumer on EVENTS, both alive while sampling.
	kv, err := natsx.Bucket(ctx, js, natsx.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	ordered, err := js.OrderedConsumer(ctx, natsx.StreamEvents, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ordered.Info(ctx); err != nil {
		t.Fatal(err)
	}
	// A durable consumer and a stream of their own, deleted after the first sample.
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SAMPLERTEST", Subjects: []string{"samplertest.>"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "short", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, natsx.StreamEvents, jetstream.ConsumerConfig{Durable: "retired", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}

	s := metrics.Sampler{JS: js}
	if err := s.Sample(ctx); err != nil {
		t.Fatal(err)
	}
	series := func() map[string]bool {
		out := map[string]bool{}
		for _, line := range strings.Split(expose(t), "\n") {
			if strings.HasPrefix(line, "pwsync_consumer_pending_messages{") {
				out[line[:strings.Index(line, "}")+1]] = true
			}
		}
		return out
	}
	first := series()
	for _, want := range []string{
		`pwsync_consumer_pending_messages{consumer="evaluator",stream="EVENTS"}`,
		`pwsync_consumer_pending_messages{consumer="retired",stream="EVENTS"}`,
		`pwsync_consumer_pending_messages{consumer="short",stream="SAMPLERTEST"}`,
	} {
		if !first[want] {
			t.Errorf("first sample lacks %s: %v", want, first)
		}
	}
	for s := range first {
		if strings.Contains(s, `stream="KV_`) || strings.Contains(s, `consumer="`+ordered.CachedInfo().Name+`"`) {
			t.Errorf("short-lived consumer sampled: %s", s)
		}
	}
	if err := js.DeleteConsumer(ctx, natsx.StreamEvents, "retired"); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, "SAMPLERTEST"); err != nil {
		t.Fatal(err)
	}
	if err := s.Sample(ctx); err != nil {
		t.Fatal(err)
	}
	second := series()
	for k := range first {
		gone := strings.Contains(k, `consumer="retired"`) || strings.Contains(k, `stream="SAMPLERTEST"`)
		if second[k] == gone {
			t.Errorf("after deleting: %s present=%v", k, second[k])
		}
	}
	if len(second) != len(first)-2 {
		t.Errorf("second sample: %v, want the first %v less two", second, first)
	}
	if got := testutil.ToFloat64(metrics.ConsumerPending.WithLabelValues(natsx.StreamEvents, natsx.ConsumerEvaluator)); got != 1 {
		t.Errorf("evaluator num_pending: got %v, want 1", got)
	}
}
