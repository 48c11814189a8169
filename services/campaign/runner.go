package campaign

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/mustchange"
	"github.com/pwsync/pwsync/shared/natsx"
)

// Publisher publishes with a message ID (JetStream deduplicates on it).
type Publisher interface {
	PublishJSON(ctx context.Context, subject, msgID string, v any) (duplicate bool, err error)
}

// RunConfig tunes the runner.
type RunConfig struct {
	Concurrency   int           // $batch requests in flight (default 4)
	ADConcurrency int           // LDAP writers (default 4)
	MaxAttempts   int           // per step, 429s not counted (default 8)
	WithMFA       bool          // forceChangePasswordNextSignInWithMfa
	UncertainWait time.Duration // before reading back a write a stopped run left unanswered (default 30s)
	// VerifyDelay: a must-change Graph accepted is read back this long
	// after the answer (Graph's replicas converge; a stale read would
	// trigger a needless fallback). Default 2s.
	VerifyDelay time.Duration
	RetryBase   time.Duration // first retry delay after a 5xx (default 500ms)
	RetryMax    time.Duration // default 30s
	PollEvery   time.Duration // how often the runner looks for work and for pause/cancel (default 500ms)
	StatsEvery  time.Duration // default 1s
	// BreakGlassEvery: how often a run reads the break-glass accounts again
	// (default 30s); every write is checked against the last read.
	BreakGlassEvery time.Duration
	// ADOutageAlert: a DC unreachable this long alerts the admins, and its
	// return too (default 2m).
	ADOutageAlert time.Duration
	// RiskInterval is the least time between two Identity Protection calls
	// of the risk lane (confirmCompromised, its read-backs): Graph allows 1
	// request per second per tenant for all apps there, outside the
	// directory write budget. Default 1s.
	RiskInterval time.Duration
	// GraphBaseURL is graph.base_url ("https://graph.microsoft.com/v1.0" or
	// a national cloud's): the pending group's $ref names the user by a URL
	// on it, and Graph refuses one on another host. Required.
	GraphBaseURL string
}

func (c RunConfig) withDefaults() RunConfig {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Concurrency, 4)
	def(&c.ADConcurrency, 4)
	def(&c.MaxAttempts, 8)
	defd(&c.UncertainWait, 30*time.Second)
	defd(&c.VerifyDelay, 2*time.Second)
	defd(&c.RetryBase, 500*time.Millisecond)
	defd(&c.RetryMax, 30*time.Second)
	defd(&c.PollEvery, 500*time.Millisecond)
	defd(&c.StatsEvery, time.Second)
	defd(&c.BreakGlassEvery, 30*time.Second)
	defd(&c.ADOutageAlert, 2*time.Minute)
	defd(&c.RiskInterval, time.Second)
	return c
}

// backoff is the delay before attempt n+1 after a server error.
func (c RunConfig) backoff(attempts int) time.Duration {
	d := c.RetryBase << min(attempts, 10)
	return min(d, c.RetryMax)
}

// LeaseKey is the lease the runner holds (natsx.BucketLeases).
const LeaseKey = natsx.LeaseCampaignRunner

// runner executes running campaigns, one at a time (they share the write
// budget), on the one replica holding LeaseKey (Service.Run).
type runner struct {
	store      *Store
	batch      graph.Batcher
	ad         func(domain string) (ADWriter, error) // nil: no AD
	risk       RiskMarker                            // nil: confirm_compromised campaigns fail
	pub        Publisher
	pacer      *Pacer
	breakGlass func(ctx context.Context, domain string) (*BreakGlass, error) // nil: the preview's check alone
	cfg        RunConfig
	log        zerolog.Logger
	now        func() time.Time
	// riskNext: no Identity Protection call before; kept across runs, so
	// that a pause and resume keeps the pace (runs are one at a time).
	riskNext time.Time
}

// run picks up running campaigns until ctx ends.
func (r *runner) run(ctx context.Context) error {
	for {
		cs, err := r.store.List(ctx)
		if err != nil && ctx.Err() == nil {
			r.log.Warn().Err(err).Msg("listing campaigns")
		}
		slices.Reverse(cs) // oldest first
		for _, c := range cs {
			if c.State != StateRunning || ctx.Err() != nil {
				continue
			}
			if err := r.runOne(ctx, c.ID); err != nil && ctx.Err() == nil {
				r.log.Error().Err(err).Str("campaign", c.ID).Msg("campaign run stopped")
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.cfg.PollEvery):
		}
	}
}

// item is one step of one user, waiting or in flight.
type item struct {
	idx       int
	step      Step
	attempts  int
	notBefore time.Time
	verify    bool      // read back before writing
	sentAt    time.Time // of the write being verified
	// verify_must_change: the fallback write due or in flight ("" = the
	// read-back itself) and those applied.
	fallback mustchange.Write
	fbDone   []mustchange.Write
	member   *graph.BatchResponse // checkPendingMembers' answer, during a read-back
}

