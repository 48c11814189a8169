package adwatch

import (
	"context"
	"fmt"
	"os"
	"runtime/metrics"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/adtest"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natstest"
)

// BenchmarkChangeLatency measures how long a helpdesk's pwdLastSet change
// takes to reach Sink.Publish, with change notifications on and a poll
// interval (1 min) long enough that only they can explain it: p*_ms from the
// modify being sent, p*_after_ack_ms from the DC's answer to it (the change
// is committed; what is left is notification, DirSync poll, re-read).
//
//	go test -p 2 -run '^$' -bench ChangeLatency -benchtime 200x ./services/ingest/adwatch/
func BenchmarkChangeLatency(b *testing.B) {
	dc := adtest.Require(b)
	ou := dc.NewOU(b)
	u := dc.CreateUser(b, ou, "lat-user", adtest.UserOpts{})
	sink := &recSink{}
	cfg := dcConfig(dc)
	cfg.PollInterval = time.Minute
	r := start(b, cfg, sink, newMemCursors(), zerolog.Nop())
	r.waitReady(b, 60*time.Second)
	r.waitNotifying(b, 10*time.Second)
	c := dc.Conn(b)

	sent := make([]time.Duration, 0, b.N)
	acked := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		// alternate must change (0) and "password set now" (-1): each modify is a change
		mustChange := i%2 == 0
		value := "-1"
		if mustChange {
			value = "0"
		}
		from := sink.len()
		m := ldap.NewModifyRequest(u.DN, nil)
		m.Replace("pwdLastSet", []string{value})
		t0 := time.Now()
		if err := c.Modify(m); err != nil {
			b.Fatalf("modify: %v", err)
		}
		t1 := time.Now()
		p, _ := sink.waitFor(b, from, 10*time.Second, "change", func(x events.ADUser) bool {
			return x.ObjectGUID == u.GUID && x.MustChange() == mustChange
		})
		sent = append(sent, p.at.Sub(t0))
		acked = append(acked, p.at.Sub(t1))
	}
	b.StopTimer()
	report := func(lat []time.Duration, suffix string) {
		slices.Sort(lat)
		q := func(f float64) float64 { return float64(lat[int(f*float64(len(lat)-1))]) / float64(time.Millisecond) }
		b.ReportMetric(q(0.5), "p50"+suffix)
		b.ReportMetric(q(0.99), "p99"+suffix)
	}
	report(sent, "_ms")
	report(acked, "_after_ack_ms")
}

// BenchmarkFullSync measures the first run's full sync (backfill) of a domain
// with PWSYNC_BENCH_AD_USERS (default 10000) extra users, in DirSync mode
// against the whole domain, publishing into JetStream (embedded, durable
// acks) or into a counting sink. Creating the users takes a few minutes.
//
//	go test -p 2 -run '^$' -bench FullSync -benchtime 3x -timeout 60m ./services/ingest/adwatch/
func BenchmarkFullSync(b *testing.B) {
	n := 10000
	if v := os.Getenv("PWSYNC_BENCH_AD_USERS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("PWSYNC_BENCH_AD_USERS=%q: want a positive number", v)
		}
	}
	dc := adtest.Require(b)
	ou := dc.NewOU(b)
	t0 := time.Now()
	dc.CreateUsers(b, ou, "fsb", n)
	b.Logf("created %d users in %s (%.0f/s)", n, time.Since(t0), float64(n)/time.Since(t0).Seconds())

	_, conn := natstest.Run(b)
	sinks := []struct {
		name string
		sink Sink
	}{
		{"sink=count", &countSink{}},
		{"sink=jetstream", NewJetStreamSink(conn.JS)},
	}
	for _, s := range sinks {
		b.Run(fmt.Sprintf("users=%d/%s", n, s.name), func(b *testing.B) {
			peak := peakHeap(b)
			total := 0
			for range b.N {
				counter := &countSink{next: s.sink}
				r := start(b, dcConfig(dc), counter, newMemCursors(), zerolog.Nop())
				r.waitReady(b, 10*time.Minute)
				r.stop()
				if counter.n < n {
					b.Fatalf("full sync published %d users, want at least %d", counter.n, n)
				}
				total += counter.n
			}
			b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "users/s")
			b.ReportMetric(float64(peak())/(1<<20), "peak_heap_MB")
			b.ReportMetric(float64(total)/float64(b.N), "users/op")
		})
	}
}

// countSink counts published users and passes them on (if next is set).
type countSink struct {
	n    int
	next Sink
}

func (s *countSink) Publish(ctx context.Context, users []events.ADUser) error {
	s.n += len(users)
	if s.next != nil {
		return s.next.Publish(ctx, users)
	}
	return nil
}

// peakHeap samples the live heap until the benchmark ends; the returned func
// gives the highest value seen (the process's: the embedded NATS server's too).
func peakHeap(b *testing.B) func() uint64 {
	var peak atomic.Uint64
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	b.Cleanup(func() { close(done); <-stopped })
	return peak.Load
}
