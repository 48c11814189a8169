package campaign

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/metrics"
	"github.com/pwsync/pwsync/shared/mustchange"
	"github.com/pwsync/pwsync/shared/natsx"
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
	return c
}

// LeaseKey is the lease the runner holds (natsx.BucketLeases).
const LeaseKey = natsx.LeaseCampaignRunner

// Runner executes running campaigns, one at a time (they share the write
// budget). Run it under a lease: exactly one replica may.
type Runner struct {
	Store *Store
	Batch graph.Batcher
	AD    func(domain string) (ADWriter, error) // nil: no AD
	Pub   Publisher
	Pacer *Pacer
	// BreakGlass reads the domain's break-glass accounts (Resolver.BreakGlass)
	// when a run starts and every Cfg.BreakGlassEvery: an account that
	// became break-glass after the preview is not written. A run does not
	// start while it fails. nil: no check beyond the preview's (tests).
	BreakGlass func(ctx context.Context, domain string) (*BreakGlass, error)
	Cfg        RunConfig
	Log        zerolog.Logger
	Now        func() time.Time
}

func (r *Runner) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Run picks up running campaigns until ctx ends.
func (r *Runner) Run(ctx context.Context) error {
	r.Cfg = r.Cfg.withDefaults()
	if u, err := url.Parse(r.Cfg.GraphBaseURL); err != nil || !u.IsAbs() || u.Host == "" {
		return fmt.Errorf("campaign runner: Graph base URL %q: want the absolute URL of graph.base_url", r.Cfg.GraphBaseURL)
	}
	for {
		cs, err := r.Store.List(ctx)
		if err != nil && ctx.Err() == nil {
			r.Log.Warn().Err(err).Msg("listing campaigns")
		}
		slices.Reverse(cs) // oldest first
		for _, c := range cs {
			if c.State != StateRunning || ctx.Err() != nil {
				continue
			}
			if err := r.runOne(ctx, c.ID); err != nil && ctx.Err() == nil {
				r.Log.Error().Err(err).Str("campaign", c.ID).Msg("campaign run stopped")
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.Cfg.PollEvery):
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

// run is one campaign being executed.
type run struct {
	r       *Runner
	c       Campaign
	targets []Target
	ad      ADWriter
	nonce   string
	seq     atomic.Int64
	log     zerolog.Logger

	mu       sync.Mutex
	prog     map[int]*Progress
	writeQ   []*item
	verifyQ  []*item
	changed  chan struct{}
	graphOut atomic.Int64 // graph steps not yet terminal
	adOut    atomic.Int64 // AD steps not yet terminal
	adDone   chan struct{}
	stopped  chan struct{} // closed when the run's workers have ended
	adCh     chan *item
	// adDown is the DC outage the AD lane is waiting out: consecutive
	// unreachable answers and when the next request may go.
	adDown struct {
		fails   int
		until   time.Time
		alerted bool
	}
	stripes [64]sync.Mutex // serialise each user's record writes
	stats   Stats
	samples []rateSample
	logged  time.Time
	auditW  *audit.Writer
	bg      atomic.Pointer[BreakGlass]
}

type rateSample struct {
	at       time.Time
	finished int
}

func (r *Runner) runOne(parent context.Context, id string) error {
	c, _, err := r.Store.Get(parent, id)
	if err != nil {
		return err
	}
	log := r.Log.With().Str("campaign", id).Logger()
	x := &run{r: r, c: c, log: log, prog: map[int]*Progress{}, changed: make(chan struct{}, 1),
		adDone: make(chan struct{}), stopped: make(chan struct{}), adCh: make(chan *item, 1024), auditW: audit.NewWriter(r.Pub, r.Now), nonce: fmt.Sprintf("%x", r.now().UnixNano())}
	if x.targets, err = r.Store.Targets(parent, id, c.Targets); err != nil {
		return x.fail(parent, err)
	}
	if c.Spec.Actions.RequireChange && slices.ContainsFunc(x.targets, func(t Target) bool { return t.Kind == KindSynced }) {
		if r.AD == nil {
			return x.fail(parent, errors.New("synced users selected but no AD domain is configured"))
		}
		if x.ad, err = r.AD(c.Spec.Domain); err != nil {
			return x.fail(parent, err)
		}
	}
	if r.BreakGlass != nil {
		bg, err := r.BreakGlass(parent, c.Spec.Domain)
		if err != nil {
			return fmt.Errorf("reading the break-glass accounts (nothing is written until it works): %w", err)
		}
		x.bg.Store(bg)
	}
	if err := x.load(parent); err != nil {
		return err
	}
	log.Info().Int("users", len(x.targets)).Int64("graph_steps", x.graphOut.Load()).Int64("ad_steps", x.adOut.Load()).
		Int("done", x.stats.Done).Msg("campaign running")

	// ctx stops dispatching (pause, cancel, lease lost); work already sent
	// finishes under parent and is recorded.
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	var bg sync.WaitGroup
	bg.Add(3)
	go func() { defer bg.Done(); x.watchState(ctx, cancel) }()
	go func() { defer bg.Done(); x.flushStats(ctx) }()
	go func() { defer bg.Done(); x.watchBreakGlass(ctx) }()

	var work sync.WaitGroup
	for range r.Cfg.ADConcurrency {
		work.Add(1)
		go func() { defer work.Done(); x.adWorker(ctx, parent) }()
	}
	x.dispatchGraph(ctx, parent, &work)
	work.Wait()
	close(x.stopped) // pending AD retries give up: a later run reloads them
	// The gauge is this run's: a later one finds out for itself.
	metrics.CampaignADUnreachable.DeleteLabelValues(x.c.ID)
	cancel()
	bg.Wait()
	x.saveStats(parent)

	if parent.Err() != nil || x.graphOut.Load() > 0 || x.adOut.Load() > 0 {
		return nil // paused, cancelled or stopped: a later run continues
	}
	if x.stats.Excluded > 0 {
		log.Warn().Int("excluded", x.stats.Excluded).Msg("users became break-glass after the preview and were not written")
	}
	if x.stats.Failed > 0 {
		x.alert(parent, "finished_with_failures", fmt.Sprintf("campaign %q finished: %d of %d users could not be reset "+
			"(pwsync campaign report %s)", x.c.Spec.Name, x.stats.Failed, x.stats.Done+x.stats.Failed, id))
	}
	_, err = r.Store.Update(parent, id, func(c *Campaign) error {
		if c.State != StateRunning {
			return nil
		}
		note := fmt.Sprintf("%d done, %d failed", x.stats.Done, x.stats.Failed)
		if x.stats.Excluded > 0 {
			note += fmt.Sprintf(", %d excluded (break-glass since the preview)", x.stats.Excluded)
		}
		if err := c.move(StateDone, "runner", r.now().UTC(), note); err != nil {
			return err
		}
		c.FinishedAt = c.UpdatedAt
		return nil
	})
	log.Info().Int("done", x.stats.Done).Int("failed", x.stats.Failed).Msg("campaign finished")
	return err
}

func (x *run) fail(ctx context.Context, cause error) error {
	x.alert(ctx, "failed", fmt.Sprintf("campaign %q failed: %v", x.c.Spec.Name, cause))
	_, err := x.r.Store.Update(ctx, x.c.ID, func(c *Campaign) error {
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
	if _, err := x.r.Pub.PublishJSON(ctx, a.Subject(), a.ID, a); err != nil {
		x.log.Error().Err(err).Str("alert", reason).Msg("publishing the campaign alert failed")
	}
}

// load rebuilds the work from KV: what is recorded is not redone; a write
// that was sent without a recorded answer (a batch intent, or a step left
// uncertain) is read back before it is written again.
func (x *run) load(ctx context.Context) error {
	progress, err := x.r.Store.AllProgress(ctx, x.c.ID)
	if err != nil {
		return err
	}
	intents, err := x.r.Store.Intents(ctx, x.c.ID)
	if err != nil {
		return err
	}
	for i := range progress {
		p := progress[i]
		if p.Steps == nil {
			p.Steps = map[Step]*StepResult{}
		}
		x.prog[i] = &p
	}
	// Intents first become durable "uncertain" records, then go.
	for seq, in := range intents {
		touched := map[int]bool{}
		for _, ref := range in.Items {
			p := x.progressOf(ref.Idx)
			if r := p.Steps[ref.Step]; r.Terminal() || r != nil && r.Status == StatusUncertain {
				continue
			}
			res := &StepResult{Status: StatusUncertain, At: in.At, Detail: "sent by a run that stopped before the answer", Fallback: ref.Fallback}
			if r := p.Steps[ref.Step]; r != nil {
				res.Attempts, res.FallbackDone = r.Attempts, r.FallbackDone
			}
			p.Steps[ref.Step] = res
			touched[ref.Idx] = true
		}
		for idx := range touched {
			if err := x.r.Store.PutProgress(ctx, x.c.ID, *x.prog[idx]); err != nil {
				return err
			}
		}
		if err := x.r.Store.DeleteIntent(ctx, x.c.ID, seq); err != nil {
			return err
		}
	}
	now := x.r.now()
	var settle []int // read-backs whose must_change ended without one due
	x.stats = Stats{Total: len(x.targets), Started: x.c.StartedAt}
	if old, err := x.r.Store.GetStats(ctx, x.c.ID); err == nil {
		x.stats.Writes, x.stats.Throttled, x.stats.Retries, x.stats.Verified, x.stats.LDAP =
			old.Writes, old.Throttled, old.Retries, old.Verified, old.LDAP
	}
	for _, t := range x.targets {
		p := x.progressOf(t.Idx)
		if v := p.Steps[StepVerifyMustChange]; v != nil && (v.Fallback != "" || len(v.FallbackDone) > 0) {
			x.stats.Fallbacks++ // from the records: the saved counter may lag a kill
		}
		steps := x.c.StepsFor(t)
		for _, st := range steps {
			res := p.Steps[st]
			if res.Terminal() {
				continue
			}
			it := &item{idx: t.Idx, step: st}
			if st == StepVerifyMustChange {
				x.graphOut.Add(1)
				if x.loadVerify(it, p, res) {
					settle = append(settle, t.Idx)
				}
				continue
			}
			if res != nil && res.Status == StatusUncertain {
				// The stopped run's request may still be on its way: read back
				// only once it must have been answered or abandoned.
				it.verify, it.sentAt, it.attempts = true, res.At, res.Attempts
				it.notBefore = res.At.Add(x.r.Cfg.UncertainWait)
			}
			switch {
			case st.Graph():
				x.graphOut.Add(1)
				if it.verify {
					x.verifyQ = append(x.verifyQ, it)
				} else {
					x.writeQ = append(x.writeQ, it)
				}
			case st == StepADMustChange:
				x.adOut.Add(1)
			}
		}
		x.countUser(t, steps, p)
	}
	if x.adOut.Load() == 0 {
		close(x.adDone)
	} else {
		go x.feedAD(ctx, now)
	}
	// Users whose Graph steps all ended before the stop but whose notice
	// was not recorded.
	for _, t := range x.targets {
		if x.notifyDue(t, x.prog[t.Idx]) {
			x.graphOut.Add(1) // the notice is dispatched like a Graph step
			x.writeQ = append(x.writeQ, &item{idx: t.Idx, step: StepNotify})
		}
	}
	// After the notices above: settling a read-back may make one due.
	for _, idx := range settle {
		x.afterMustChange(ctx, idx, *x.prog[idx].Steps[StepCloudMustChange])
	}
	return nil
}

// loadVerify queues a verify_must_change that has not ended, from its
// record: a read-back, a fallback write due, or one sent without a recorded
// answer (read back first). It reports true when the must_change ended
// without a read-back queued (a crash in between): afterMustChange settles it.
func (x *run) loadVerify(it *item, p *Progress, res *StepResult) bool {
	mc := p.Steps[StepCloudMustChange]
	if !mc.Terminal() {
		return false // queued when the must_change ends
	}
	if res != nil {
		it.fallback, it.fbDone, it.attempts = res.Fallback, res.FallbackDone, res.Attempts
	}
	switch {
	case res == nil:
		return true
	case res.Status == StatusUncertain && res.Fallback != "":
		it.verify, it.sentAt = true, res.At
		it.notBefore = res.At.Add(x.r.Cfg.UncertainWait)
		x.verifyQ = append(x.verifyQ, it)
	case res.Status == StatusFallback && res.Fallback != "":
		x.writeQ = append(x.writeQ, it)
	default: // read back (again)
		it.fallback = ""
		x.verifyQ = append(x.verifyQ, it)
	}
	return false
}

// afterMustChange queues the read-back of a must_change that ended, or
// settles it: nothing to read when the PATCH failed; already read when an
// unanswered PATCH was confirmed by reading the flag back.
func (x *run) afterMustChange(ctx context.Context, idx int, res StepResult) {
	if x.c.Verify == nil {
		return
	}
	it := &item{idx: idx, step: StepVerifyMustChange}
	switch {
	case res.Status == StatusExcluded:
		x.record(ctx, it, StepResult{Status: StatusExcluded, At: x.r.now().UTC(), Detail: res.Detail})
	case res.Status != StatusDone:
		x.record(ctx, it, StepResult{Status: StatusSkipped, At: x.r.now().UTC(), Detail: "must_change " + res.Status + ": nothing to read back"})
	case res.Verified:
		x.record(ctx, it, StepResult{Status: StatusDone, At: x.r.now().UTC(), HTTP: res.HTTP,
			Detail: "flag confirmed by the read-back of the unanswered PATCH"})
	default:
		it.notBefore = x.r.now().Add(x.r.Cfg.VerifyDelay)
		x.enqueue(it, true)
	}
}

// feedAD queues the AD steps at start (the channel is bounded).
func (x *run) feedAD(ctx context.Context, now time.Time) {
	for _, t := range x.targets {
		if t.Kind != KindSynced || !x.c.Spec.Actions.RequireChange {
			continue
		}
		x.mu.Lock()
		res := x.prog[t.Idx].Steps[StepADMustChange]
		x.mu.Unlock()
		if res.Terminal() {
			continue
		}
		it := &item{idx: t.Idx, step: StepADMustChange}
		if res != nil && res.Status == StatusUncertain {
			it.verify, it.sentAt, it.attempts = true, res.At, res.Attempts
			if wait := time.Until(res.At.Add(x.r.Cfg.UncertainWait)); wait > 0 {
				it.notBefore = now.Add(wait)
			}
		}
		select {
		case x.adCh <- it:
		case <-x.stopped:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (x *run) progressOf(idx int) *Progress {
	p := x.prog[idx]
	if p == nil {
		p = &Progress{Idx: idx, Steps: map[Step]*StepResult{}}
		x.prog[idx] = p
	}
	return p
}

// countUser adds a user whose steps are all terminal to the counters; x.mu
// held or single-threaded.
func (x *run) countUser(t Target, steps []Step, p *Progress) {
	failed, excluded := false, false
	for _, st := range steps {
		r := p.Steps[st]
		if !r.Terminal() {
			return
		}
		failed = failed || r.Status == StatusFailed
		excluded = excluded || r.Status == StatusExcluded
	}
	switch {
	case failed:
		x.stats.Failed++
	case excluded:
		x.stats.Excluded++
	default:
		x.stats.Done++
	}
}

// notifyDue: the user gets a notice, its Graph steps have all ended, at
// least one of them (if any) succeeded, and the notice is not recorded.
func (x *run) notifyDue(t Target, p *Progress) bool {
	due, _ := x.noticeState(t, p)
	return due
}

// noticeState says whether the user's notice is due now, or will never be
// (its Graph steps all ended and none succeeded: nothing to tell).
func (x *run) noticeState(t Target, p *Progress) (due, never bool) {
	if t.Kind != KindCloud || !x.c.Spec.Actions.Notify || p.Steps[StepNotify].Terminal() {
		return false, false
	}
	any, ok := false, false
	for _, st := range x.c.StepsFor(t) {
		if !st.Graph() {
			continue
		}
		any = true
		r := p.Steps[st]
		if !r.Terminal() {
			return false, false
		}
		ok = ok || r.Status == StatusDone
	}
	if !any || ok {
		return true, false
	}
	return false, true
}

// record stores one step's result. A terminal result ends the step's
// accounting; the user's last Graph step may make the notice due.
func (x *run) record(ctx context.Context, it *item, res StepResult) {
	if x.put(ctx, it, res) && it.step == StepCloudMustChange {
		x.afterMustChange(ctx, it.idx, res) // outside the user's lock: it records too
	}
}

// put is record under the user's lock; it reports whether a terminal
// result was stored.
func (x *run) put(ctx context.Context, it *item, res StepResult) bool {
	t := x.targets[it.idx]
	lock := &x.stripes[it.idx%len(x.stripes)]
	lock.Lock()
	defer lock.Unlock()
	x.mu.Lock()
	p := x.progressOf(it.idx)
	prev := p.Steps[it.step]
	if prev.Terminal() {
		x.mu.Unlock()
		return false // never twice
	}
	res.Attempts = it.attempts
	if it.step == StepVerifyMustChange {
		res.Fallback, res.FallbackDone = it.fallback, slices.Clone(it.fbDone)
	}
	p.Steps[it.step] = &res
	terminal := res.Terminal()
	due := false
	if terminal {
		if it.step.Graph() {
			var never bool
			if due, never = x.noticeState(t, p); never {
				// Nothing was done to tell the user of: the notice ends in
				// the same record, so that the user is counted.
				n := &StepResult{Status: StatusSkipped, At: res.At, Detail: "no write for this user succeeded: no notice"}
				if res.Status == StatusExcluded {
					n.Status, n.Detail = StatusExcluded, res.Detail
				}
				p.Steps[StepNotify] = n
			}
		}
		x.countUser(t, x.c.StepsFor(t), p)
	}
	snap := Progress{Idx: p.Idx, Steps: make(map[Step]*StepResult, len(p.Steps))}
	for k, v := range p.Steps {
		c := *v
		snap.Steps[k] = &c
	}
	x.mu.Unlock()

	// A failure to record is retried: the record is what makes the write
	// happen once. Only the end of the process stops it (the intent stays).
	for attempt := 0; ; attempt++ {
		err := x.r.Store.PutProgress(ctx, x.c.ID, snap)
		if err == nil {
			break
		}
		if ctx.Err() != nil || attempt == 20 {
			x.log.Error().Err(err).Int("user", it.idx).Msg("recording progress failed")
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	if terminal {
		x.audit(ctx, t, it.step, res)
		switch {
		case it.step == StepADMustChange:
			if x.adOut.Add(-1) == 0 {
				close(x.adDone)
			}
		default:
			if due {
				x.enqueue(&item{idx: it.idx, step: StepNotify}, false) // graphOut carries over to the notice
			} else {
				x.graphOut.Add(-1)
			}
		}
	}
	return terminal
}

// audit writes a step's outcome to the AUDIT stream, next to the
// pipeline's own records (best effort: the report in KV is the record).
func (x *run) audit(ctx context.Context, t Target, step Step, res StepResult) {
	outcome := events.OutcomeOK
	switch res.Status {
	case StatusFailed:
		outcome = events.OutcomeFailed
	case StatusSkipped:
		outcome = events.OutcomeSkipped
	}
	detail := res.Detail
	if res.LDAP != "" {
		detail = strings.TrimSpace("ldap: " + res.LDAP + " " + detail)
	}
	rec := events.AuditRecord{Time: res.At, Kind: "step", EventID: "campaign." + x.c.ID,
		ActionID: fmt.Sprintf("campaign.%s.%d", x.c.ID, t.Idx), Rule: "campaign", Action: "campaign", Step: string(step),
		User:    events.UserRef{Domain: x.c.Spec.Domain, ObjectGUID: t.ObjectGUID, UPN: t.UPN, DN: t.DN, CloudID: t.CloudID},
		CloudID: t.CloudID, Outcome: outcome, HTTPStatus: res.HTTP, Detail: detail}
	if err := x.auditW.Write(ctx, rec); err != nil {
		x.log.Warn().Err(err).Int("user", t.Idx).Msg("writing campaign audit record")
	}
}

// enqueue puts an item back on a queue and wakes the dispatcher.
func (x *run) enqueue(it *item, verify bool) {
	x.mu.Lock()
	if verify {
		x.verifyQ = append(x.verifyQ, it)
	} else {
		x.writeQ = append(x.writeQ, it)
	}
	x.mu.Unlock()
	select {
	case x.changed <- struct{}{}:
	default:
	}
}

// backoff is the delay before attempt n+1 after a server error.
func (x *run) backoff(attempts int) time.Duration {
	d := x.r.Cfg.RetryBase << min(attempts, 10)
	return min(d, x.r.Cfg.RetryMax)
}

// watchBreakGlass reads the break-glass accounts again every
// Cfg.BreakGlassEvery; a failed read keeps the last one (logged).
func (x *run) watchBreakGlass(ctx context.Context) {
	if x.r.BreakGlass == nil {
		return
	}
	t := time.NewTicker(x.r.Cfg.BreakGlassEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			bg, err := x.r.BreakGlass(ctx, x.c.Spec.Domain)
			if err != nil {
				if ctx.Err() == nil {
					x.log.Warn().Err(err).Msg("reading the break-glass accounts again failed; the last read still applies")
				}
				continue
			}
			x.bg.Store(bg)
		}
	}
}

// excluded records, instead of sending it, a step of a user who became
// break-glass after the preview; it reports whether it did.
func (x *run) excluded(ctx context.Context, it *item) bool {
	reason := x.bg.Load().Reason(x.targets[it.idx])
	if reason == "" {
		return false
	}
	x.record(ctx, it, StepResult{Status: StatusExcluded, At: x.r.now().UTC(), Detail: reason + ", since the preview: not written"})
	return true
}

// watchState cancels dispatching when the campaign leaves running.
func (x *run) watchState(ctx context.Context, cancel func()) {
	t := time.NewTicker(x.r.Cfg.PollEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c, _, err := x.r.Store.Get(ctx, x.c.ID)
			if err == nil && c.State != StateRunning {
				x.log.Info().Str("state", string(c.State)).Msg("campaign no longer running: stopping dispatch")
				cancel()
				return
			}
		}
	}
}

func (x *run) flushStats(ctx context.Context) {
	t := time.NewTicker(x.r.Cfg.StatsEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			x.saveStats(ctx)
		}
	}
}

func (x *run) saveStats(ctx context.Context) {
	x.mu.Lock()
	now := x.r.now()
	st := x.stats
	st.Throttled = x.stats.Throttled
	st.Remaining = st.Total - st.Done - st.Failed - st.Excluded
	st.Updated = now.UTC()
	finished := st.Done + st.Failed
	x.samples = append(x.samples, rateSample{at: now, finished: finished})
	for len(x.samples) > 2 && now.Sub(x.samples[1].at) > 10*time.Second {
		x.samples = x.samples[1:]
	}
	if first := x.samples[0]; now.Sub(first.at) > 0 {
		st.Rate = float64(finished-first.finished) / now.Sub(first.at).Seconds()
	}
	x.mu.Unlock()
	if now.Sub(x.logged) >= 5*time.Second {
		x.logged = now
		x.log.Info().Int("done", st.Done).Int("failed", st.Failed).Int("remaining", st.Remaining).Int("writes", st.Writes).
			Int("throttled", st.Throttled).Int("verified", st.Verified).Float64("rate", st.Rate).
			Int64("graph_open", x.graphOut.Load()).Int64("ad_open", x.adOut.Load()).Msg("campaign progress")
	}
	if err := x.r.Store.PutStats(context.WithoutCancel(ctx), x.c.ID, st); err != nil {
		x.log.Warn().Err(err).Msg("storing campaign stats")
	}
}

func (x *run) addStat(fn func(*Stats)) {
	x.mu.Lock()
	fn(&x.stats)
	x.mu.Unlock()
}
