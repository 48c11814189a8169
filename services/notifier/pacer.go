package notifier

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Limit is "at most N per Window", as Exchange Online (30 messages a minute
// per mailbox) and Teams (5 activity notifications a second per app and
// tenant) state their limits: sliding windows, not token buckets.
type Limit struct {
	N      int
	Window time.Duration
}

// gate paces one resource (a sender mailbox, the Teams app) under one or
// more limits. A send takes a slot before it starts and gives it back when
// Graph has answered: the slot is stamped with the time of the answer,
// which is after Graph counted the request, so that however requests are
// delayed on the way, the service never sees more than N in a window.
// In-flight sends count against the limit too.
type gate struct {
	windows []*window
	blocked time.Time // a 429 asked us to wait until then
}

type window struct {
	Limit
	times   []time.Time // answers counted by the service, oldest first
	pending int
}

func newGate(limits ...Limit) *gate {
	g := &gate{}
	for _, l := range limits {
		if l.N > 0 && l.Window > 0 {
			g.windows = append(g.windows, &window{Limit: l})
		}
	}
	return g
}

// try takes a slot at now, or says how long to wait before trying again.
func (g *gate) try(now time.Time) (wait time.Duration, ok bool) {
	if now.Before(g.blocked) {
		return g.blocked.Sub(now), false
	}
	for _, w := range g.windows {
		w.expire(now)
		if d := w.wait(now); d > 0 {
			wait = max(wait, d)
		}
	}
	if wait > 0 {
		return wait, false
	}
	for _, w := range g.windows {
		w.pending++
	}
	return 0, true
}

// done gives a slot back: counted says whether the service counted the
// request (accepted, or unknown); at is when its answer came.
func (g *gate) done(at time.Time, counted bool) {
	for _, w := range g.windows {
		w.pending--
		if counted {
			i := sort.Search(len(w.times), func(i int) bool { return w.times[i].After(at) })
			w.times = append(w.times, time.Time{})
			copy(w.times[i+1:], w.times[i:])
			w.times[i] = at
		}
	}
}

func (w *window) expire(now time.Time) {
	cut := 0
	for cut < len(w.times) && !w.times[cut].Add(w.Window).After(now) {
		cut++
	}
	w.times = w.times[cut:]
}

// pendingPoll is how soon to look again when only in-flight sends fill
// the window (their answer time is not known yet).
const pendingPoll = 5 * time.Millisecond

func (w *window) wait(now time.Time) time.Duration {
	used := len(w.times) + w.pending
	if used < w.N {
		return 0
	}
	// The (used-N+1)-th oldest must leave the window before one more fits.
	k := used - w.N
	if k < len(w.times) {
		return w.times[k].Add(w.Window).Sub(now)
	}
	return pendingPoll
}

// pool spreads sends over several gates (sender mailboxes): the first one
// free, starting after the last one used (round robin among free ones),
// else the one free soonest (least loaded).
type pool struct {
	mu    sync.Mutex
	names []string
	gates []*gate
	next  int
	now   func() time.Time
}

func newPool(names []string, now func() time.Time, limits ...Limit) *pool {
	p := &pool{names: names, now: now}
	for range names {
		p.gates = append(p.gates, newGate(limits...))
	}
	return p
}

// slot is a taken slot; Done must be called exactly once.
type slot struct {
	p    *pool
	i    int
	Name string
}

// Done gives the slot back; counted: the service may have counted it.
func (s slot) Done(counted bool) {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	s.p.gates[s.i].done(s.p.now(), counted)
}

// Block keeps the slot's gate closed for d (Retry-After of a 429).
func (s slot) Block(d time.Duration) {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	if until := s.p.now().Add(d); until.After(s.p.gates[s.i].blocked) {
		s.p.gates[s.i].blocked = until
	}
}

// errTooLong is returned by take when no slot frees within maxWait; it
// carries the wait so that the message can come back then.
type errTooLong struct{ wait time.Duration }

func (e errTooLong) Error() string { return "pacing: no send slot within the wait budget" }

// take waits for a slot, at most maxWait.
func (p *pool) take(ctx context.Context, maxWait time.Duration) (slot, error) {
	deadline := p.now().Add(maxWait)
	for {
		p.mu.Lock()
		now := p.now()
		best := time.Duration(-1)
		for k := range p.gates {
			i := (p.next + k) % len(p.gates)
			wait, ok := p.gates[i].try(now)
			if ok {
				p.next = (i + 1) % len(p.gates)
				p.mu.Unlock()
				return slot{p: p, i: i, Name: p.names[i]}, nil
			}
			if best < 0 || wait < best {
				best = wait
			}
		}
		p.mu.Unlock()
		if now.Add(best).After(deadline) {
			return slot{}, errTooLong{wait: best}
		}
		t := time.NewTimer(best)
		select {
		case <-ctx.Done():
			t.Stop()
			return slot{}, ctx.Err()
		case <-t.C:
		}
	}
}