// lane is one way a run's writes leave: the Graph lane ($batch, paced by
// the write budget), the AD lane (LDAP) and the risk lane (Identity
// Protection, paced on its own).
type lane interface {
	// load queues the work the ledger's records leave (ctx: the run's
	// parent context).
	load(ctx context.Context)
	// run sends work until none is left or ctx ends; work it starts is
	// added to work and finishes under parent.
	run(ctx, parent context.Context, work *sync.WaitGroup)
	// open counts the steps not yet terminal.
	open() int64
}

// run is one campaign being executed: the runner orchestrates its progress
// ledger and its two lanes.
type run struct {
	r       *runner
	c       Campaign
	targets []Target
	log     zerolog.Logger
	ledger  *ledger
	guard   *breakGlassWatch
	graph   *graphLane
	ad      *adLane
	risk    *riskLane
}

func (r *runner) runOne(parent context.Context, id string) error {
	c, _, err := r.store.Get(parent, id)
	if err != nil {
		return err
	}
	log := r.log.With().Str("campaign", id).Logger()
	x := &run{r: r, c: c, log: log, guard: &breakGlassWatch{read: r.breakGlass, domain: c.Spec.Domain, every: r.cfg.BreakGlassEvery,
		now: r.now, log: log}}
	if x.targets, err = r.store.Targets(parent, id, c.Targets); err != nil {
		return x.fail(parent, err)
	}
	var ad ADWriter
	if c.Spec.Actions.RequireChange && slices.ContainsFunc(x.targets, func(t Target) bool { return t.Kind == KindSynced }) {
		if r.ad == nil {
			return x.fail(parent, errors.New("synced users selected but no AD domain is configured"))
		}
		if ad, err = r.ad(c.Spec.Domain); err != nil {
			return x.fail(parent, err)
		}
	}
	if c.Spec.Actions.ConfirmCompromised && r.risk == nil {
		return x.fail(parent, errors.New("confirm_compromised is set but this runner has no Identity Protection client"))
	}
	if err := x.guard.first(parent); err != nil {
		return err
	}
	x.ledger = &ledger{store: r.store, c: c, targets: x.targets, log: log, now: r.now, auditW: audit.NewWriter(r.pub, r.now),
		prog: map[int]*Progress{}}
	if err := x.ledger.load(parent); err != nil {
		return err
	}
	x.graph, x.ad, x.risk = newGraphLane(x, r.batch, r.pacer), newADLane(x, ad, r.pacer), newRiskLane(x, r.risk)
	x.ledger.open = func() (int64, int64, int64) { return x.graph.open(), x.ad.open(), x.risk.open() }
	// The AD and risk lanes' workers start first; the Graph lane dispatches until done.
	lanes := []lane{x.ad, x.risk, x.graph}
	for _, l := range lanes {
		l.load(parent)
	}
	log.Info().Int("users", len(x.targets)).Int64("graph_steps", x.graph.open()).Int64("ad_steps", x.ad.open()).
		Int64("risk_steps", x.risk.open()).Int("done", x.ledger.totals().Done).Msg("campaign running")

	// ctx stops dispatching (pause, cancel, lease lost); work already sent
	// finishes under parent and is recorded.
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	var bg sync.WaitGroup
	bg.Go(func() { x.watchState(ctx, cancel) })
	bg.Go(func() { x.ledger.flushStats(ctx, r.cfg.StatsEvery) })
	bg.Go(func() { x.guard.watch(ctx) })

	var work sync.WaitGroup
	for _, l := range lanes {
		l.run(ctx, parent, &work)
	}
	work.Wait()
	r.riskNext = x.risk.next // the lane's goroutine has ended
	x.ad.stop()
	cancel()
	bg.Wait()
	x.ledger.saveStats(parent)

	if parent.Err() != nil || x.graph.open() > 0 || x.ad.open() > 0 || x.risk.open() > 0 {
		return nil // paused, cancelled or stopped: a later run continues
	}
	return x.finish(parent)
}

// finish moves a campaign whose steps have all ended to done.
func (x *run) finish(ctx context.Context) error {
	st := x.ledger.totals()
	if st.Excluded > 0 {
		x.log.Warn().Int("excluded", st.Excluded).Msg("users became break-glass after the preview and were not written")
	}
	if st.Failed > 0 {
		x.alert(ctx, "finished_with_failures", fmt.Sprintf("campaign %q finished: %d of %d users could not be reset "+
			"(pwsync campaign report %s)", x.c.Spec.Name, st.Failed, st.Done+st.Failed, x.c.ID))
	}
	if st.ConfirmFailed > 0 {
		x.alert(ctx, "confirm_compromised_failed", fmt.Sprintf("campaign %q finished: %d of %d users could not be marked compromised "+
			"in Entra ID Protection; their password work is not affected (step confirm_compromised in pwsync campaign report %s; "+
			"a 403 means no Entra ID P2 licence or no IdentityRiskyUser.ReadWrite.All permission)",
			x.c.Spec.Name, st.ConfirmFailed, st.Confirmed+st.ConfirmFailed, x.c.ID))
	}
	_, err := x.r.store.Update(ctx, x.c.ID, func(c *Campaign) error {
		if c.State != StateRunning {
			return nil
		}
		note := fmt.Sprintf("%d done, %d failed", st.Done, st.Failed)
		if st.Confirmed+st.ConfirmFailed > 0 {
			note += fmt.Sprintf(", %d marked compromised, %d marks failed", st.Confirmed, st.ConfirmFailed)
		}
		if st.Excluded > 0 {
			note += fmt.Sprintf(", %d excluded (break-glass since the preview)", st.Excluded)
		}
		if err := c.move(StateDone, "runner", x.r.now().UTC(), note); err != nil {
			return err
		}
		c.FinishedAt = c.UpdatedAt
		return nil
	})
	x.log.Info().Int("done", st.Done).Int("failed", st.Failed).Msg("campaign finished")
	return err
}

