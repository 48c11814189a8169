package webhook

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/benchreport"
	"github.com/pwsync/pwsync/testrig/natstest"
)

// The webhook and the bare JetStream loop run the same shapes: senders
// concurrent clients, each POST (or batch) carrying batch notifications.
// Results and commands are in BENCHMARK.md.
var benchShapes = []struct{ senders, batch int }{
	{16, 1}, {64, 1}, {16, 10}, {64, 10},
}

func shapeName(senders, batch int) string { return fmt.Sprintf("batch=%d/senders=%d", batch, senders) }

// BenchmarkWebhookIngest measures notifications durably acknowledged through
// the real handler: net/http on loopback, HTTP/1.1 keep-alive clients, the
// embedded JetStream with file storage. One op is one POST. publisher=async
// is the production path, publisher=natsx a plain Publisher for comparison.
// Reported by TestThroughputReport (the same operations, alternating rounds).
func BenchmarkWebhookIngest(b *testing.B) {
	for _, pub := range []string{"async", "natsx"} {
		for _, s := range benchShapes {
			b.Run("publisher="+pub+"/"+shapeName(s.senders, s.batch), func(b *testing.B) {
				_, conn := natstest.Run(b)
				op := webhookOp(b, conn, pub, s.senders, s.batch)
				benchmark(b, s.senders, s.batch, op)
			})
		}
	}
}

// BenchmarkHTTPFloor is net/http alone with the same clients and bodies: a
// handler that reads the body and answers 202. The webhook cannot be faster.
// Reported by TestThroughputReport (the same operations, alternating rounds).
func BenchmarkHTTPFloor(b *testing.B) {
	for _, s := range benchShapes {
		b.Run(shapeName(s.senders, s.batch), func(b *testing.B) {
			benchmark(b, s.senders, s.batch, postOp(b, floorHandler, s.senders, s.batch))
		})
	}
}

// BenchmarkBareJetStreamPublish is the ceiling: the same envelopes published
// straight to JetStream with a Nats-Msg-Id; one op is one batch (see bareOp).
// Reported by TestThroughputReport (the same operations, alternating rounds).
func BenchmarkBareJetStreamPublish(b *testing.B) {
	for _, s := range benchShapes {
		b.Run(shapeName(s.senders, s.batch), func(b *testing.B) {
			_, conn := natstest.Run(b)
			benchmark(b, s.senders, s.batch, bareOp(b, conn, s.batch))
		})
	}
}

