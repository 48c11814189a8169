package notifier

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/testrig/natstest"
)

// TestGateSnapshotRestore: exact times for short windows, buckets for the
// day; restored times are never earlier than the real ones (a successor
// may wait longer, never shorter): later by the clock-skew margin plus at
// most the rounding; unanswered sends count at their take time + the send
// timeout (+ the margin), in flight until then.
func TestGateSnapshotRestore(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	limits := []Limit{{N: 30, Window: time.Minute}, {N: 10000, Window: 24 * time.Hour}}
	g := newGate(MailboxConcurrency, limits...)
	// 300 sends over the last 10 hours (the day window), 20 in the last minute.
	var day []time.Time
	for i := range 280 {
		day = append(day, t0.Add(-10*time.Hour).Add(time.Duration(i)*2*time.Minute+123*time.Microsecond))
	}
	for i := range 20 {
		day = append(day, t0.Add(-59*time.Second).Add(time.Duration(i)*time.Second+456*time.Microsecond))
	}
	for i, at := range day {
		g.inflight[uint64(i)] = at
		g.done(uint64(i), at, true)
	}
	g.inflight[1000] = t0.Add(-time.Second) // in flight at the snapshot
	g.blocked = t0.Add(5 * time.Second)

	st := g.snapshot(t0)
	if n := len(st.Windows[0].Times); n != 20 || st.Windows[0].Buckets != nil {
		t.Fatalf("minute window: %d exact times, buckets %v", n, st.Windows[0].Buckets)
	}
	if st.Windows[1].Times != nil || len(st.Windows[1].Buckets) > dayBuckets+1 {
		t.Fatalf("day window: %d times, %d buckets", len(st.Windows[1].Times), len(st.Windows[1].Buckets))
	}

	const sendTimeout = 30 * time.Second
	h := newGate(MailboxConcurrency, limits...)
	h.restore(st, t0, sendTimeout)
	for wi, w := range h.windows {
		real := g.windows[wi].times
		if len(w.times) != len(real)+1 {
			t.Fatalf("window %s: %d restored, want %d + 1 unanswered", w.Window, len(w.times), len(real))
		}
		q := w.Window / dayBuckets
		if wi == 0 {
			q = time.Millisecond
		}
		for i, at := range real {
			if r := w.times[i]; r.Before(at.Add(clockSkew)) || r.Sub(at.Add(clockSkew)) > q {
				t.Fatalf("window %s: send at %s restored at %s", w.Window, at, r)
			}
		}
		if last := w.times[len(w.times)-1]; !last.Equal(t0.Add(-time.Second).Add(sendTimeout + clockSkew)) {
			t.Fatalf("window %s: unanswered send counted at %s", w.Window, last)
		}
	}
	if len(h.ghosts) != 1 || !h.blocked.Equal(g.blocked.Add(clockSkew)) {
		t.Fatalf("ghosts %v, blocked %s", h.ghosts, h.blocked)
	}
	// After the block: the inherited send is in flight, so 3 more fit at
	// once; answered, they fill the minute to 24 of 30 with the ghost's
	// stamp, and 3 more in flight to 27 + 3.
	at := t0.Add(5*time.Second + clockSkew) // the block, restored with the margin
	for i := range 4 {
		if _, ok := h.try(at, uint64(i)); ok != (i < 3) {
			t.Fatalf("slot %d with the ghost in flight: ok=%v", i, ok)
		}
	}
	for i := range 3 {
		h.done(uint64(i), at, true)
	}
	for i := 3; i < 7; i++ {
		if _, ok := h.try(at, uint64(i)); ok != (i < 6) {
			t.Fatalf("slot %d: ok=%v (minute at %d + %d in flight)", i, ok, len(h.windows[0].times), len(h.inflight))
		}
	}
}

