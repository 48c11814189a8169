package campaign

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/events"
)

// recorder is the progress ledger as the lanes see it: a step's record,
// the durable write of a result, the audit record of one and the counters.
type recorder interface {
	// result is a copy of a user's step record (nil: none yet).
	result(idx int, st Step) *StepResult
	// put stores a result; terminal says it ended the step (never twice),
	// notify that the user's notice became due with it.
	put(ctx context.Context, it *item, res StepResult) (terminal, notify bool)
	// noticeDue: the user's notice is due and not recorded.
	noticeDue(idx int) bool
	audit(ctx context.Context, idx int, step Step, res StepResult)
	count(fn func(*Stats))
}

// ledger is a run's progress ledger: each user's step records (KV p.*), the
// intents of $batches a stopped run left (b.*), and the counters (s.*).
// What it records is what makes each write happen once.
type ledger struct {
	store   *Store
	c       Campaign
	targets []Target
	log     zerolog.Logger
	now     func() time.Time
	auditW  *audit.Writer
	// open counts the Graph, AD and risk steps not yet terminal (progress log).
	open func() (graph, ad, risk int64)

	mu      sync.Mutex
	prog    map[int]*Progress
	stats   Stats
	samples []rateSample
	logged  time.Time
	stripes [64]sync.Mutex // serialise each user's record writes
}

type rateSample struct {
	at       time.Time
	finished int
}

// load rebuilds the records from KV: an intent (a $batch sent without a
// recorded answer) first becomes durable "uncertain" records, so that its
// writes are read back before they are written again.
func (l *ledger) load(ctx context.Context) error {
	progress, err := l.store.AllProgress(ctx, l.c.ID)
	if err != nil {
		return err
	}
	intents, err := l.store.Intents(ctx, l.c.ID)
	if err != nil {
		return err
	}
	for i := range progress {
		p := progress[i]
		if p.Steps == nil {
			p.Steps = map[Step]*StepResult{}
		}
		l.prog[i] = &p
	}
	// Intents first become durable "uncertain" records, then go.
	for seq, in := range intents {
		touched := map[int]bool{}
		for _, ref := range in.Items {
			p := l.progressOf(ref.Idx)
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
			if err := l.store.PutProgress(ctx, l.c.ID, *l.prog[idx]); err != nil {
				return err
			}
		}
		if err := l.store.DeleteIntent(ctx, l.c.ID, seq); err != nil {
			return err
		}
	}
	l.stats = Stats{Total: len(l.targets), Started: l.c.StartedAt}
	if old, err := l.store.GetStats(ctx, l.c.ID); err == nil {
		l.stats.Writes, l.stats.Throttled, l.stats.Retries, l.stats.Verified, l.stats.LDAP =
			old.Writes, old.Throttled, old.Retries, old.Verified, old.LDAP
	}
	for _, t := range l.targets {
		p := l.progressOf(t.Idx)
		if v := p.Steps[StepVerifyMustChange]; v != nil && (v.Fallback != "" || len(v.FallbackDone) > 0) {
			l.stats.Fallbacks++ // from the records: the saved counter may lag a kill
		}
		if r := p.Steps[StepConfirmCompromised]; r.Terminal() {
			l.stats.countMark(r)
		}
		l.countUser(t, l.c.StepsFor(t), p)
	}
	return nil
}

func (l *ledger) progressOf(idx int) *Progress {
	p := l.prog[idx]
	if p == nil {
		p = &Progress{Idx: idx, Steps: map[Step]*StepResult{}}
		l.prog[idx] = p
	}
	return p
}

func (l *ledger) result(idx int, st Step) *StepResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.progressOf(idx).Steps[st]
	if r == nil {
		return nil
	}
	c := *r
	return &c
}

// countUser adds a user whose steps are all terminal to the counters, by
// the steps its outcome is judged by; l.mu held or single-threaded.
func (l *ledger) countUser(t Target, steps []Step, p *Progress) {
	for _, st := range steps {
		if !p.Steps[st].Terminal() {
			return
		}
	}
	failed, excluded := false, false
	for _, st := range judged(steps) {
		r := p.Steps[st]
		failed = failed || r.Status == StatusFailed
		excluded = excluded || r.Status == StatusExcluded
	}
	switch {
	case failed:
		l.stats.Failed++
	case excluded:
		l.stats.Excluded++
	default:
		l.stats.Done++
	}
}

func (l *ledger) noticeDue(idx int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	due, _ := l.noticeState(l.targets[idx], l.progressOf(idx))
	return due
}

