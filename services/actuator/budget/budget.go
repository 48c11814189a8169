// Package budget is the one scheduler of Graph directory writes: the write
// budget (Graph: 3,000 writes per 150 s per app and tenant) is one, so every
// writer in the process (the actuator's steps, the campaign's $batch lane)
// takes its slots here, by priority. Live resets and their undo come first,
// then expiry enforcement, then campaign work (including the cloud
// follow-ups of a campaign's own AD writes).
//
// It mirrors the budget as a sliding window: a write holds a slot from when
// it is sent until a window after its answer came back. Counting from the
// answer, not the send, is what makes it safe: Graph counted the write at
// some instant before answering, so the slot frees on our side no earlier
// than on Graph's, and a process alone on the budget never sees a 429; it
// still gets the whole budget.
//
// Priorities: a waiting write of a higher priority takes the next free slot
// before any lower one, and the last Reserve slots are kept for live work
// (half of them for expiry enforcement), so a live reset finds a slot free
// at once even while a campaign saturates the budget. Lower priorities are
// also smoothed to the budget's rate (a token bucket of at most one $batch):
// a campaign that took the whole window at once would free it at once a
// window later, and a live write that met an empty reserve would wait up to
// a window; spread out, slots free steadily and the reserve refills. A 429 pauses every
// priority below live until its Retry-After (and live too when a live write
// got it) and lowers the share used; Graph's x-ms-throttle-limit-percentage
// above our own use shows writes that are not ours, which then hold slots.
//
// One scheduler per process: with several replicas each has its own, and
// they meet Graph's budget through 429s and the usage header.
package budget

import (
	"context"
	"math"
	"sync"
	"time"
)

// Priority orders writers; a lower value goes first.
type Priority int

const (
	Live     Priority = iota // helpdesk resets, cloud changes, their undo
	Expiry                   // expiry enforcement and other bulk rule passes
	Campaign                 // campaign writes and their cloud follow-ups
	levels
)

func (p Priority) String() string {
	switch p {
	case Live:
		return "live"
	case Expiry:
		return "expiry"
	case Campaign:
		return "campaign"
	}
	return "unknown"
}

// Config sizes a scheduler.
type Config struct {
	// Limit writes per Window (actuator.write_budget, write_window); a
	// Limit <= 0 paces nothing (429s and Retry-After alone hold writes back).
	Limit  int
	Window time.Duration
	// CampaignShare (0, 1]: campaign work uses at most this share of the
	// budget (campaigns.write_share); 0 = 1.
	CampaignShare float64
	// Reserve slots only live work may take (expiry enforcement half of
	// them); see DefaultReserve.
	Reserve int
}

// DefaultReserve keeps 2% of the budget (at least 4 slots) for live work:
// enough for a burst of live resets, little enough that a campaign still
// gets nearly all the budget live work leaves it.
func DefaultReserve(limit int) int {
	if limit <= 0 {
		return 0
	}
	return min(max(limit/50, 4), limit/2)
}

// Scheduler hands out the slots of one write budget.
type Scheduler struct {
	mu            sync.Mutex
	limit         int
	window        time.Duration
	campaignShare float64
	reserve       int
	share         float64     // of the budget used; lowered by 429s
	used          []time.Time // answer times of counted writes (ours and others'), oldest first
	inflight      int
	waiting       [levels]int
	paused        [levels]time.Time // no write of that priority before this (Retry-After)
	last429       time.Time
	raised        time.Time
	wake          chan struct{}
	now           func() time.Time
	live          []time.Time // when live writes took their slots, within the window: live's rate
	tokens        float64     // the lower priorities' smoothing bucket
	filled        time.Time   // when tokens was last brought up to date

	throttled [levels]int // 429s seen, for stats

	own ownWrites
}

// New makes a scheduler.
func New(c Config) *Scheduler {
	share := c.CampaignShare
	if share <= 0 || share > 1 {
		share = 1
	}
	return &Scheduler{limit: c.Limit, window: c.Window, campaignShare: share, reserve: max(c.Reserve, 0), share: 1,
		wake: make(chan struct{}), now: time.Now, own: ownWrites{at: map[string]time.Time{}}}
}

func (s *Scheduler) unlimited() bool { return s.limit <= 0 || s.window <= 0 }

