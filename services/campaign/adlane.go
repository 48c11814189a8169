package campaign

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/metrics"
)

// ADWriter writes the helpdesk's "must change at next logon" in one domain.
type ADWriter interface {
	// ForceChange sets pwdLastSet=0; the answer is LDAP's result text.
	// Errors for which the write surely did not happen wrap ErrDefinite;
	// those for which it was never sent (no connection) wrap ErrUnreachable.
	ForceChange(ctx context.Context, dn string) (string, error)
	// PwdLastSet reads the user's pwdLastSet (read-back after an uncertain write).
	PwdLastSet(ctx context.Context, dn string) (int64, error)
}

// ErrDefinite marks a write error whose request surely had no effect (LDAP
// answered with a result code): no read-back needed, no retry helps.
var ErrDefinite = errors.New("refused")

// ErrUnreachable marks an AD request that was never sent: no connection to
// the DC could be made. It is not an attempt: the AD lane waits for the DC,
// for as long as it takes, instead of failing users over an outage.
var ErrUnreachable = errors.New("DC unreachable")

// ownMarker marks a user whose cloud follow-up is the campaign's own
// (budget.Lane): the actuator files it as campaign work; MarkOwn waits while
// too many follow-ups are outstanding there.
type ownMarker interface {
	MarkOwn(ctx context.Context, guid string) error
}

// adLane writes pwdLastSet=0 for synced users, ADConcurrency at a time.
type adLane struct {
	c       Campaign
	targets []Target
	ad      ADWriter
	own     ownMarker
	ledger  recorder
	guard   *breakGlassWatch
	alert   func(ctx context.Context, what, reason string)
	cfg     RunConfig
	now     func() time.Time
	log     zerolog.Logger
	out     atomic.Int64  // steps not yet terminal
	done    chan struct{} // closed when out reaches 0
	stopped chan struct{} // closed when the run's workers have ended
	ch      chan *item

	mu sync.Mutex
	// down is the DC outage the lane is waiting out: consecutive
	// unreachable answers and when the next request may go.
	down struct {
		fails   int
		until   time.Time
		alerted bool
	}
}

func newADLane(x *run, ad ADWriter, own ownMarker) *adLane {
	return &adLane{c: x.c, targets: x.targets, ad: ad, own: own, ledger: x.ledger, guard: x.guard, alert: x.alert,
		cfg: x.r.cfg, now: x.r.now, log: x.log, done: make(chan struct{}), stopped: make(chan struct{}), ch: make(chan *item, 1024)}
}

// due: the user's AD step is this campaign's and not ended.
func (a *adLane) due(t Target) bool {
	return t.Kind == KindSynced && a.c.Spec.Actions.RequireChange && !a.ledger.result(t.Idx, StepADMustChange).Terminal()
}

// load counts the AD steps left and starts feeding them (ctx: the run's
// parent context).
func (a *adLane) load(ctx context.Context) {
	for _, t := range a.targets {
		if a.due(t) {
			a.out.Add(1)
		}
	}
	if a.out.Load() == 0 {
		close(a.done)
		return
	}
	go a.feed(ctx, a.now())
}

