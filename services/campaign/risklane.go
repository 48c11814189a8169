package campaign

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/retry"
)

// readBackSkew widens a read-back's window: riskLastUpdatedDateTime is
// Graph's clock, the time a call was sent ours.
const readBackSkew = 5 * time.Minute

// riskLane marks a run's targets compromised in Entra ID Protection
// (Actions.ConfirmCompromised): POST riskyUsers/confirmCompromised with up
// to graph.MaxRiskUserIDs users a call, one call at a time.
//
// It is a lane of its own, not a follow-up of each user's password step:
// the mark is a cloud-side risk marker, independent of how the password
// is reset, and most useful when a reset failed (the tenant's user-risk
// policy is then what is left). Batched because Identity Protection allows
// 1 request per second per tenant for all apps (Graph's throttling limits):
// one call a user would take a minute per 60 users. Its calls do not take
// slots of the directory write budget, which they do not count against.
//
// Exactly once, as the $batch lane: each call's intent is stored before it
// is sent and each user's result after; a call whose answer is unknown is
// read back (the user's riskState) before it is sent again.
type riskLane struct {
	c       Campaign
	targets []Target
	risk    RiskMarker
	store   *Store
	ledger  recorder
	guard   *breakGlassWatch
	cfg     RunConfig
	now     func() time.Time
	log     zerolog.Logger
	nonce   string
	seq     int
	out     atomic.Int64 // steps not yet terminal

	// Owned by the lane's one goroutine once run starts.
	queue     []*item
	next      time.Time // no Identity Protection call before
	throttles int       // 429s in a row
	warned    bool      // a 403 was logged
}

func newRiskLane(x *run, risk RiskMarker) *riskLane {
	return &riskLane{c: x.c, targets: x.targets, risk: risk, store: x.r.store, ledger: x.ledger, guard: x.guard,
		cfg: x.r.cfg, now: x.r.now, log: x.log, nonce: fmt.Sprintf("r%x", x.r.now().UnixNano()), next: x.r.riskNext}
}

// load queues the marks the records leave; one sent without a recorded
// answer is read back once it must have been answered or abandoned.
func (r *riskLane) load(context.Context) {
	for _, t := range r.targets {
		for _, st := range r.c.StepsFor(t) {
			res := r.ledger.result(t.Idx, st)
			if st != StepConfirmCompromised || res.Terminal() {
				continue
			}
			r.out.Add(1)
			it := &item{idx: t.Idx, step: st}
			if res != nil && res.Status == StatusUncertain {
				it.verify, it.sentAt, it.attempts = true, res.At, res.Attempts
				it.notBefore = res.At.Add(r.cfg.UncertainWait)
			}
			r.queue = append(r.queue, it)
		}
	}
}

func (r *riskLane) open() int64 { return r.out.Load() }

// run starts the lane's one goroutine: it ends when no mark is left or ctx
// ends; a call already sent finishes under parent and is recorded.
func (r *riskLane) run(ctx, parent context.Context, work *sync.WaitGroup) {
	if r.out.Load() == 0 {
		return
	}
	work.Add(1)
	go func() { defer work.Done(); r.dispatch(ctx, parent) }()
}

func (r *riskLane) dispatch(ctx, parent context.Context) {
	for r.out.Load() > 0 && ctx.Err() == nil {
		// Identity Protection's own pace (and a 429's pause) first: what
		// is due is taken after it.
		if !retry.Sleep(ctx, r.next.Sub(r.now())) {
			return
		}
		now := r.now()
		verify, writes, next := r.take(now)
		if len(verify)+len(writes) == 0 {
			wait := 200 * time.Millisecond
			if !next.IsZero() {
				wait = min(wait, max(next.Sub(now), time.Millisecond))
			}
			retry.Sleep(ctx, wait)
			continue
		}
		if len(verify) > 0 { // read-backs first: they decide whether to send again
			r.readBack(parent, verify)
		} else {
			r.send(parent, writes)
		}
		r.next = later(r.next, r.now().Add(r.cfg.RiskInterval))
	}
}

// take removes the items due: every read-back due, or else up to
// graph.MaxRiskUserIDs marks; next is the earliest time of those left (zero
// when none waits).
func (r *riskLane) take(now time.Time) (verify, writes []*item, next time.Time) {
	keep := r.queue[:0]
	for _, it := range r.queue {
		switch {
		case it.notBefore.After(now):
			if next.IsZero() || it.notBefore.Before(next) {
				next = it.notBefore
			}
		case it.verify:
			verify = append(verify, it)
			continue
		case len(writes) < graph.MaxRiskUserIDs:
			writes = append(writes, it)
			continue
		}
		keep = append(keep, it)
	}
	r.queue = keep
	if len(verify) > 0 {
		r.queue = append(r.queue, writes...) // after the read-backs
		writes = nil
	}
	return verify, writes, next
}

func (r *riskLane) record(ctx context.Context, it *item, res StepResult) {
	if terminal, _ := r.ledger.put(ctx, it, res); terminal {
		r.out.Add(-1)
	}
}

// retry puts it back for another try after d.
func (r *riskLane) retry(it *item, d time.Duration) {
	it.notBefore = r.now().Add(d)
	r.queue = append(r.queue, it)
}

