package budget

import (
	"context"
	"testing"
	"time"
)

// clock is a fake clock the tests move by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTest(c Config) (*Scheduler, *clock) {
	s := New(c)
	clk := &clock{t: time.Unix(1000, 0)}
	s.now = clk.now
	return s, clk
}

// unsmoothed fills the lower priorities' bucket beyond any need, for tests
// of the other rules.
func unsmoothed(s *Scheduler) *Scheduler {
	s.fill(s.now())
	s.tokens = 1e9
	return s
}

func blocked(t *testing.T, s *Scheduler, p Priority) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if n, err := s.Acquire(ctx, p, 1); err == nil {
		t.Fatalf("%s acquired %d slot(s), want it to wait", p, n)
	}
}

// The window is respected exactly, 429s hold no slot, Graph's usage header
// holds slots for other writers (what campaign.Pacer did, on one priority).
func TestWindowAndUsage(t *testing.T) {
	s, clk := newTest(Config{Limit: 10, Window: 10 * time.Second})
	ctx := context.Background()
	if n, _ := s.Acquire(ctx, Live, 20); n != 10 {
		t.Fatalf("first acquire got %d, want the whole budget 10", n)
	}
	s.Done(10, 10)
	blocked(t, s, Campaign)
	blocked(t, s, Live)
	clk.t = clk.t.Add(10*time.Second + time.Millisecond)
	if n, _ := s.Acquire(ctx, Live, 4); n != 4 {
		t.Fatalf("after the window: got %d, want 4", n)
	}
	s.Done(4, 2) // two were 429s: they hold no slot
	if n, _ := s.Acquire(ctx, Live, 20); n != 8 {
		t.Fatalf("got %d, want 8", n)
	}
	s.Done(8, 0)
	s.Usage(0.9) // Graph says 9 of 10 are used, we account for 2
	if n, _ := s.Acquire(ctx, Live, 20); n != 1 {
		t.Fatalf("with others' use: got %d, want 1", n)
	}
	s.Done(1, 0)
	u := New(Config{})
	if n, err := u.Acquire(ctx, Campaign, 20); n != 20 || err != nil {
		t.Fatalf("unlimited: %d, %v", n, err)
	}
	u.Throttled(Campaign, time.Hour)
	if n, _ := u.Acquire(ctx, Campaign, 5); n != 5 {
		t.Fatal("unlimited scheduler paused")
	}
	o, _ := newTest(Config{Limit: 10, Window: time.Hour})
	o.Usage(1.8) // Graph over its limit: no more than full
	if len(o.used) != 10 {
		t.Fatalf("%d slots held for others, want 10", len(o.used))
	}
}

// The reserve: campaign work never takes the last Reserve slots, expiry
// enforcement not the last half of them, live work takes them all; the
// campaign share caps campaign work alone.
func TestReserveAndShare(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		p     Priority
		wantN int
	}{
		{"campaign leaves the reserve", Config{Limit: 100, Window: time.Minute, Reserve: 4}, Campaign, 96},
		{"expiry leaves half of it", Config{Limit: 100, Window: time.Minute, Reserve: 4}, Expiry, 98},
		{"live takes it all", Config{Limit: 100, Window: time.Minute, Reserve: 4}, Live, 100},
		{"campaign share", Config{Limit: 100, Window: time.Minute, Reserve: 4, CampaignShare: 0.5}, Campaign, 46},
		{"share is the campaign's only", Config{Limit: 100, Window: time.Minute, Reserve: 4, CampaignShare: 0.5}, Live, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newTest(tt.cfg)
			unsmoothed(s)
			if n, _ := s.Acquire(context.Background(), tt.p, 1000); n != tt.wantN {
				t.Fatalf("took %d, want %d", n, tt.wantN)
			}
		})
	}
	if DefaultReserve(3000) != 60 || DefaultReserve(300) != 6 || DefaultReserve(10) != 4 || DefaultReserve(0) != 0 {
		t.Fatal("DefaultReserve: 2%, at least 4, at most half")
	}
}

