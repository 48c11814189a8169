// Package scheduler fires users' password expiry points (lead-day notices,
// the expiry itself) on time. It runs on one replica at a time, under a KV
// lease, and keeps no state of its own: the schedule is derived from the
// users bucket (each user's AD state and the points already handled, which
// the evaluator records), so a restart or a failover rebuilds it exactly and
// fires at once whatever fell due meanwhile. Firing publishes an
// events.timer.expiry event with a stable ID; the evaluator decides what it
// means. A periodic sweep re-reads every user, catching anything the watch
// missed.
package scheduler

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/lease"
	"github.com/pwsync/pwsync/shared/natsx"
)

// LeaseKey is the scheduler's singleton lease in natsx.BucketLeases.
const LeaseKey = natsx.LeaseScheduler

// Deps is what the scheduler needs from the process.
type Deps struct {
	JS     jetstream.JetStream
	Policy rules.Policy
	// Sweep: how often the whole users bucket is re-read (default 1h).
	Sweep time.Duration
	// MaxSleep bounds a wait for the next due point, so that a clock that
	// jumps (tests, a corrected host clock) is noticed (default 1m).
	MaxSleep time.Duration
	Now      func() time.Time // default time.Now
	Holder   string           // lease holder name (host + pid)
	Log      zerolog.Logger
}

// Service is the expiry scheduler.
type Service struct {
	cfg    Deps
	users  jetstream.KeyValue
	leases jetstream.KeyValue
	pub    *natsx.Publisher
	log    zerolog.Logger
	fired  func(events.ExpiryTimer) // test hook
}

// New opens the buckets.
func New(ctx context.Context, cfg Deps) (*Service, error) {
	if cfg.Sweep <= 0 {
		cfg.Sweep = time.Hour
	}
	if cfg.MaxSleep <= 0 {
		cfg.MaxSleep = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	users, err := natsx.Bucket(ctx, cfg.JS, natsx.BucketUsers)
	if err != nil {
		return nil, err
	}
	leases, err := natsx.Bucket(ctx, cfg.JS, natsx.BucketLeases)
	if err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, users: users, leases: leases, pub: natsx.NewPublisher(cfg.JS),
		log: cfg.Log.With().Str("component", "expiry_scheduler").Logger()}, nil
}

// Run holds the lease and schedules until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	if !s.cfg.Policy.Expiry.Enabled {
		return nil
	}
	l := lease.New(s.leases, LeaseKey, s.cfg.Holder, natsx.LeaseRenew, s.log)
	return l.Run(ctx, s.work)
}

// work runs while the lease is held: one watch of the users bucket per
// sweep interval, each starting from every key's current value.
func (s *Service) work(ctx context.Context) error {
	for {
		err := s.round(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err // the lease is given up; another replica (or this one) retries
		}
	}
}

// round builds the schedule from the users bucket, keeps it current from
// the watch, and fires what falls due, until the sweep interval is over.
func (s *Service) round(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := s.users.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("watching bucket %s: %w", natsx.BucketUsers, err)
	}
	defer func() { _ = w.Stop() }()
	q := newQueue()
	sweepEnd := time.NewTimer(s.cfg.Sweep)
	defer sweepEnd.Stop()
	initial, started := true, time.Now()
	for {
		wait := s.cfg.MaxSleep
		if initial {
			wait = time.Hour // nothing fires before the bucket is read
		} else if next, ok := q.peek(); ok {
			if d := next.Due.Sub(s.cfg.Now()); d < wait {
				wait = max(d, 0)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-sweepEnd.C:
			t.Stop()
			s.log.Debug().Int("scheduled", q.Len()).Msg("sweep: re-reading every user")
			return nil
		case e, ok := <-w.Updates():
			t.Stop()
			if !ok {
				return errors.New("users watch closed")
			}
			if e == nil { // every current value was delivered
				initial = false
				s.log.Info().Int("scheduled", q.Len()).Dur("took", time.Since(started)).Msg("expiry schedule loaded")
				continue
			}
			s.track(q, e)
			continue
		case <-t.C:
		}
		if err := s.fireDue(ctx, q); err != nil {
			return err
		}
	}
}

// track (re)computes one user's next due point from its stored state.
func (s *Service) track(q *queue, e jetstream.KeyValueEntry) {
	var st rules.State
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		s.log.Warn().Err(err).Str("user_key", e.Key()).Msg("unreadable user state; not scheduled")
		q.remove(e.Key())
		return
	}
	tm, ok := rules.NextDue(s.cfg.Policy, st)
	if !ok {
		q.remove(e.Key())
		return
	}
	q.set(e.Key(), tm)
}

// fireDue publishes every point due by now. A fired point leaves the queue:
// the evaluator's state update (which comes back through the watch) brings
// the user's next one. A point whose timer the evaluator finds already
// handled updates nothing, so nothing loops.
func (s *Service) fireDue(ctx context.Context, q *queue) error {
	now := s.cfg.Now()
	for {
		next, ok := q.peek()
		if !ok || next.Due.After(now) {
			return nil
		}
		key := q.pop()
		ev, err := events.NewEnvelope(next.EventID(), events.SourceTimer, events.TypeExpiry, now, next)
		if err != nil {
			return err
		}
		dup, err := s.pub.PublishJSON(ctx, ev.Subject(), ev.ID, ev)
		if err != nil {
			q.set(key, next) // try again on the next wake
			return fmt.Errorf("firing %s: %w", ev.ID, err)
		}
		s.log.Info().Str("object_guid", next.ObjectGUID).Int("lead_days", next.LeadDays).Time("due", next.Due).
			Dur("late", now.Sub(next.Due)).Bool("duplicate", dup).Msg("expiry point fired")
		if s.fired != nil {
			s.fired(next)
		}
	}
}

// queue is a min-heap of users' next due points, one per user.
type queue struct {
	items []*item
	byKey map[string]*item
}

type item struct {
	key   string
	timer events.ExpiryTimer
	index int
}

func newQueue() *queue { return &queue{byKey: map[string]*item{}} }

func (q *queue) Len() int { return len(q.items) }
func (q *queue) Less(i, j int) bool {
	return q.items[i].timer.Due.Before(q.items[j].timer.Due)
}
func (q *queue) Swap(i, j int) {
	q.items[i], q.items[j] = q.items[j], q.items[i]
	q.items[i].index, q.items[j].index = i, j
}
func (q *queue) Push(x any) {
	it := x.(*item)
	it.index = len(q.items)
	q.items = append(q.items, it)
}
func (q *queue) Pop() any {
	it := q.items[len(q.items)-1]
	q.items = q.items[:len(q.items)-1]
	return it
}

func (q *queue) set(key string, t events.ExpiryTimer) {
	if it, ok := q.byKey[key]; ok {
		it.timer = t
		heap.Fix(q, it.index)
		return
	}
	it := &item{key: key, timer: t}
	q.byKey[key] = it
	heap.Push(q, it)
}

func (q *queue) remove(key string) {
	if it, ok := q.byKey[key]; ok {
		heap.Remove(q, it.index)
		delete(q.byKey, key)
	}
}

func (q *queue) peek() (events.ExpiryTimer, bool) {
	if len(q.items) == 0 {
		return events.ExpiryTimer{}, false
	}
	return q.items[0].timer, true
}

func (q *queue) pop() string {
	it := heap.Pop(q).(*item)
	delete(q.byKey, it.key)
	return it.key
}
