package notifier

import (
	"context"
	"testing"
	"time"
)

func TestGateSlidingWindow(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	g := newGate(Limit{N: 3, Window: time.Minute})
	for i := range 3 {
		if _, ok := g.try(t0); !ok {
			t.Fatalf("slot %d refused", i)
		}
	}
	// Three in flight: the window is full until answers come.
	if wait, ok := g.try(t0); ok || wait != pendingPoll {
		t.Fatalf("4th with 3 in flight: ok=%v wait=%s", ok, wait)
	}
	g.done(t0.Add(1*time.Second), true)
	g.done(t0.Add(2*time.Second), true)
	g.done(t0.Add(3*time.Second), false) // refused: not counted
	if _, ok := g.try(t0.Add(4 * time.Second)); !ok {
		t.Fatal("a slot freed by an uncounted answer")
	}
	g.done(t0.Add(5*time.Second), true)
	// Full: the oldest answer (t0+1s) leaves the window at t0+61s.
	if wait, ok := g.try(t0.Add(30 * time.Second)); ok || wait != 31*time.Second {
		t.Fatalf("full window: ok=%v wait=%s", ok, wait)
	}
	if _, ok := g.try(t0.Add(61 * time.Second)); !ok {
		t.Fatal("the oldest left the window")
	}
	g.blocked = t0.Add(100 * time.Second)
	if wait, ok := g.try(t0.Add(90 * time.Second)); ok || wait != 10*time.Second {
		t.Fatalf("blocked by Retry-After: ok=%v wait=%s", ok, wait)
	}
}

func TestGateTwoLimits(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	g := newGate(Limit{N: 2, Window: time.Second}, Limit{N: 3, Window: time.Hour})
	at := t0
	for i := range 3 {
		for {
			if _, ok := g.try(at); ok {
				break
			}
			at = at.Add(100 * time.Millisecond)
		}
		g.done(at, true)
		_ = i
	}
	if wait, ok := g.try(at.Add(10 * time.Second)); ok || wait < 50*time.Minute {
		t.Fatalf("the hourly limit must hold: ok=%v wait=%s", ok, wait)
	}
}

func TestPoolSpreadsOverSenders(t *testing.T) {
	p := newPool([]string{"a", "b", "c"}, time.Now, Limit{N: 2, Window: time.Hour})
	ctx := context.Background()
	count := map[string]int{}
	for range 6 {
		s, err := p.take(ctx, time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		count[s.Name]++
		s.Done(true)
	}
	if count["a"] != 2 || count["b"] != 2 || count["c"] != 2 {
		t.Fatalf("round robin: %v", count)
	}
	_, err := p.take(ctx, 10*time.Millisecond)
	var tl errTooLong
	if !asTooLong(err, &tl) || tl.wait < 59*time.Minute {
		t.Fatalf("all full: %v", err)
	}
	// A sender blocked by a 429 is passed over.
	p2 := newPool([]string{"a", "b"}, time.Now, Limit{N: 100, Window: time.Hour})
	s, _ := p2.take(ctx, 0)
	s.Block(time.Hour)
	s.Done(false)
	for range 3 {
		s, err := p2.take(ctx, 0)
		if err != nil || s.Name != "b" {
			t.Fatalf("blocked sender used: %v %v", s.Name, err)
		}
		s.Done(true)
	}
}

func asTooLong(err error, tl *errTooLong) bool {
	e, ok := err.(errTooLong)
	if ok {
		*tl = e
	}
	return ok
}
