package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
)

// Pacing state survives a failover. Exchange counts a mailbox's messages
// whoever sends them: a lease holder that took over with empty windows
// would send a second minute's worth into the same minute, and start the
// rolling day from zero. So each sender's gate is written through to the
// KV bucket "pacing" (key mail.<sender>) and the next holder loads it when
// it acquires the lease:
//
//	reserve: before a send starts (the slot, by its take time); a write
//	         that fails gives the slot back unsent, so a successor never
//	         misses a send that happened
//	answer:  after Graph answered (the exact answer time); best effort:
//	         if it is lost, the reservation stands in for it
//
// Two small puts per email, at most 30 a minute per mailbox. A reservation
// never answered (the holder died or lost NATS mid-send) is taken by the
// successor as sent at its take time + sendTimeout, the longest the
// request could have been on its way (the notifier enforces that bound),
// and as in flight until then.
//
// Writes are compare-and-set on the revision this replica last wrote, and
// the state names its writer: once a new holder has taken the state over,
// an old holder's writes fail (fenced) and its remaining sends stay unsent.
//
// Teams (5 a second) and the alert webhook are not written through: their
// windows are seconds long, shorter than any lease handover after a crash
// (the lease TTL); a handover by release is covered by a pause of one
// window at takeover.

// BucketPacing holds the senders' pacing state (see above).
const BucketPacing = natsx.BucketPacing

// clockSkew is added to every time a successor restores. The times are
// wall-clock instants of another replica, often another host, while
// Exchange counts on its own clock; counted this much later, the successor
// does not send early into a window the previous holder filled. (A
// successor on the same host was once seen 20-40 ms early under load, cause
// not established; the margin covers that too.) It costs at most one
// second of a window, once, at takeover.
const clockSkew = time.Second

// pacingTTL drops the state of a sender unused for longer than the longest
// window (the rolling day, or pacing.mail_day_window if longer): it is
// empty anyway.
const pacingTTL = 25 * time.Hour

// exactTimes: windows holding up to this many sends are stored exactly;
// longer ones (the day's 10,000) in dayBuckets buckets per window, each
// send rounded up to its bucket's end, which only makes the successor wait
// longer (up to a bucket, 15 minutes of the day).
const (
	exactTimes = 128
	dayBuckets = 96
)

// errFenced: another replica has taken the pacing state over.
var errFenced = errors.New("pacing state taken over by another replica (lease lost); not sending")

// gateState is one gate in KV. Times are Unix milliseconds, rounded up.
type gateState struct {
	Holder  string        `json:"holder"`
	Saved   int64         `json:"saved"`
	Windows []windowState `json:"windows"`
	Pending []int64       `json:"pending,omitempty"` // take times of sends not answered yet
	Blocked int64         `json:"blocked,omitempty"`
	Ghosts  []int64       `json:"ghosts,omitempty"` // inherited sends possibly in flight until then
}

type windowState struct {
	WindowMS int64      `json:"window_ms"`
	N        int        `json:"n"`
	Times    []int64    `json:"times,omitempty"`
	Buckets  [][2]int64 `json:"buckets,omitempty"` // [end, count]
}

func ceilMS(t time.Time) int64 {
	ms := t.UnixMilli()
	if time.UnixMilli(ms).Before(t) {
		ms++
	}
	return ms
}

