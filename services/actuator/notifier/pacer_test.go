package notifier

import (
	"context"
	"testing"
	"time"
)

func TestGateSlidingWindow(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	g := newGate(0, Limit{N: 3, Window: time.Minute})
	for i := range 3 {
		if _, ok := g.try(t0, uint64(i)); !ok {
			t.Fatalf("slot %d refused", i)
		}
	}
	// Three in flight: the window is full until answers come.
	if wait, ok := g.try(t0, 9); ok || wait != pendingPoll {
		t.Fatalf("4th with 3 in flight: ok=%v wait=%s", ok, wait)
	}
	g.done(0, t0.Add(1*time.Second), true)
	g.done(1, t0.Add(2*time.Second), true)
	g.done(2, t0.Add(3*time.Second), false) // refused: not counted
	if _, ok := g.try(t0.Add(4*time.Second), 3); !ok {
		t.Fatal("a slot freed by an uncounted answer")
	}
	g.done(3, t0.Add(5*time.Second), true)
	// Full: the oldest answer (t0+1s) leaves the window at t0+61s.
	if wait, ok := g.try(t0.Add(30*time.Second), 4); ok || wait != 31*time.Second {
		t.Fatalf("full window: ok=%v wait=%s", ok, wait)
	}
	if _, ok := g.try(t0.Add(61*time.Second), 5); !ok {
		t.Fatal("the oldest left the window")
	}
	g.blocked = t0.Add(100 * time.Second)
	if wait, ok := g.try(t0.Add(90*time.Second), 6); ok || wait != 10*time.Second {
		t.Fatalf("blocked by Retry-After: ok=%v wait=%s", ok, wait)
	}
}

// TestGateInFlightBound: at most maxInFlight sends at once, whatever room
// the windows have; inherited sends (ghosts) count until they end.
func TestGateInFlightBound(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	g := newGate(MailboxConcurrency, Limit{N: 30, Window: time.Minute})
	for i := range MailboxConcurrency {
		if _, ok := g.try(t0, uint64(i)); !ok {
			t.Fatalf("slot %d refused with %d in flight", i, i)
		}
	}
	if _, ok := g.try(t0, 99); ok {
		t.Fatalf("a %dth send in flight on one mailbox", MailboxConcurrency+1)
	}
	g.done(0, t0.Add(time.Second), true)
	if _, ok := g.try(t0.Add(time.Second), 4); !ok {
		t.Fatal("an answer did not free an in-flight place")
	}
	for i := 1; i <= 4; i++ {
		g.done(uint64(i), t0.Add(2*time.Second), true)
	}
	g.ghosts = []time.Time{t0.Add(10 * time.Second), t0.Add(10 * time.Second), t0.Add(12 * time.Second)}
	if _, ok := g.try(t0.Add(3*time.Second), 5); !ok {
		t.Fatal("3 ghosts + 0 in flight: one more fits")
	}
	if wait, ok := g.try(t0.Add(3*time.Second), 6); ok || wait != pendingPoll {
		t.Fatalf("3 ghosts + 1 in flight: ok=%v wait=%s", ok, wait)
	}
	g.done(5, t0.Add(4*time.Second), true)
	g.try(t0.Add(4*time.Second), 7)
	// Only ghosts and one of ours left: the wait ends with the first ghost.
	if wait, ok := g.try(t0.Add(9995*time.Millisecond), 8); ok || wait != pendingPoll {
		t.Fatalf("ghosts still live: ok=%v wait=%s", ok, wait)
	}
	if _, ok := g.try(t0.Add(10*time.Second), 8); !ok {
		t.Fatal("two ghosts ended: room again")
	}
}

func TestGateTwoLimits(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	g := newGate(0, Limit{N: 2, Window: time.Second}, Limit{N: 3, Window: time.Hour})
	at := t0
	for i := range 3 {
		for {
			if _, ok := g.try(at, uint64(i)); ok {
				break
			}
			at = at.Add(100 * time.Millisecond)
		}
		g.done(uint64(i), at, true)
	}
	if wait, ok := g.try(at.Add(10*time.Second), 3); ok || wait < 50*time.Minute {
		t.Fatalf("the hourly limit must hold: ok=%v wait=%s", ok, wait)
	}
}

func TestPoolSpreadsOverSenders(t *testing.T) {
	p := newPool([]string{"a", "b", "c"}, time.Now, 0, Limit{N: 2, Window: time.Hour})
	ctx := context.Background()
	count := map[string]int{}
	for range 6 {
		s, err := p.take(ctx, time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		count[s.Name]++
		s.Done(ctx, true)
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
	p2 := newPool([]string{"a", "b"}, time.Now, 0, Limit{N: 100, Window: time.Hour})
	s, _ := p2.take(ctx, 0)
	s.Block(ctx, time.Hour)
	s.Done(ctx, false)
	for range 3 {
		s, err := p2.take(ctx, 0)
		if err != nil || s.Name != "b" {
			t.Fatalf("blocked sender used: %v %v", s.Name, err)
		}
		s.Done(ctx, true)
	}
}

func asTooLong(err error, tl *errTooLong) bool {
	e, ok := err.(errTooLong)
	if ok {
		*tl = e
	}
	return ok
}