// TestPacingStateFollowsTheLease: a holder's sends are in KV; the next
// holder starts from them; the old holder is fenced off.
func TestPacingStateFollowsTheLease(t *testing.T) {
	ctx := ctxT(t)
	kv := pacingKV(t)
	limits := []Limit{{N: 3, Window: time.Minute}, {N: 5, Window: 24 * time.Hour}}
	const sendTimeout = 2 * time.Second
	newHolder := func(name string) *pool {
		p := newPool([]string{"Noreply1@contoso.com"}, time.Now, MailboxConcurrency, limits...)
		if err := p.attach(ctx, &paceStore{kv: kv, holder: name, sendTimeout: sendTimeout, log: zerolog.Nop(), revs: map[string]uint64{}}); err != nil {
			t.Fatal(err)
		}
		return p
	}

	a := newHolder("a")
	s1, err := a.take(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	s1.Done(ctx, true)
	s2, err := a.take(ctx, 0) // sent, never answered: "a" dies mid-send
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, paceKey("noreply1@contoso.com"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("KV %s = %s", e.Key(), e.Value())

	b := newHolder("b")
	s3, err := b.take(ctx, 0)
	if err != nil {
		t.Fatalf("one of three left in the minute: %v", err)
	}
	s3.Done(ctx, true)
	_, err = b.take(ctx, 0)
	var tl errTooLong
	if !errors.As(err, &tl) || tl.wait < 55*time.Second {
		t.Fatalf("the minute is full across the handover: got %v", err)
	}

	// "a" comes back to life: its answer is not written over b's state,
	// and it may not start another send.
	s2.Done(ctx, true)
	if _, err := a.take(ctx, 0); !errors.Is(err, errFenced) {
		t.Fatalf("old holder took a slot: %v", err)
	}

	// The day count follows too: "c" (a minute later, say) has 2 of 5 left.
	c := newPool([]string{"noreply1@contoso.com"}, func() time.Time { return time.Now().Add(2 * time.Minute) }, MailboxConcurrency, limits...)
	if err := c.attach(ctx, &paceStore{kv: kv, holder: "c", sendTimeout: sendTimeout, log: zerolog.Nop(), revs: map[string]uint64{}}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		sl, err := c.take(ctx, 0)
		if err != nil {
			t.Fatalf("day slot %d: %v", i, err)
		}
		sl.Done(ctx, true)
	}
	if _, err := c.take(ctx, 0); !errors.As(err, &tl) || tl.wait < 23*time.Hour {
		t.Fatalf("the day's 5 are used (a: 2, b: 1, c: 2): got %v", err)
	}
}

// TestSuccessorClockAhead: a successor whose wall clock runs ahead of the
// previous holder's (another host; or this one, adjusted) still waits for
// the window the previous holder filled: restored sends count clockSkew
// later. With the skew just under the margin, the window is still full
// where the successor's clock says it has rolled.
func TestSuccessorClockAhead(t *testing.T) {
	ctx := ctxT(t)
	kv := pacingKV(t)
	const window = 10 * time.Second
	limits := []Limit{{N: 3, Window: window}}
	t0 := time.Now()
	var aNow, bNow time.Time
	holder := func(name string, now *time.Time) *pool {
		p := newPool([]string{"noreply1@contoso.com"}, func() time.Time { return *now }, MailboxConcurrency, limits...)
		if err := p.attach(ctx, &paceStore{kv: kv, holder: name, sendTimeout: time.Second, log: zerolog.Nop(), revs: map[string]uint64{}}); err != nil {
			t.Fatal(err)
		}
		return p
	}
	aNow = t0
	a := holder("a", &aNow)
	for range 3 {
		sl, err := a.take(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		sl.Done(ctx, true) // answered at t0 by a's clock
	}
	// b's clock runs 900 ms ahead; b looks 200 ms before the
	// window rolls (real time), when its own clock says it rolled 700 ms ago.
	skew := 900 * time.Millisecond // under the margin (clockSkew, 1 s)
	bNow = t0.Add(window - 200*time.Millisecond + skew)
	b := holder("b", &bNow)
	var tl errTooLong
	if _, err := b.take(ctx, 0); !errors.As(err, &tl) {
		t.Fatalf("a successor %s ahead sent into the window a filled: %v", skew, err)
	}
	// Once the window has rolled by b's clock plus the margin, b sends.
	bNow = t0.Add(window + clockSkew + 10*time.Millisecond)
	if _, err := b.take(ctx, 0); err != nil {
		t.Fatalf("after the window and the margin: %v", err)
	}
}

// pacingKV is the pacing bucket on a fresh embedded server.
func pacingKV(t *testing.T) jetstream.KeyValue {
	t.Helper()
	_, conn := natstest.Run(t)
	kv, err := conn.JS.CreateOrUpdateKeyValue(ctxT(t), jetstream.KeyValueConfig{Bucket: BucketPacing, History: 1, TTL: pacingTTL})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}