// snapshot is the gate's state at now.
func (g *gate) snapshot(now time.Time) gateState {
	st := gateState{Saved: now.UnixMilli()}
	for _, w := range g.windows {
		w.expire(now)
		ws := windowState{WindowMS: w.Window.Milliseconds(), N: w.N}
		if len(w.times) <= exactTimes {
			for _, t := range w.times {
				ws.Times = append(ws.Times, ceilMS(t))
			}
		} else {
			q := max(w.Window.Milliseconds()/dayBuckets, 1)
			for _, t := range w.times {
				end := (ceilMS(t) + q - 1) / q * q
				if n := len(ws.Buckets); n > 0 && ws.Buckets[n-1][0] == end {
					ws.Buckets[n-1][1]++
				} else {
					ws.Buckets = append(ws.Buckets, [2]int64{end, 1})
				}
			}
		}
		st.Windows = append(st.Windows, ws)
	}
	for _, t := range g.inflight {
		st.Pending = append(st.Pending, ceilMS(t))
	}
	sort.Slice(st.Pending, func(i, j int) bool { return st.Pending[i] < st.Pending[j] })
	if g.blocked.After(now) {
		st.Blocked = ceilMS(g.blocked)
	}
	_, _ = g.inFlight(now) // drops ended ghosts
	for _, t := range g.ghosts {
		st.Ghosts = append(st.Ghosts, ceilMS(t))
	}
	return st
}

// restore replaces the gate's windows by a saved state (the previous
// holder's, which includes anything this replica wrote before), every time
// moved clockSkew later. A pending send counts as answered at its take
// time + sendTimeout, and in flight until then. Sends of this replica
// still in flight stay counted as such.
func (g *gate) restore(st gateState, now time.Time, sendTimeout time.Duration) {
	at := func(ms int64) time.Time { return time.UnixMilli(ms).Add(clockSkew) }
	var pend []time.Time
	for _, ms := range st.Pending {
		pend = append(pend, at(ms).Add(sendTimeout))
	}
	for _, w := range g.windows {
		w.times = nil
		for _, ws := range st.Windows {
			if ws.WindowMS != w.Window.Milliseconds() {
				continue
			}
			for _, ms := range ws.Times {
				w.times = append(w.times, at(ms))
			}
			for _, b := range ws.Buckets {
				for range b[1] {
					w.times = append(w.times, at(b[0]))
				}
			}
		}
		w.times = append(w.times, pend...)
		sort.Slice(w.times, func(i, j int) bool { return w.times[i].Before(w.times[j]) })
		w.expire(now)
	}
	g.ghosts = g.ghosts[:0]
	for _, t := range pend {
		if t.After(now) {
			g.ghosts = append(g.ghosts, t)
		}
	}
	for _, ms := range st.Ghosts {
		if t := at(ms); t.After(now) {
			g.ghosts = append(g.ghosts, t)
		}
	}
	if b := at(st.Blocked); st.Blocked > 0 && b.After(g.blocked) {
		g.blocked = b
	}
}

// paceStore writes gates to KV for one holder.
type paceStore struct {
	kv          jetstream.KeyValue
	holder      string
	sendTimeout time.Duration
	log         zerolog.Logger

	mu   sync.Mutex
	revs map[string]uint64 // last revision written (or read at takeover) per key
}

// paceKey names a sender's state.
func paceKey(sender string) string { return "mail." + events.KeySafe(lowerASCII(sender)) }

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// attach takes the pool's state over from KV for this holder: each gate is
// replaced by what the previous holder wrote, and written back under this
// holder's name, which fences the previous one. From then on every slot is
// written through.
func (p *pool) attach(ctx context.Context, st *paceStore) error {
	keys := make([]string, len(p.names))
	for i, n := range p.names {
		keys[i] = paceKey(n)
	}
	for i := range p.gates {
		if err := p.takeOver(ctx, st, i, keys[i]); err != nil {
			return err
		}
	}
	p.mu.Lock()
	p.store, p.keys = st, keys
	p.mu.Unlock()
	return nil
}