// TestThroughputReport runs the webhook and the bare loop alternately, round
// after round, on one server per shape, and prints medians and the paired
// ratio. Alternating keeps other load on the machine from favouring either
// side. Run with PWSYNC_BENCH_REPORT=1 (see BENCHMARK.md).
// Targets (design.md §7): >= 10,000 notifications/s and >= 50% of the bare
// JetStream loop in the same run; p99 <= 50 ms.
//
// benchreport: PWSYNC_BENCH_REPORT=1 PWSYNC_BENCH_ROUNDS=3 -run ^TestThroughputReport$
func TestThroughputReport(t *testing.T) {
	if os.Getenv("PWSYNC_BENCH_REPORT") == "" {
		t.Skip("set PWSYNC_BENCH_REPORT=1 to run the throughput report")
	}
	rounds, per := 5, 3*time.Second
	if v, err := strconv.Atoi(os.Getenv("PWSYNC_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	if d, err := time.ParseDuration(os.Getenv("PWSYNC_BENCH_DURATION")); err == nil && d > 0 {
		per = d
	}
	var report strings.Builder
	fmt.Fprintf(&report, "\n%d rounds x %s per side, medians\n", rounds, per)
	// bound is what a handler costing nothing would reach: one process pays
	// for net/http (the floor) and for JetStream (the bare loop) per
	// notification, so 1/bound = 1/floor + 1/bare.
	fmt.Fprintf(&report, "| shape | webhook notif/s | p50 ms | p99 ms | bare JetStream notif/s | bare p50 ms | bare p99 ms | webhook/bare | net/http floor notif/s | zero-cost-handler bound notif/s | webhook/bound |\n")
	fmt.Fprintf(&report, "|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range benchShapes {
		// Each measurement gets a fresh server, so that neither side runs
		// against the other's stream and dedup state.
		sides := map[string]func(t *testing.T, conn *natsx.Conn) func() error{
			"webhook": func(t *testing.T, conn *natsx.Conn) func() error {
				return webhookOp(t, conn, "async", s.senders, s.batch)
			},
			"bare":  func(t *testing.T, conn *natsx.Conn) func() error { return bareOp(t, conn, s.batch) },
			"floor": func(t *testing.T, _ *natsx.Conn) func() error { return postOp(t, floorHandler, s.senders, s.batch) },
		}
		got := map[string][]result{}
		var ratios, bounds, boundRatios []float64
		for r := range rounds {
			order := []string{"webhook", "bare", "floor"}
			if r%2 == 1 {
				order = []string{"floor", "bare", "webhook"}
			}
			for _, side := range order {
				ok := t.Run(fmt.Sprintf("%s/%s/round=%d", side, shapeName(s.senders, s.batch), r), func(t *testing.T) {
					_, conn := natstest.Run(t)
					var res result
					var err error
					op := sides[side](t, conn)
					for _, d := range []time.Duration{per / 5, per} { // warm up (connections, stacks, heap), then measure
						deadline := time.Now().Add(d)
						res, err = drive(s.senders, s.batch, func(int64) bool { return time.Now().Before(deadline) }, op)
						if err != nil {
							t.Fatal(err)
						}
					}
					got[side] = append(got[side], res)
				})
				if !ok {
					t.FailNow()
				}
			}
			ratios = append(ratios, got["webhook"][r].rate/got["bare"][r].rate)
			bound := 1 / (1/got["floor"][r].rate + 1/got["bare"][r].rate)
			bounds, boundRatios = append(bounds, bound), append(boundRatios, got["webhook"][r].rate/bound)
		}
		w, b, f := summarize(got["webhook"]), summarize(got["bare"]), summarize(got["floor"])
		slug := fmt.Sprintf("%dx%d", s.batch, s.senders)
		benchreport.Emit(benchreport.Figure{Name: "webhook_" + slug + "_notif_per_s", Unit: "notif/s", Better: "higher",
			Desc:  fmt.Sprintf("webhook ingest, %d notification(s) per POST, %d senders", s.batch, s.senders),
			Value: w.rate, Baseline: b.rate, BaselineName: "bare JetStream publish loop, same shape", Target: ">= 10000 and >= 0.5x baseline"})
		benchreport.Emit(benchreport.Figure{Name: "webhook_" + slug + "_p99", Unit: "ms", Better: "lower",
			Desc:  fmt.Sprintf("webhook ingest p99, %d per POST, %d senders (median of %d rounds)", s.batch, s.senders, rounds),
			Value: w.p99, Baseline: b.p99, BaselineName: "bare JetStream publish p99", Target: "<= 50"})
		fmt.Fprintf(&report, "| %s | %.0f | %.2f | %.2f | %.0f | %.2f | %.2f | %.0f%% | %.0f | %.0f | %.0f%% |\n",
			shapeName(s.senders, s.batch), w.rate, w.p50, w.p99, b.rate, b.p50, b.p99, 100*median(ratios),
			f.rate, median(bounds), 100*median(boundRatios))
	}
	t.Log(report.String())
}

// webhookOp starts the handler behind a loopback HTTP server and returns one
// POST of batch fresh notifications.
func webhookOp(tb testing.TB, conn *natsx.Conn, publisher string, senders, batch int) func() error {
	var pub Publisher = natsx.NewPublisher(conn.JS)
	if publisher == "async" {
		pub = asyncPublisher(tb, conn)
	}
	h := NewHandler(Config{}, secrets, pub, zerolog.New(io.Discard).Level(zerolog.InfoLevel))
	return postOp(tb, h, senders, batch)
}

// floorHandler reads the body and answers 202: what net/http alone costs.
var floorHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.WriteHeader(http.StatusAccepted)
})