// capacity is what priority p may hold in all; s.mu held.
func (s *Scheduler) capacity(p Priority) int {
	c := max(int(float64(s.limit)*s.share), 1)
	switch p {
	case Expiry:
		c -= s.reserve / 2
	case Campaign:
		c = min(c, int(float64(s.limit)*s.campaignShare)) - s.reserve
	}
	return max(c, 1)
}

// expire drops slots older than the window; s.mu held.
func (s *Scheduler) expire(now time.Time) {
	cut := now.Add(-s.window)
	i := 0
	for i < len(s.used) && !s.used[i].After(cut) {
		i++
	}
	s.used = s.used[i:]
	j := 0
	for j < len(s.live) && !s.live[j].After(cut) {
		j++
	}
	s.live = s.live[j:]
	if !s.last429.IsZero() && now.Sub(s.last429) > s.window && now.Sub(s.raised) > s.window/4 && s.share < 1 {
		s.share = min(1, s.share+0.05)
		s.raised = now
	}
}

// burst is the smoothing bucket's size: one $batch, at most a tenth of the budget.
func (s *Scheduler) burst() float64 { return float64(min(20, max(s.limit/10, 1))) }

// rate is the budget's rate, writes per second, at the share used; s.mu held.
func (s *Scheduler) rate() float64 { return float64(s.limit) * s.share / s.window.Seconds() }

// leaveLive lowers free, what a lower priority may take now, so that live
// work at its recent rate finds a slot free at every moment until the slots
// held now have freed. A slot that frees goes to live first, but slots free
// only as the writes of a window ago expire: where that past had a gap (the
// window's first burst, $batches answered at once), a campaign that took
// every slot the reserve left would have live wait for the gap's end (the
// max of 40 live resets was ~1 s against 49 ms quiet, issue 20). s.mu held.
func (s *Scheduler) leaveLive(now time.Time, p Priority, free int) int {
	if len(s.live) == 0 {
		return free
	}
	// live's writes per second over the window, or since they began
	span := min(s.window, max(now.Sub(s.live[0]), time.Second))
	rate := float64(len(s.live)) / span.Seconds()
	r := s.reserve
	if p == Expiry {
		r /= 2
	}
	least := free
	for i, u := range s.used {
		// just before slot i frees: i have freed, live wrote for h; the
		// reserve covers live's bursts, the forecast its rate
		h := u.Add(s.window).Sub(now).Seconds()
		least = min(least, free+r+i-max(r, int(math.Ceil(rate*h))))
	}
	return least
}

// fill brings the smoothing bucket up to date; s.mu held.
func (s *Scheduler) fill(now time.Time) {
	if s.filled.IsZero() {
		s.tokens, s.filled = s.burst(), now
		return
	}
	if now.After(s.filled) {
		if s.tokens < s.burst() {
			s.tokens = min(s.burst(), s.tokens+now.Sub(s.filled).Seconds()*s.rate())
		}
		s.filled = now
	}
}

// higherWaiting: a write of a higher priority than p waits; s.mu held.
func (s *Scheduler) higherWaiting(p Priority) bool {
	for q := Live; q < p; q++ {
		if s.waiting[q] > 0 {
			return true
		}
	}
	return false
}