func (p *pool) takeOver(ctx context.Context, st *paceStore, i int, key string) error {
	for range 5 { // a write by someone else between the read and ours: read again
		var saved gateState
		var rev uint64
		e, err := st.kv.Get(ctx, key)
		switch {
		case natsx.IsNotFound(err):
		case err != nil:
			return fmt.Errorf("reading pacing state %s: %w", key, err)
		default:
			if err := json.Unmarshal(e.Value(), &saved); err != nil {
				return fmt.Errorf("decoding pacing state %s: %w", key, err)
			}
			rev = e.Revision()
		}
		p.saveMu[i].Lock()
		p.mu.Lock()
		now := p.now()
		p.gates[i].restore(saved, now, st.sendTimeout)
		snap := p.gates[i].snapshot(now)
		p.mu.Unlock()
		snap.Holder = st.holder
		b, _ := json.Marshal(snap) // ints and strings: cannot fail
		var next uint64
		if rev == 0 {
			next, err = st.kv.Create(ctx, key, b)
		} else {
			next, err = st.kv.Update(ctx, key, b, rev)
		}
		p.saveMu[i].Unlock()
		switch {
		case err == nil:
			st.mu.Lock()
			st.revs[key] = next
			st.mu.Unlock()
			st.log.Info().Str("sender", p.names[i]).Str("previous_holder", saved.Holder).Int("counted", len(snap.windowTimes(0))).
				Int("unanswered", len(saved.Pending)).Msg("pacing state taken over")
			return nil
		case errors.Is(err, jetstream.ErrKeyExists) || isWrongLastSequence(err):
			continue
		default:
			return fmt.Errorf("taking over pacing state %s: %w", key, err)
		}
	}
	return fmt.Errorf("taking over pacing state %s: it keeps changing under us", key)
}

func (st gateState) windowTimes(i int) []int64 {
	if i >= len(st.Windows) {
		return nil
	}
	return st.Windows[i].Times
}

// reserve writes a taken slot through; on failure the slot is given back
// uncounted (nothing was sent).
func (p *pool) reserve(ctx context.Context, sl slot) error {
	p.mu.Lock()
	st := p.store
	p.mu.Unlock()
	if st == nil {
		return nil
	}
	if err := p.write(ctx, sl.i); err != nil {
		p.mu.Lock()
		p.gates[sl.i].done(sl.id, p.now(), false)
		close(p.freed)
		p.freed = make(chan struct{})
		p.mu.Unlock()
		return err
	}
	return nil
}

// save writes a gate after an answer or a block; a failure is logged: the
// reservation already in KV counts the send for a successor.
func (p *pool) save(ctx context.Context, i int, why string) {
	p.mu.Lock()
	st := p.store
	p.mu.Unlock()
	if st == nil {
		return
	}
	if err := p.write(ctx, i); err != nil {
		st.log.Warn().Err(err).Str("sender", p.names[i]).Str("write", why).Msg("pacing state not saved; the reservation stands in")
	}
}

// write puts gate i's current state, compare-and-set on our revision.
func (p *pool) write(ctx context.Context, i int) error {
	p.saveMu[i].Lock()
	defer p.saveMu[i].Unlock()
	p.mu.Lock()
	st, key := p.store, p.keys[i]
	snap := p.gates[i].snapshot(p.now())
	p.mu.Unlock()
	snap.Holder = st.holder
	b, _ := json.Marshal(snap)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	st.mu.Lock()
	rev := st.revs[key]
	st.mu.Unlock()
	for range 2 {
		next, err := st.kv.Update(ctx, key, b, rev)
		if err == nil {
			st.mu.Lock()
			st.revs[key] = next
			st.mu.Unlock()
			return nil
		}
		if !isWrongLastSequence(err) && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("saving pacing state %s: %w", key, err)
		}
		// Someone wrote after us, or the key expired (idle for a day).
		e, gerr := st.kv.Get(ctx, key)
		switch {
		case natsx.IsNotFound(gerr):
			next, err := st.kv.Create(ctx, key, b)
			if err != nil {
				return fmt.Errorf("saving pacing state %s: %w", key, err)
			}
			st.mu.Lock()
			st.revs[key] = next
			st.mu.Unlock()
			return nil
		case gerr != nil:
			return fmt.Errorf("saving pacing state %s: %w", key, gerr)
		}
		var cur gateState
		if err := json.Unmarshal(e.Value(), &cur); err != nil || cur.Holder != st.holder {
			return errFenced
		}
		rev = e.Revision() // our own earlier write landed though we saw an error
	}
	return fmt.Errorf("saving pacing state %s: revision keeps moving", key)
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}