// postOp serves h on loopback and returns one POST of batch fresh
// notifications from a keep-alive client pool of senders connections.
func postOp(tb testing.TB, h http.Handler, senders, batch int) func() error {
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: senders, MaxConnsPerHost: senders}}
	tb.Cleanup(client.CloseIdleConnections)
	url := srv.URL + PathNotifications

	var seq atomic.Uint64
	bufs := sync.Pool{New: func() any { return new(bytes.Buffer) }}
	return func() error {
		body := bufs.Get().(*bytes.Buffer)
		defer bufs.Put(body)
		body.Reset()
		body.Write(benchCollection(body.AvailableBuffer(), &seq, batch))
		resp, err := client.Post(url, "application/json", bytes.NewReader(body.Bytes()))
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
}

// bareOp publishes batch copies of a real envelope under fresh IDs: one
// sync-acked Publish for batch=1, else PublishAsync of the whole batch and a
// wait for every ack, the same pattern as the handler's.
func bareOp(tb testing.TB, conn *natsx.Conn, batch int) func() error {
	js := conn.JS
	var seq atomic.Uint64
	ns, err := ParseNotifications(benchCollection(nil, &seq, 1))
	if err != nil {
		tb.Fatal(err)
	}
	m, err := NewHandler(Config{}, secrets, nil, zerolog.Nop()).encode(ns[0], time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	return func() error {
		if batch == 1 {
			_, err := js.Publish(ctx, m.Subject, m.Data, jetstream.WithMsgID("bench."+strconv.FormatUint(seq.Add(1), 10)))
			return err
		}
		futures := make([]jetstream.PubAckFuture, batch)
		for i := range futures {
			f, err := js.PublishAsync(m.Subject, m.Data, jetstream.WithMsgID("bench."+strconv.FormatUint(seq.Add(1), 10)))
			if err != nil {
				return err
			}
			futures[i] = f
		}
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return err
			}
		}
		return nil
	}
}

// benchmark drives b.N ops and reports notifications/s and latency percentiles.
func benchmark(b *testing.B, senders, batch int, op func() error) {
	b.ReportAllocs()
	b.ResetTimer()
	res, err := drive(senders, batch, func(i int64) bool { return i <= int64(b.N) }, op)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(res.rate, "notif/s")
	b.ReportMetric(res.p50, "p50_ms")
	b.ReportMetric(res.p99, "p99_ms")
}

type result struct{ rate, p50, p99 float64 }

// drive runs op from senders goroutines while more(n) says so (n counts ops
// started) and measures each op.
func drive(senders, batch int, more func(n int64) bool, op func() error) (result, error) {
	var next atomic.Int64
	lat := make([][]time.Duration, senders)
	errs := make(chan error, senders)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range senders {
		wg.Go(func() {
			for more(next.Add(1)) {
				t0 := time.Now()
				if err := op(); err != nil {
					errs <- err
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return result{}, err
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))]) / float64(time.Millisecond) }
	return result{rate: float64(len(all)*batch) / elapsed.Seconds(), p50: pct(0.50), p99: pct(0.99)}, nil
}

func summarize(rs []result) result {
	var rate, p50, p99 []float64
	for _, r := range rs {
		rate, p50, p99 = append(rate, r.rate), append(p50, r.p50), append(p99, r.p99)
	}
	return result{rate: median(rate), p50: median(p50), p99: median(p99)}
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	return s[len(s)/2]
}

// benchCollection appends a POST body of n realistic user notifications, each
// for a different user so that none is a duplicate.
func benchCollection(dst []byte, seq *atomic.Uint64, n int) []byte {
	dst = append(dst, `{"value":[`...)
	for i := range n {
		if i > 0 {
			dst = append(dst, ',')
		}
		user := fmt.Appendf(nil, "00000000-0000-4000-8000-%012d", seq.Add(1))
		dst = append(dst, `{"changeType":"updated","clientState":"`+secret+`","resource":"Users/`...)
		dst = append(dst, user...)
		dst = append(dst, `","resourceData":{"@odata.type":"#Microsoft.Graph.User","@odata.id":"Users/`...)
		dst = append(dst, user...)
		dst = append(dst, `","id":"`...)
		dst = append(dst, user...)
		dst = append(dst, `","organizationId":"`+tenant+`"},"subscriptionExpirationDateTime":"`+expires+
			`","subscriptionId":"`+subID+`","tenantId":"`+tenant+`"}`...)
	}
	return append(dst, `]}`...)
}