// Acquire waits until at least one slot is free for priority p and takes up
// to n of them; it returns how many it took (>= 1), or ctx's error. Every
// slot taken is given back with Done.
func (s *Scheduler) Acquire(ctx context.Context, p Priority, n int) (int, error) {
	if s.unlimited() {
		return n, ctx.Err()
	}
	if n <= 0 {
		return 0, ctx.Err()
	}
	p = min(max(p, Live), Campaign)
	registered := false
	defer func() {
		if registered {
			s.mu.Lock()
			s.waiting[p]--
			s.signal() // lower priorities may go now
			s.mu.Unlock()
		}
	}()
	for {
		s.mu.Lock()
		got, wait := s.take(s.now(), p, n)
		if got > 0 {
			s.mu.Unlock()
			return got, nil
		}
		if !registered {
			registered = true
			s.waiting[p]++
		}
		wake := s.wake
		s.mu.Unlock()
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

// take is one try of Acquire at now: the slots it took (then counted in
// flight), or none and how long to wait before the next try; s.mu held.
func (s *Scheduler) take(now time.Time, p Priority, n int) (got int, wait time.Duration) {
	s.expire(now)
	free := s.capacity(p) - len(s.used) - s.inflight
	smooth := p > Live
	need := 0.0
	if smooth {
		free = s.leaveLive(now, p, free)
		s.fill(now)
		need = min(float64(n), s.burst()) // a whole batch when it asks for one
	}
	switch {
	case now.Before(s.paused[p]):
		return 0, s.paused[p].Sub(now)
	case s.higherWaiting(p):
		return 0, time.Second // woken when they take their slot
	case free >= 1 && smooth && s.tokens < need:
		return 0, time.Duration((need - s.tokens) / s.rate() * float64(time.Second))
	case free >= 1:
		got = min(free, n)
		if smooth {
			got = min(got, int(s.tokens))
			s.tokens -= float64(got)
		}
		s.inflight += got
		if p == Live {
			for range got {
				s.live = append(s.live, now)
			}
		}
		return got, 0
	case len(s.used) > 0:
		return 0, s.used[0].Add(s.window).Sub(now) + time.Millisecond
	}
	return 0, 50 * time.Millisecond // every slot is in flight: wait for an answer
}

// Done returns taken slots: counted ones hold their slot for a window from
// now; the others (429s, never sent) are freed at once.
func (s *Scheduler) Done(taken, counted int) {
	if s.unlimited() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.inflight = max(s.inflight-taken, 0)
	for range min(counted, taken) {
		s.used = append(s.used, now)
	}
	s.signal()
}

// Throttled records a 429 met by a write of priority p: every priority
// below live waits out Retry-After, and live too when the 429 was its own.
func (s *Scheduler) Throttled(p Priority, retryAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.throttled[min(max(p, Live), Campaign)]++
	if s.unlimited() {
		return
	}
	if retryAfter <= 0 {
		retryAfter = time.Second
	}
	until := now.Add(retryAfter)
	for q := Live; q < levels; q++ {
		if (q > Live || p == Live) && until.After(s.paused[q]) {
			s.paused[q] = until
		}
	}
	if now.Sub(s.last429) > time.Second { // one batch's 429s count once
		s.share = max(0.2, s.share*0.9)
	}
	s.last429, s.raised = now, now
	s.signal()
}

// Usage takes Graph's x-ms-throttle-limit-percentage (0 when absent): a
// use above what we account for is someone else's, and holds slots.
func (s *Scheduler) Usage(pct float64) {
	if pct <= 0 || s.unlimited() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(s.now())
	// Bounded by the free slots: Graph's share above 1 (over the limit)
	// says no more than "full".
	theirs := min(int(min(pct, 1)*float64(s.limit)), s.limit) - len(s.used) - s.inflight
	now := s.now()
	for range max(theirs, 0) {
		s.used = append(s.used, now)
	}
}

// Throttles is the number of 429s met by writes of priority p.
func (s *Scheduler) Throttles(p Priority) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.throttled[min(max(p, Live), Campaign)]
}

// signal wakes waiters; s.mu held.
func (s *Scheduler) signal() {
	close(s.wake)
	s.wake = make(chan struct{})
}

// Lane is one priority's view of the scheduler: what a writer that always
// writes at that priority holds (the campaign runner holds the Campaign lane).
type Lane struct {
	s *Scheduler
	p Priority
}

// Lane returns priority p's lane.
func (s *Scheduler) Lane(p Priority) *Lane { return &Lane{s: s, p: p} }

// Scheduler is the lane's scheduler.
func (l *Lane) Scheduler() *Scheduler { return l.s }

// Acquire takes up to n slots at the lane's priority (see Scheduler.Acquire).
func (l *Lane) Acquire(ctx context.Context, n int) (int, error) { return l.s.Acquire(ctx, l.p, n) }

// Done returns slots (see Scheduler.Done).
func (l *Lane) Done(taken, counted int) { l.s.Done(taken, counted) }

// Throttled records a 429 met by the lane's writes.
func (l *Lane) Throttled(retryAfter time.Duration) { l.s.Throttled(l.p, retryAfter) }

// Usage takes Graph's usage header (see Scheduler.Usage).
func (l *Lane) Usage(pct float64) { l.s.Usage(pct) }

// Throttles is the number of 429s the lane's writes met.
func (l *Lane) Throttles() int { return l.s.Throttles(l.p) }
