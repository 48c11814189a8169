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

// MailboxConcurrency is Outlook's limit of concurrent requests per app per
// mailbox (graph-facts.md §3: "10,000 requests / 10 min, 4 concurrent"):
// a fifth sendMail on one mailbox while four are in flight gets a 429.
const MailboxConcurrency = 4

// gate paces one resource (a sender mailbox, the Teams app) under one or
// more limits. A send takes a slot before it starts and gives it back when
// Graph has answered: the slot is stamped with the time of the answer,
// which is after Graph counted the request, so that however requests are
// delayed on the way, the service never sees more than N in a window.
// In-flight sends count against the limit too, and at most maxInFlight
// may be in flight at once (0: no bound).
type gate struct {
	windows     []*window
	blocked     time.Time // a 429 asked us to wait until then
	maxInFlight int
	inflight    map[uint64]time.Time // taken slots not given back: id -> take time
	// ghosts are sends a previous lease holder started and never saw
	// answered (restore): they may be in flight until these times.
	ghosts []time.Time
}

type window struct {
	Limit
	times []time.Time // answers counted by the service, oldest first
}

func newGate(maxInFlight int, limits ...Limit) *gate {
	g := &gate{maxInFlight: maxInFlight, inflight: map[uint64]time.Time{}}
	for _, l := range limits {
		if l.N > 0 && l.Window > 0 {
			g.windows = append(g.windows, &window{Limit: l})
		}
	}
	return g
}

// try takes slot id at now, or says how long to wait before trying again.
func (g *gate) try(now time.Time, id uint64) (wait time.Duration, ok bool) {
	if now.Before(g.blocked) {
		return g.blocked.Sub(now), false
	}
	if g.maxInFlight > 0 {
		if n, next := g.inFlight(now); n >= g.maxInFlight {
			return next, false
		}
	}
	pending := len(g.inflight)
	for _, w := range g.windows {
		w.expire(now)
		if d := w.wait(now, pending); d > 0 {
			wait = max(wait, d)
		}
	}
	if wait > 0 {
		return wait, false
	}
	g.inflight[id] = now
	return 0, true
}

// inFlight counts sends in flight at now (ours and live ghosts) and says
// when to look again if that is the bound: at the first ghost's end, or
// soon (an answer to one of ours wakes the pool anyway).
func (g *gate) inFlight(now time.Time) (int, time.Duration) {
	live := g.ghosts[:0]
	next := pendingPoll
	for _, t := range g.ghosts {
		if t.After(now) {
			live = append(live, t)
			next = min(next, t.Sub(now))
		}
	}
	g.ghosts = live
	return len(g.inflight) + len(live), next
}

// done gives slot id back: counted says whether the service counted the
// request (accepted, or unknown); at is when its answer came.
func (g *gate) done(id uint64, at time.Time, counted bool) {
	delete(g.inflight, id)
	if !counted {
		return
	}
	for _, w := range g.windows {
		w.add(at)
	}
}

func (w *window) add(at time.Time) {
	i := sort.Search(len(w.times), func(i int) bool { return w.times[i].After(at) })
	w.times = append(w.times, time.Time{})
	copy(w.times[i+1:], w.times[i:])
	w.times[i] = at
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

func (w *window) wait(now time.Time, pending int) time.Duration {
	used := len(w.times) + pending
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
	mu     sync.Mutex
	names  []string
	gates  []*gate
	next   int
	seq    uint64
	now    func() time.Time
	freed  chan struct{} // closed (and replaced) when a slot is given back
	limits []Limit
	// store, when set (attach), writes each gate's state through to KV
	// before a send starts and after it is answered: a lease holder that
	// takes over starts from it (pacestore.go).
	store  *paceStore
	keys   []string     // KV key per gate
	saveMu []sync.Mutex // one write at a time per gate, in order
}

func newPool(names []string, now func() time.Time, maxInFlight int, limits ...Limit) *pool {
	p := &pool{names: names, now: now, freed: make(chan struct{}), limits: limits, saveMu: make([]sync.Mutex, len(names))}
	for range names {
		p.gates = append(p.gates, newGate(maxInFlight, limits...))
	}
	return p
}

// slot is a taken slot; Done must be called exactly once.
type slot struct {
	p    *pool
	i    int
	id   uint64
	Name string
}

// Done gives the slot back; counted: the service may have counted it.
func (s slot) Done(ctx context.Context, counted bool) {
	p := s.p
	p.mu.Lock()
	p.gates[s.i].done(s.id, p.now(), counted)
	close(p.freed)
	p.freed = make(chan struct{})
	p.mu.Unlock()
	p.save(ctx, s.i, "answer")
}

// Block keeps the slot's gate closed for d (Retry-After of a 429).
func (s slot) Block(ctx context.Context, d time.Duration) {
	p := s.p
	p.mu.Lock()
	if until := p.now().Add(d); until.After(p.gates[s.i].blocked) {
		p.gates[s.i].blocked = until
	}
	p.mu.Unlock()
	p.save(ctx, s.i, "block")
}

// blockAll keeps every gate closed for d.
func (p *pool) blockAll(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	until := p.now().Add(d)
	for _, g := range p.gates {
		if until.After(g.blocked) {
			g.blocked = until
		}
	}
}

// errTooLong is returned by take when no slot frees within maxWait; it
// carries the wait so that the message can come back then.
type errTooLong struct{ wait time.Duration }

func (e errTooLong) Error() string { return "pacing: no send slot within the wait budget" }

// take waits for a slot, at most maxWait. With a store, the slot is
// written to KV before take returns; a failed write gives it back and
// returns the error: nothing may be sent that a successor would not see.
func (p *pool) take(ctx context.Context, maxWait time.Duration) (slot, error) {
	deadline := p.now().Add(maxWait)
	for {
		p.mu.Lock()
		now := p.now()
		best := time.Duration(-1)
		for k := range p.gates {
			i := (p.next + k) % len(p.gates)
			p.seq++
			wait, ok := p.gates[i].try(now, p.seq)
			if ok {
				p.next = (i + 1) % len(p.gates)
				sl := slot{p: p, i: i, id: p.seq, Name: p.names[i]}
				p.mu.Unlock()
				if err := p.reserve(ctx, sl); err != nil {
					return slot{}, err
				}
				return sl, nil
			}
			if best < 0 || wait < best {
				best = wait
			}
		}
		freed := p.freed
		p.mu.Unlock()
		if now.Add(best).After(deadline) {
			return slot{}, errTooLong{wait: best}
		}
		t := time.NewTimer(best)
		select {
		case <-ctx.Done():
			t.Stop()
			return slot{}, ctx.Err()
		case <-freed: // an answer came: a window or in-flight bound may have room
			t.Stop()
		case <-t.C:
		}
	}
}
