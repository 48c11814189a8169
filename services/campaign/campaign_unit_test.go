package campaign

import (
	"context"
	"testing"
	"time"
)

func TestTransitions(t *testing.T) {
	tests := []struct {
		from, to State
		ok       bool
	}{
		{StateDraft, StatePreviewed, true},
		{StateDraft, StateRunning, false},
		{StatePreviewed, StateRunning, true},
		{StatePreviewed, StateApproved, true},
		{StateApproved, StateRunning, true},
		{StateRunning, StatePaused, true},
		{StatePaused, StateRunning, true},
		{StateRunning, StateDone, true},
		{StateDone, StateRunning, false},
		{StateCancelled, StateRunning, false},
		{StateRunning, StatePreviewed, false},
	}
	for _, tc := range tests {
		if got := CanMove(tc.from, tc.to); got != tc.ok {
			t.Errorf("CanMove(%s, %s) = %v, want %v", tc.from, tc.to, got, tc.ok)
		}
	}
}

func TestTargetSteps(t *testing.T) {
	all := Actions{RequireChange: true, RevokeSessions: true, Notify: true}
	if got := (Target{Kind: KindSynced}).Steps(all); len(got) != 1 || got[0] != StepADMustChange {
		t.Fatalf("synced: %v", got)
	}
	if got := (Target{Kind: KindCloud}).Steps(all); len(got) != 3 {
		t.Fatalf("cloud: %v", got)
	}
}

// A fake clock drives the pacer: the window is respected exactly, a 429
// pauses, Graph's usage header holds slots for other writers.
func TestPacer(t *testing.T) {
	now := time.Unix(1000, 0)
	p := NewPacer(10, 10*time.Second, 1)
	p.now = func() time.Time { return now }
	ctx := context.Background()
	if n, _ := p.Acquire(ctx, 20); n != 10 {
		t.Fatalf("first acquire got %d, want the whole budget 10", n)
	}
	p.Done(10, 10)
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	if _, err := p.Acquire(short, 1); err == nil {
		t.Fatal("acquired beyond the budget")
	}
	cancel()
	now = now.Add(10*time.Second + time.Millisecond)
	if n, _ := p.Acquire(ctx, 4); n != 4 {
		t.Fatalf("after the window: got %d, want 4", n)
	}
	p.Done(4, 2) // two were 429s: they hold no slot
	if n, _ := p.Acquire(ctx, 20); n != 8 {
		t.Fatalf("got %d, want 8", n)
	}
	p.Done(8, 0)
	p.Usage(0.9) // Graph says 9 of 10 are used, we account for 2
	if n, _ := p.Acquire(ctx, 20); n != 1 {
		t.Fatalf("with others' use: got %d, want 1", n)
	}
	p.Done(1, 0)
	p.Throttled(5 * time.Second)
	short, cancel = context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := p.Acquire(short, 1); err == nil {
		t.Fatal("acquired during Retry-After")
	}
	if p.Throttles() != 1 {
		t.Fatalf("throttles = %d", p.Throttles())
	}
}

func TestPacerUnlimitedAndUsageBound(t *testing.T) {
	ctx := context.Background()
	u := NewPacer(0, time.Second, 1)
	if n, err := u.Acquire(ctx, 20); n != 20 || err != nil {
		t.Fatalf("unlimited: %d, %v", n, err)
	}
	u.Usage(0.9)
	u.Throttled(time.Hour)
	if n, _ := u.Acquire(ctx, 5); n != 5 {
		t.Fatal("unlimited pacer paused")
	}
	p := NewPacer(10, time.Hour, 1)
	p.Usage(1.8) // Graph over its limit: no more than full
	if len(p.used) != 10 {
		t.Fatalf("%d slots held for others, want 10", len(p.used))
	}
}
