package campaign

import (
	"context"
	"sync"
	"time"
)

// Pacer keeps Graph writes under the tenant's write budget (Graph: 3,000
// writes per 150 s per app and tenant). It mirrors the budget as a sliding
// window: a write holds a slot from when it is sent until a window after
// its answer came back. Counting from the answer, not the send, is what
// makes it safe: Graph counted the write at some instant before answering,
// so the slot frees on our side no earlier than on Graph's, and a client
// alone on the budget never sees a 429; it still gets the whole budget.
//
// It adapts to what it does not see: a 429 pauses all writes until its
// Retry-After and lowers the share of the budget used (other writers on the
// same app, a restart that forgot the last window's writes); an
// x-ms-throttle-limit-percentage above our own use shows writes that are not
// ours, which then hold slots too. The share climbs back after a quiet window.
type Pacer struct {
	mu       sync.Mutex
	limit    int
	window   time.Duration
	maxShare float64
	share    float64
	used     []time.Time // answer times of counted writes (ours and others'), oldest first
	inflight int
	paused   time.Time // no write before this (Retry-After)
	last429  time.Time
	raised   time.Time // when share last climbed
	wake     chan struct{}
	now      func() time.Time

	throttled int // 429s seen, for stats
}

// NewPacer allows limit writes per window, using at most share (0 < share
// <= 1) of it. A limit <= 0 paces nothing (429s and Retry-After alone hold
// writes back: the benchmark's baseline).
func NewPacer(limit int, window time.Duration, share float64) *Pacer {
	if share <= 0 || share > 1 {
		share = 1
	}
	return &Pacer{limit: limit, window: window, maxShare: share, share: share,
		wake: make(chan struct{}), now: time.Now}
}

func (p *Pacer) unlimited() bool { return p.limit <= 0 }

func (p *Pacer) capacity() int { return max(int(float64(p.limit)*p.share), 1) }

// expire drops slots older than the window; p.mu held.
func (p *Pacer) expire(now time.Time) {
	cut := now.Add(-p.window)
	i := 0
	for i < len(p.used) && !p.used[i].After(cut) {
		i++
	}
	p.used = p.used[i:]
	if !p.last429.IsZero() && now.Sub(p.last429) > p.window && now.Sub(p.raised) > p.window/4 && p.share < p.maxShare {
		p.share = min(p.maxShare, p.share+0.05)
		p.raised = now
	}
}

// Acquire waits until at least one slot is free and takes up to n of the
// free ones; it returns how many it took (>= 1), or ctx's error.
func (p *Pacer) Acquire(ctx context.Context, n int) (int, error) {
	if p.unlimited() {
		return n, ctx.Err()
	}
	for {
		p.mu.Lock()
		now := p.now()
		p.expire(now)
		free := p.capacity() - len(p.used) - p.inflight
		var wait time.Duration
		switch {
		case now.Before(p.paused):
			wait = p.paused.Sub(now)
		case free >= 1:
			got := min(free, n)
			p.inflight += got
			p.mu.Unlock()
			return got, nil
		case len(p.used) > 0:
			wait = p.used[0].Add(p.window).Sub(now) + time.Millisecond
		default:
			wait = 50 * time.Millisecond // every slot is in flight: wait for an answer
		}
		wake := p.wake
		p.mu.Unlock()
		t := time.NewTimer(max(wait, time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		case <-t.C:
		case <-wake:
			t.Stop()
		}
	}
}

// Done returns n slots taken by Acquire: counted ones hold their slot for a
// window from now; the others (429s, never sent) are freed at once.
func (p *Pacer) Done(taken, counted int) {
	if p.unlimited() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	p.inflight -= taken
	for range min(counted, taken) {
		p.used = append(p.used, now)
	}
	p.signal()
}

// Throttled records a 429 with its Retry-After.
func (p *Pacer) Throttled(retryAfter time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	p.throttled++
	if p.unlimited() {
		return
	}
	if retryAfter <= 0 {
		retryAfter = time.Second
	}
	if until := now.Add(retryAfter); until.After(p.paused) {
		p.paused = until
	}
	if now.Sub(p.last429) > time.Second { // one batch's 429s count once
		p.share = max(0.2, p.share*0.9)
	}
	p.last429, p.raised = now, now
}

// Usage takes Graph's x-ms-throttle-limit-percentage (0 when absent): a
// use above what we account for is someone else's, and holds slots.
func (p *Pacer) Usage(pct float64) {
	if pct <= 0 || p.unlimited() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	p.expire(now)
	// Bounded by the free slots: Graph's share above 1 (over the limit)
	// says no more than "full".
	theirs := min(int(min(pct, 1)*float64(p.limit)), p.limit) - len(p.used) - p.inflight
	for range max(theirs, 0) {
		p.used = append(p.used, now)
	}
}

// Throttles is the number of 429s seen.
func (p *Pacer) Throttles() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.throttled
}

// signal wakes waiters; p.mu held.
func (p *Pacer) signal() {
	close(p.wake)
	p.wake = make(chan struct{})
}