// noticeState says whether the user's notice is due now, or will never be
// (its Graph steps all ended and none succeeded: nothing to tell): the
// user gets a notice, its Graph steps have all ended, at least one of them
// (if any) succeeded, and the notice is not recorded.
func (l *ledger) noticeState(t Target, p *Progress) (due, never bool) {
	if t.Kind != KindCloud || !l.c.Spec.Actions.Notify || p.Steps[StepNotify].Terminal() {
		return false, false
	}
	any, ok := false, false
	for _, st := range l.c.StepsFor(t) {
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

// put stores one step's result under the user's lock. A terminal result
// ends the step's accounting; the user's last Graph step may make the
// notice due.
func (l *ledger) put(ctx context.Context, it *item, res StepResult) (terminal, notify bool) {
	t := l.targets[it.idx]
	lock := &l.stripes[it.idx%len(l.stripes)]
	lock.Lock()
	defer lock.Unlock()
	l.mu.Lock()
	p := l.progressOf(it.idx)
	prev := p.Steps[it.step]
	if prev.Terminal() {
		l.mu.Unlock()
		return false, false // never twice
	}
	res.Attempts = it.attempts
	if it.step == StepVerifyMustChange {
		res.Fallback, res.FallbackDone = it.fallback, slices.Clone(it.fbDone)
	}
	p.Steps[it.step] = &res
	terminal = res.Terminal()
	due := false
	if terminal {
		if it.step.Graph() {
			var never bool
			if due, never = l.noticeState(t, p); never {
				// Nothing was done to tell the user of: the notice ends in
				// the same record, so that the user is counted.
				n := &StepResult{Status: StatusSkipped, At: res.At, Detail: "no write for this user succeeded: no notice"}
				if res.Status == StatusExcluded {
					n.Status, n.Detail = StatusExcluded, res.Detail
				}
				p.Steps[StepNotify] = n
			}
		}
		if it.step == StepConfirmCompromised {
			l.stats.countMark(&res)
		}
		l.countUser(t, l.c.StepsFor(t), p)
	}
	snap := Progress{Idx: p.Idx, Steps: make(map[Step]*StepResult, len(p.Steps))}
	for k, v := range p.Steps {
		c := *v
		snap.Steps[k] = &c
	}
	l.mu.Unlock()

	// A failure to record is retried: the record is what makes the write
	// happen once. Only the end of the process stops it (the intent stays).
	for attempt := 0; ; attempt++ {
		err := l.store.PutProgress(ctx, l.c.ID, snap)
		if err == nil {
			break
		}
		if ctx.Err() != nil || attempt == 20 {
			l.log.Error().Err(err).Int("user", it.idx).Msg("recording progress failed")
			return false, false
		}
		time.Sleep(100 * time.Millisecond)
	}
	if terminal {
		l.audit(ctx, it.idx, it.step, res)
	}
	return terminal, due
}

// audit writes a step's outcome to the AUDIT stream, next to the
// pipeline's own records (best effort: the report in KV is the record).
func (l *ledger) audit(ctx context.Context, idx int, step Step, res StepResult) {
	t := l.targets[idx]
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
	rec := events.AuditRecord{Time: res.At, Kind: "step", EventID: "campaign." + l.c.ID,
		ActionID: fmt.Sprintf("campaign.%s.%d", l.c.ID, t.Idx), Rule: "campaign", Action: "campaign", Step: string(step),
		User:    events.UserRef{Domain: l.c.Spec.Domain, ObjectGUID: t.ObjectGUID, UPN: t.UPN, DN: t.DN, CloudID: t.CloudID},
		CloudID: t.CloudID, Outcome: outcome, HTTPStatus: res.HTTP, Detail: detail}
	if err := l.auditW.Write(ctx, rec); err != nil {
		l.log.Warn().Err(err).Int("user", t.Idx).Msg("writing campaign audit record")
	}
}

func (l *ledger) count(fn func(*Stats)) {
	l.mu.Lock()
	fn(&l.stats)
	l.mu.Unlock()
}

// totals is a copy of the counters.
func (l *ledger) totals() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// flushStats stores the counters every every until ctx ends.
func (l *ledger) flushStats(ctx context.Context, every time.Duration) {
	tick(ctx, every, func() bool { l.saveStats(ctx); return true })
}

func (l *ledger) saveStats(ctx context.Context) {
	l.mu.Lock()
	now := l.now()
	st := l.stats
	st.Remaining = st.Total - st.Done - st.Failed - st.Excluded
	st.Updated = now.UTC()
	finished := st.Done + st.Failed
	l.samples = append(l.samples, rateSample{at: now, finished: finished})
	for len(l.samples) > 2 && now.Sub(l.samples[1].at) > 10*time.Second {
		l.samples = l.samples[1:]
	}
	if first := l.samples[0]; now.Sub(first.at) > 0 {
		st.Rate = float64(finished-first.finished) / now.Sub(first.at).Seconds()
	}
	l.mu.Unlock()
	if now.Sub(l.logged) >= 5*time.Second {
		l.logged = now
		graphOpen, adOpen, riskOpen := l.open()
		l.log.Info().Int("done", st.Done).Int("failed", st.Failed).Int("remaining", st.Remaining).Int("writes", st.Writes).
			Int("throttled", st.Throttled).Int("verified", st.Verified).Float64("rate", st.Rate).
			Int64("graph_open", graphOpen).Int64("ad_open", adOpen).Int64("risk_open", riskOpen).Msg("campaign progress")
	}
	if err := l.store.PutStats(context.WithoutCancel(ctx), l.c.ID, st); err != nil {
		l.log.Warn().Err(err).Msg("storing campaign stats")
	}
}