// feed queues the AD steps at start (the channel is bounded).
func (a *adLane) feed(ctx context.Context, now time.Time) {
	for _, t := range a.targets {
		if !a.due(t) {
			continue
		}
		res := a.ledger.result(t.Idx, StepADMustChange)
		it := &item{idx: t.Idx, step: StepADMustChange}
		if res != nil && res.Status == StatusUncertain {
			it.verify, it.sentAt, it.attempts = true, res.At, res.Attempts
			if wait := time.Until(res.At.Add(a.cfg.UncertainWait)); wait > 0 {
				it.notBefore = now.Add(wait)
			}
		}
		select {
		case a.ch <- it:
		case <-a.stopped:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (a *adLane) open() int64 { return a.out.Load() }

// run starts the workers; they end when no AD step is left or ctx ends.
func (a *adLane) run(ctx, parent context.Context, work *sync.WaitGroup) {
	for range a.cfg.ADConcurrency {
		work.Add(1)
		go func() { defer work.Done(); a.worker(ctx, parent) }()
	}
}

// stop ends the lane once its workers have: pending retries give up (a
// later run reloads them). The outage gauge is this run's: a later one
// finds out for itself.
func (a *adLane) stop() {
	close(a.stopped)
	metrics.CampaignADUnreachable.DeleteLabelValues(a.c.ID)
}

// record stores a result; a terminal one ends the step's accounting.
func (a *adLane) record(ctx context.Context, it *item, res StepResult) {
	if terminal, _ := a.ledger.put(ctx, it, res); terminal && a.out.Add(-1) == 0 {
		close(a.done)
	}
}

// worker writes pwdLastSet=0 for synced users until none is left or ctx
// ends. Before a write it records "uncertain"; after a stop, such a user's
// pwdLastSet is read first: 0 means the write (or someone's) took.
func (a *adLane) worker(ctx, parent context.Context) {
	for {
		var it *item
		select {
		case <-ctx.Done():
			return
		case <-a.done:
			return
		case it = <-a.ch:
		}
		if wait := time.Until(later(it.notBefore, a.downUntil())); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		a.step(parent, it)
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// downUntil is when the AD lane may try the DC again after an outage.
func (a *adLane) downUntil() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.down.until
}

// unreachable: the DC could not be reached, so the request was never sent
// and is not counted as an attempt. Every AD worker waits (backing off to
// RetryMax) before the next request: an outage neither fails users nor
// turns into a dial storm, and the campaign finishes once the DC is back.
// Past RunConfig.ADOutageAlert it alerts the admins, once per outage.
func (a *adLane) unreachable(ctx context.Context, err error) {
	now := a.now()
	var first bool
	var since time.Time
	a.mu.Lock()
	a.down.fails++
	a.down.until = now.Add(a.cfg.backoff(a.down.fails))
	a.ledger.count(func(s *Stats) {
		if first = s.ADUnreachable.IsZero(); first {
			s.ADUnreachable = now.UTC()
		}
		since = s.ADUnreachable
	})
	alert := !a.down.alerted && now.Sub(since) >= a.cfg.ADOutageAlert
	a.down.alerted = a.down.alerted || alert
	a.mu.Unlock()
	if first {
		metrics.CampaignADUnreachable.WithLabelValues(a.c.ID).Set(1)
		a.log.Warn().Err(err).Msg("the DC is unreachable: AD writes wait for it")
	}
	if alert {
		a.alert(ctx, fmt.Sprintf("ad_unreachable.%d", since.Unix()), fmt.Sprintf("campaign %q: the DC of %s has been unreachable since %s; "+
			"its AD writes wait for it (%s)", a.c.Spec.Name, a.c.Spec.Domain, since.Format(time.RFC3339), err))
	}
}

// reachable ends an outage: the DC answered. An outage the admins were
// alerted about is followed by the all-clear.
func (a *adLane) reachable(ctx context.Context) {
	var since time.Time
	a.mu.Lock()
	alerted := a.down.alerted
	a.ledger.count(func(s *Stats) { since, s.ADUnreachable = s.ADUnreachable, time.Time{} })
	a.down.fails, a.down.until, a.down.alerted = 0, time.Time{}, false
	a.mu.Unlock()
	if since.IsZero() {
		return
	}
	metrics.CampaignADUnreachable.WithLabelValues(a.c.ID).Set(0)
	took := a.now().Sub(since)
	a.log.Info().Dur("unreachable_for", took).Msg("the DC answers again: AD writes go on")
	if alerted {
		a.alert(ctx, fmt.Sprintf("ad_reachable.%d", since.Unix()), fmt.Sprintf("campaign %q: the DC of %s answers again after %s unreachable; "+
			"its AD writes go on", a.c.Spec.Name, a.c.Spec.Domain, took.Round(time.Second)))
	}
}

// requeue puts it back in the AD lane, from a goroutine that ends with
// the run, as a retry does.
func (a *adLane) requeue(ctx context.Context, it *item) {
	go func() {
		select {
		case a.ch <- it:
		case <-a.done:
		case <-a.stopped:
		case <-ctx.Done():
		}
	}()
}

func (a *adLane) step(ctx context.Context, it *item) {
	dn := a.targets[it.idx].DN
	retry := func() {
		it.notBefore = a.now().Add(a.cfg.backoff(it.attempts))
		a.requeue(ctx, it)
	}
	if it.verify && a.readBack(ctx, it, dn, retry) {
		return
	}
	if a.guard.exclude(ctx, it, a.targets[it.idx], a.record) {
		return
	}
	// The cloud follow-up of this write is campaign work for the actuator;
	// this waits while too many follow-ups are outstanding there.
	if err := a.own.MarkOwn(ctx, a.targets[it.idx].ObjectGUID); err != nil {
		a.requeue(ctx, it)
		return
	}
	it.attempts++
	at := a.now().UTC()
	a.record(ctx, it, StepResult{Status: StatusUncertain, At: at, Detail: "LDAP modify sent"})
	ans, err := a.ad.ForceChange(ctx, dn)
	if errors.Is(err, ErrUnreachable) {
		// Not sent. The "modify sent" record stays: it only makes a
		// restart read back first, which is harmless.
		it.attempts--
		a.unreachable(ctx, err)
		a.requeue(ctx, it)
		return
	}
	it.sentAt = at
	a.reachable(ctx)
	switch {
	case err == nil:
		a.ledger.count(func(s *Stats) { s.LDAP++ })
		a.record(ctx, it, StepResult{Status: StatusDone, At: a.now().UTC(), LDAP: ans})
	case errors.Is(err, ErrDefinite) || it.attempts >= a.cfg.MaxAttempts:
		a.record(ctx, it, StepResult{Status: StatusFailed, At: a.now().UTC(), LDAP: err.Error()})
	default:
		a.ledger.count(func(s *Stats) { s.Retries++ })
		a.record(ctx, it, StepResult{Status: StatusUncertain, At: at, LDAP: err.Error()})
		it.verify = true
		retry()
	}
}

// readBack reads pwdLastSet before an uncertain write is sent again; it
// reports whether the step is settled (or waits to be read again).
func (a *adLane) readBack(ctx context.Context, it *item, dn string, retry func()) bool {
	v, err := a.ad.PwdLastSet(ctx, dn)
	if errors.Is(err, ErrUnreachable) {
		a.unreachable(ctx, err)
		a.requeue(ctx, it)
		return true
	}
	a.reachable(ctx)
	if err != nil {
		it.attempts++
		if it.attempts >= a.cfg.MaxAttempts {
			a.record(ctx, it, StepResult{Status: StatusFailed, At: a.now().UTC(), LDAP: err.Error()})
			return true
		}
		retry()
		return true
	}
	switch {
	case v == 0:
		a.ledger.count(func(s *Stats) { s.Verified++ })
		a.record(ctx, it, StepResult{Status: StatusDone, At: a.now().UTC(), LDAP: "pwdLastSet=0 (read back)", Verified: true})
		return true
	case v > 0 && v != a.targets[it.idx].PwdLastSet && !it.sentAt.IsZero() && !events.FileTime(v).Before(it.sentAt.Add(-time.Second)):
		// A password set since the write was sent (a second of clock
		// skew allowed): the write took and the user has changed the
		// password since, or changed it anyway. Writing again would
		// force a second change. The value read when the campaign was
		// planned, found again, is no such change: a password set in
		// the second before the write (the skew allowed) is not
		// mistaken for one set after it.
		a.ledger.count(func(s *Stats) { s.Verified++ })
		a.record(ctx, it, StepResult{Status: StatusDone, At: a.now().UTC(), Verified: true,
			LDAP:   "pwdLastSet=" + events.FileTime(v).UTC().Format(time.RFC3339Nano) + " (read back)",
			Detail: "password changed after the unanswered write: counted as done"})
		return true
	}
	it.verify = false
	return false
}