// send marks items compromised in one call.
func (r *riskLane) send(ctx context.Context, items []*item) {
	var ids []string
	var sent []*item
	seq := r.nonce + "-" + strconv.Itoa(r.seq)
	r.seq++
	in := Intent{At: r.now().UTC()}
	for _, it := range items {
		// The last read of the break-glass accounts decides, as for every write.
		if r.guard.exclude(ctx, it, r.targets[it.idx], r.record) {
			continue
		}
		it.attempts++
		it.sentAt = in.At
		in.Items = append(in.Items, IntentRef{Idx: it.idx, Step: it.step})
		ids, sent = append(ids, r.targets[it.idx].CloudID), append(sent, it)
	}
	if len(sent) == 0 {
		return
	}
	if err := r.store.PutIntent(ctx, r.c.ID, seq, in); err != nil {
		r.log.Warn().Err(err).Int("users", len(sent)).Msg("recording the confirmCompromised intent failed; not sent")
		for _, it := range sent {
			it.attempts--
			r.retry(it, time.Second)
		}
		return
	}
	err := r.risk.ConfirmCompromised(ctx, ids)
	r.answer(ctx, sent, in.At, err)
	if err := r.store.DeleteIntent(ctx, r.c.ID, seq); err != nil {
		// Harmless: the next load finds every item recorded and skips it.
		r.log.Warn().Err(err).Msg("removing the confirmCompromised intent")
	}
}

// answer records Graph's answer to one call for each of its users.
func (r *riskLane) answer(ctx context.Context, items []*item, at time.Time, err error) {
	status := graph.StatusOf(err)
	switch {
	case err == nil:
		r.throttles = 0
		for _, it := range items {
			r.record(ctx, it, StepResult{Status: StatusDone, At: r.now().UTC(), HTTP: http.StatusNoContent,
				Detail: "confirmed compromised: the tenant's user-risk policies apply"})
		}
	case status == http.StatusTooManyRequests:
		// Graph did nothing: pacing, not an attempt. The limit is the
		// tenant's, so the lane pauses; Identity Protection sends no
		// Retry-After, a growing backoff stands in.
		r.ledger.count(func(s *Stats) { s.Throttled++ })
		r.throttles++
		r.next = r.now().Add(max(retryAfter(err), r.cfg.backoff(r.throttles)))
		for _, it := range items {
			it.attempts--
			r.retry(it, 0)
		}
	case status == 0 || status >= 500 || status == http.StatusRequestTimeout:
		// Graph may or may not have applied it: read back before sending again.
		r.ledger.count(func(s *Stats) { s.Retries++ })
		for _, it := range items {
			r.record(ctx, it, StepResult{Status: StatusUncertain, At: at, HTTP: status, Detail: err.Error()})
			it.verify = true
			r.retry(it, r.cfg.backoff(it.attempts))
		}
	default: // refused: 403 (licence, permission), 400
		r.refused(ctx, items, err)
	}
}

// refused records a call Graph refused as failed for each of its users; a
// 403 is logged (once a run, as it is the tenant's, not the user's).
func (r *riskLane) refused(ctx context.Context, items []*item, err error) {
	if graph.IsUnlicensed(err) && !r.warned {
		r.warned = true
		r.log.Error().Err(err).Msg(unlicensedDetail)
	}
	res := StepResult{Status: StatusFailed, HTTP: graph.StatusOf(err), Detail: markFailedDetail(err)}
	var ge *graph.Error
	if errors.As(err, &ge) {
		res.Code = ge.Code
	}
	for _, it := range items {
		res.At = r.now().UTC()
		r.record(ctx, it, res)
	}
}

func retryAfter(err error) time.Duration {
	var ge *graph.Error
	if errors.As(err, &ge) {
		return ge.RetryAfter
	}
	return 0
}

// readBack reads the risky users changed since the earliest of the items
// was sent (one paged list for any number of users, where a read per user
// would take a second each): confirmedCompromised means the unanswered
// call took; otherwise the mark is sent again, or fails after MaxAttempts.
func (r *riskLane) readBack(ctx context.Context, items []*item) {
	since := items[0].sentAt
	for _, it := range items {
		if it.sentAt.Before(since) {
			since = it.sentAt
		}
	}
	users, err := r.risk.RiskyUsersSince(ctx, since.Add(-readBackSkew))
	if err != nil {
		r.readBackFailed(ctx, items, err)
		return
	}
	confirmed := map[string]bool{}
	for _, u := range users {
		confirmed[u.ID] = u.State == riskStateConfirmed
	}
	for _, it := range items {
		switch {
		case confirmed[r.targets[it.idx].CloudID]:
			r.ledger.count(func(s *Stats) { s.Verified++ })
			r.record(ctx, it, StepResult{Status: StatusDone, At: r.now().UTC(), HTTP: http.StatusOK, Verified: true,
				Detail: "confirmedCompromised on read-back after an unanswered call: the tenant's user-risk policies apply"})
		case it.attempts >= r.cfg.MaxAttempts:
			r.record(ctx, it, StepResult{Status: StatusFailed, At: r.now().UTC(),
				Detail: fmt.Sprintf("no answer to confirmCompromised after %d attempts, and not confirmedCompromised on read-back", it.attempts)})
		default:
			it.verify = false
			r.retry(it, 0)
		}
	}
}

// readBackFailed: a refused read-back (403) fails the marks, as the call
// would be refused too; otherwise the read-back is tried again.
func (r *riskLane) readBackFailed(ctx context.Context, items []*item, err error) {
	if graph.IsUnlicensed(err) {
		r.refused(ctx, items, err)
		return
	}
	r.log.Warn().Err(err).Int("users", len(items)).Msg("reading back unanswered confirmCompromised calls failed; trying again")
	if graph.StatusOf(err) == http.StatusTooManyRequests {
		r.throttles++
		r.next = r.now().Add(max(retryAfter(err), r.cfg.backoff(r.throttles)))
	}
	for _, it := range items {
		r.retry(it, r.cfg.backoff(it.attempts))
	}
}