// A saturating campaign does not starve live work: with the budget full, a
// waiting live write takes the next slot that frees, ahead of campaign and
// expiry writes that waited longer; the lower ones go in priority order.
func TestPriorityOrder(t *testing.T) {
	s := unsmoothed(New(Config{Limit: 4, Window: time.Hour}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if n, _ := s.Acquire(ctx, Live, 4); n != 4 {
		t.Fatalf("took %d", n)
	}
	order := make(chan Priority, 3)
	start := func(p Priority) {
		go func() {
			if _, err := s.Acquire(ctx, p, 1); err == nil {
				order <- p
			}
		}()
	}
	waitFor := func(p Priority) {
		for {
			s.mu.Lock()
			w := s.waiting[p]
			s.mu.Unlock()
			if w > 0 {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	start(Campaign)
	waitFor(Campaign)
	start(Expiry)
	waitFor(Expiry)
	start(Live)
	waitFor(Live)
	for _, want := range []Priority{Live, Expiry, Campaign} {
		s.Done(1, 0) // one slot frees (an answer that did not count)
		select {
		case got := <-order:
			if got != want {
				t.Fatalf("slot went to %s, want %s", got, want)
			}
		case <-ctx.Done():
			t.Fatalf("no one took the slot, want %s", want)
		}
	}
}

// Lower priorities are smoothed to the budget's rate, a batch at a time
// (at most 20 or a tenth of the budget); live work is not.
func TestSmoothing(t *testing.T) {
	s, clk := newTest(Config{Limit: 300, Window: 15 * time.Second}) // 20 writes/s
	ctx := context.Background()
	if n, _ := s.Acquire(ctx, Campaign, 100); n != 20 {
		t.Fatalf("campaign took %d at once, want one batch of 20", n)
	}
	blocked(t, s, Campaign)
	blocked(t, s, Expiry)
	if n, _ := s.Acquire(ctx, Live, 50); n != 50 {
		t.Fatalf("live took %d, want 50: not smoothed", n)
	}
	clk.t = clk.t.Add(500 * time.Millisecond) // 10 tokens: half a batch
	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if n, err := s.Acquire(short, Campaign, 20); err == nil {
		t.Fatalf("a batch of 20 went with half a batch of tokens (%d)", n)
	}
	if n, _ := s.Acquire(ctx, Campaign, 5); n != 5 {
		t.Fatalf("a 5-item batch: took %d, want 5", n)
	}
	clk.t = clk.t.Add(time.Second)
	if n, _ := s.Acquire(ctx, Campaign, 100); n != 20 {
		t.Fatalf("after a second: took %d, want 20 (the bucket holds one batch)", n)
	}
}

// A 429 pauses every priority below live until Retry-After; live writes go
// on, unless the 429 was a live write's own.
func TestThrottlePausesLowerPriorities(t *testing.T) {
	s, clk := newTest(Config{Limit: 100, Window: time.Minute, Reserve: 4})
	unsmoothed(s)
	ctx := context.Background()
	s.Throttled(Campaign, 5*time.Second)
	blocked(t, s, Campaign)
	blocked(t, s, Expiry)
	if n, err := s.Acquire(ctx, Live, 1); n != 1 || err != nil {
		t.Fatalf("live paused by a campaign's 429: %d, %v", n, err)
	}
	s.Done(1, 1)
	s.Throttled(Live, 2*time.Second)
	blocked(t, s, Live)
	clk.t = clk.t.Add(5*time.Second + time.Millisecond)
	for _, p := range []Priority{Live, Expiry, Campaign} {
		if n, err := s.Acquire(ctx, p, 1); n != 1 || err != nil {
			t.Fatalf("%s after Retry-After: %d, %v", p, n, err)
		}
	}
	if s.Throttles(Campaign) != 1 || s.Throttles(Live) != 1 || s.Throttles(Expiry) != 0 {
		t.Fatalf("throttles: campaign %d live %d expiry %d", s.Throttles(Campaign), s.Throttles(Live), s.Throttles(Expiry))
	}
	// the share used fell (other writers on the app); two 429s within a
	// second count once: 90 of 100 now
	if got := s.capacity(Live); got != 90 {
		t.Fatalf("capacity after the 429s = %d, want 90", got)
	}
}

// A campaign's AD writes mark their users for an hour; with an actuator
// holding follow-ups, the AD lane waits while the limit is outstanding and
// goes on when one is settled.
func TestOwnWrites(t *testing.T) {
	s, clk := newTest(Config{Limit: 100, Window: time.Minute})
	ctx := context.Background()
	if err := s.MarkOwn(ctx, "g1"); err != nil {
		t.Fatal(err)
	}
	if !s.OwnWrite("g1") || s.OwnWrite("g2") || s.OwnWrite("") {
		t.Fatal("OwnWrite: g1 marked, g2 and empty not")
	}
	clk.t = clk.t.Add(ownTTL + time.Second)
	if s.OwnWrite("g1") {
		t.Fatal("the mark outlived an hour")
	}
	s.HoldFollowUps(2)
	for _, g := range []string{"a", "b"} {
		if err := s.MarkOwn(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if err := s.MarkOwn(short, "c"); err == nil {
		t.Fatal("a third follow-up went out with two outstanding")
	}
	done := make(chan error, 1)
	go func() { done <- s.MarkOwn(ctx, "c") }()
	s.Settled("a")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("settling a follow-up did not let the AD lane go on")
	}
	clk.t = clk.t.Add(followUpWait + time.Second)
	short2, cancel2 := context.WithTimeout(ctx, time.Second)
	defer cancel2()
	if err := s.MarkOwn(short2, "d"); err != nil {
		t.Fatalf("unsettled follow-ups past the wait still held the lane: %v", err)
	}
}
