package budget

import (
	"context"
	"sync"
	"time"
)

// A campaign over AD users writes pwdLastSet=0 in AD; the cloud follow-up of
// each write comes back through the live pipeline (ingest, evaluator,
// actuator) like a helpdesk reset. The campaign marks the users it wrote, so
// that the actuator writes their follow-ups at campaign priority; and, when
// an actuator in the same process settles them (HoldFollowUps), the
// campaign's AD lane waits while too many are outstanding, so that the
// follow-ups never fill the actuator's queue ahead of live resets.

// ownTTL is how long a campaign's AD write marks the user's next actions.
const ownTTL = time.Hour

// followUpWait is how long an unsettled follow-up holds its place in the
// outstanding count: one settled by another replica's actuator is never
// settled here.
const followUpWait = 2 * time.Minute

type ownWrites struct {
	mu      sync.Mutex
	at      map[string]time.Time // objectGUID -> when the campaign wrote it
	pending map[string]time.Time // written, follow-up not yet settled
	limit   int                  // 0: the AD lane never waits
	marks   int
	changed chan struct{}
}

// HoldFollowUps makes a campaign's AD lane wait while limit of its cloud
// follow-ups are outstanding (marked and not yet settled by the actuator).
func (s *Scheduler) HoldFollowUps(limit int) {
	s.own.mu.Lock()
	defer s.own.mu.Unlock()
	s.own.limit = max(limit, 0)
	if s.own.changed == nil {
		s.own.changed = make(chan struct{})
	}
}

// MarkOwn records that a campaign is about to write user guid's pwdLastSet
// in AD; it first waits while too many follow-ups are outstanding.
func (s *Scheduler) MarkOwn(ctx context.Context, guid string) error {
	o := &s.own
	for {
		o.mu.Lock()
		now := s.now()
		for g, t := range o.pending {
			if now.Sub(t) > followUpWait {
				delete(o.pending, g)
			}
		}
		if o.limit == 0 || len(o.pending) < o.limit {
			break
		}
		ch := o.changed
		o.mu.Unlock()
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-ch:
			t.Stop()
		case <-t.C:
		}
	}
	defer o.mu.Unlock()
	now := s.now()
	if o.marks++; o.marks%1024 == 0 {
		for g, t := range o.at {
			if now.Sub(t) > ownTTL {
				delete(o.at, g)
			}
		}
	}
	o.at[guid] = now
	if o.limit > 0 {
		if o.pending == nil {
			o.pending = map[string]time.Time{}
		}
		o.pending[guid] = now
	}
	return nil
}

// OwnWrite reports whether a campaign wrote user guid's pwdLastSet within
// the last hour: that user's must-change action is campaign work.
func (s *Scheduler) OwnWrite(guid string) bool {
	if guid == "" {
		return false
	}
	s.own.mu.Lock()
	defer s.own.mu.Unlock()
	t, ok := s.own.at[guid]
	return ok && s.now().Sub(t) <= ownTTL
}

// Settled records that the follow-up of a campaign's AD write was handled.
func (s *Scheduler) Settled(guid string) {
	o := &s.own
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.pending[guid]; !ok {
		return
	}
	delete(o.pending, guid)
	close(o.changed)
	o.changed = make(chan struct{})
}

// MarkOwn records a campaign's AD write (see Scheduler.MarkOwn).
func (l *Lane) MarkOwn(ctx context.Context, guid string) error { return l.s.MarkOwn(ctx, guid) }