func (x *run) fail(ctx context.Context, cause error) error {
	x.alert(ctx, "failed", fmt.Sprintf("campaign %q failed: %v", x.c.Spec.Name, cause))
	_, err := x.r.store.Update(ctx, x.c.ID, func(c *Campaign) error {
		if err := c.move(StateFailed, "runner", x.r.now().UTC(), cause.Error()); err != nil {
			return err
		}
		c.Error, c.FinishedAt = cause.Error(), c.UpdatedAt
		return nil
	})
	return errors.Join(cause, err)
}

// alert tells the admins (the notifier posts alerts to the Teams Workflows
// webhook). It is published before the state moves: a crash in between
// publishes it again on the next run, and the message ID (JetStream's
// duplicate window) and the notifier's ledger (keyed by the action ID) make
// the admins see it once; published after, a crash could lose it.
func (x *run) alert(ctx context.Context, what, reason string) {
	if x.c.Spec.Reason != "" {
		reason += "; reason: " + x.c.Spec.Reason
	}
	a := events.Action{ID: events.KeySafe("campaign." + x.c.ID + ".alert." + what), Kind: events.ActionAlert, Rule: "campaign",
		Reason: reason, EventID: "campaign." + x.c.ID, EventTime: x.r.now().UTC(), Campaign: x.c.ID}
	if _, err := x.r.pub.PublishJSON(ctx, a.Subject(), a.ID, a); err != nil {
		x.log.Error().Err(err).Str("alert", reason).Msg("publishing the campaign alert failed")
	}
}

// watchState cancels dispatching when the campaign leaves running.
func (x *run) watchState(ctx context.Context, cancel func()) {
	tick(ctx, x.r.cfg.PollEvery, func() bool {
		c, _, err := x.r.store.Get(ctx, x.c.ID)
		if err == nil && c.State != StateRunning {
			x.log.Info().Str("state", string(c.State)).Msg("campaign no longer running: stopping dispatch")
			cancel()
			return false
		}
		return true
	})
}

// tick calls fn every d until ctx ends or fn says to stop.
func tick(ctx context.Context, d time.Duration, fn func() (more bool)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !fn() {
				return
			}
		}
	}
}

// breakGlassWatch is a run's last read of the domain's break-glass
// accounts: an account that became break-glass after the preview is not
// written.
type breakGlassWatch struct {
	read   func(ctx context.Context, domain string) (*BreakGlass, error) // nil: no check beyond the preview's
	domain string
	every  time.Duration
	now    func() time.Time
	log    zerolog.Logger
	last   atomic.Pointer[BreakGlass]
}

// first reads the accounts when a run starts: it does not start while
// that fails.
func (w *breakGlassWatch) first(ctx context.Context) error {
	if w.read == nil {
		return nil
	}
	bg, err := w.read(ctx, w.domain)
	if err != nil {
		return fmt.Errorf("reading the break-glass accounts (nothing is written until it works): %w", err)
	}
	w.last.Store(bg)
	return nil
}

// watch reads the accounts again every w.every; a failed read keeps the
// last one (logged).
func (w *breakGlassWatch) watch(ctx context.Context) {
	if w.read == nil {
		return
	}
	tick(ctx, w.every, func() bool {
		bg, err := w.read(ctx, w.domain)
		if err != nil {
			if ctx.Err() == nil {
				w.log.Warn().Err(err).Msg("reading the break-glass accounts again failed; the last read still applies")
			}
			return true
		}
		w.last.Store(bg)
		return true
	})
}

// exclude records through record, instead of sending it, a step of a user
// who became break-glass after the preview; it reports whether it did.
func (w *breakGlassWatch) exclude(ctx context.Context, it *item, t Target, record func(context.Context, *item, StepResult)) bool {
	reason := w.last.Load().Reason(t)
	if reason == "" {
		return false
	}
	record(ctx, it, StepResult{Status: StatusExcluded, At: w.now().UTC(), Detail: reason + ", since the preview: not written"})
	return true
}
