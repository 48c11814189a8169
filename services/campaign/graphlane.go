package campaign

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/mustchange"
)

// slots is the campaign's lane of the process's one directory write budget
// (budget.Lane, the actuator's scheduler): a $batch of n items takes n slots.
type slots interface {
	Acquire(ctx context.Context, n int) (int, error)
	Done(taken, counted int)
	Throttled(retryAfter time.Duration)
	Usage(pct float64)
}

// graphLane sends a run's Graph work: writes in $batches within the budget's
// slots, read-backs of writes whose answer was lost (readback.go), and the
// users' notices.
type graphLane struct {
	c       Campaign
	targets []Target
	batch   graph.Batcher
	pace    slots
	pub     Publisher
	store   *Store // the batch intents
	ledger  recorder
	guard   *breakGlassWatch
	cfg     RunConfig
	now     func() time.Time
	log     zerolog.Logger
	nonce   string
	seq     atomic.Int64
	out     atomic.Int64 // steps not yet terminal
	changed chan struct{}

	mu      sync.Mutex
	writeQ  []*item
	verifyQ []*item
}

func newGraphLane(x *run, batch graph.Batcher, pace slots) *graphLane {
	return &graphLane{c: x.c, targets: x.targets, batch: batch, pace: pace, pub: x.r.pub, store: x.r.store, ledger: x.ledger,
		guard: x.guard, cfg: x.r.cfg, now: x.r.now, log: x.log, nonce: fmt.Sprintf("%x", x.r.now().UnixNano()), changed: make(chan struct{}, 1)}
}

// load queues the Graph work the records leave (ctx: the run's parent): a
// write sent without a recorded answer is read back before it is written
// again, once it must have been answered or abandoned.
func (g *graphLane) load(ctx context.Context) {
	var settle []int // read-backs whose must_change ended without one due
	for _, t := range g.targets {
		for _, st := range g.c.StepsFor(t) {
			res := g.ledger.result(t.Idx, st)
			if !st.Graph() || res.Terminal() {
				continue
			}
			g.out.Add(1)
			it := &item{idx: t.Idx, step: st}
			if st == StepVerifyMustChange {
				if g.loadVerify(it, res) {
					settle = append(settle, t.Idx)
				}
				continue
			}
			if res != nil && res.Status == StatusUncertain {
				// The stopped run's request may still be on its way: read back
				// only once it must have been answered or abandoned.
				it.verify, it.sentAt, it.attempts = true, res.At, res.Attempts
				it.notBefore = res.At.Add(g.cfg.UncertainWait)
				g.verifyQ = append(g.verifyQ, it)
			} else {
				g.writeQ = append(g.writeQ, it)
			}
		}
	}
	// Users whose Graph steps all ended before the stop but whose notice
	// was not recorded.
	for _, t := range g.targets {
		if g.ledger.noticeDue(t.Idx) {
			g.out.Add(1) // the notice is dispatched like a Graph step
			g.writeQ = append(g.writeQ, &item{idx: t.Idx, step: StepNotify})
		}
	}
	// After the notices above: settling a read-back may make one due.
	for _, idx := range settle {
		g.afterMustChange(ctx, idx, *g.ledger.result(idx, StepCloudMustChange))
	}
}

func (g *graphLane) open() int64 { return g.out.Load() }

// run is dispatch: it returns when no Graph work is left or ctx ends.
func (g *graphLane) run(ctx, parent context.Context, work *sync.WaitGroup) {
	g.dispatch(ctx, parent, work)
}

// record stores one step's result. A terminal result ends the step's
// accounting, or carries it over to the user's notice when that became
// due; an ended must_change queues its read-back.
func (g *graphLane) record(ctx context.Context, it *item, res StepResult) {
	terminal, notify := g.ledger.put(ctx, it, res)
	if !terminal {
		return
	}
	if notify {
		g.enqueue(&item{idx: it.idx, step: StepNotify}, false) // out carries over to the notice
	} else {
		g.out.Add(-1)
	}
	if it.step == StepCloudMustChange {
		g.afterMustChange(ctx, it.idx, res)
	}
}

// excluded records, instead of sending it, a step of a user who became
// break-glass after the preview; it reports whether it did.
func (g *graphLane) excluded(ctx context.Context, it *item) bool {
	return g.guard.exclude(ctx, it, g.targets[it.idx], g.record)
}

// loadVerify queues a verify_must_change that has not ended, from its
// record: a read-back, a fallback write due, or one sent without a recorded
// answer (read back first). It reports true when the must_change ended
// without a read-back queued (a crash in between): afterMustChange settles it.
func (g *graphLane) loadVerify(it *item, res *StepResult) bool {
	if !g.ledger.result(it.idx, StepCloudMustChange).Terminal() {
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
		it.notBefore = res.At.Add(g.cfg.UncertainWait)
		g.verifyQ = append(g.verifyQ, it)
	case res.Status == StatusFallback && res.Fallback != "":
		g.writeQ = append(g.writeQ, it)
	default: // read back (again)
		it.fallback = ""
		g.verifyQ = append(g.verifyQ, it)
	}
	return false
}

// afterMustChange queues the read-back of a must_change that ended, or
// settles it: nothing to read when the PATCH failed; already read when an
// unanswered PATCH was confirmed by reading the flag back.
func (g *graphLane) afterMustChange(ctx context.Context, idx int, res StepResult) {
	if g.c.Verify == nil {
		return
	}
	it := &item{idx: idx, step: StepVerifyMustChange}
	switch {
	case res.Status == StatusExcluded:
		g.record(ctx, it, StepResult{Status: StatusExcluded, At: g.now().UTC(), Detail: res.Detail})
	case res.Status != StatusDone:
		g.record(ctx, it, StepResult{Status: StatusSkipped, At: g.now().UTC(), Detail: "must_change " + res.Status + ": nothing to read back"})
	case res.Verified:
		g.record(ctx, it, StepResult{Status: StatusDone, At: g.now().UTC(), HTTP: res.HTTP,
			Detail: "flag confirmed by the read-back of the unanswered PATCH"})
	default:
		it.notBefore = g.now().Add(g.cfg.VerifyDelay)
		g.enqueue(it, true)
	}
}

// enqueue puts an item back on a queue and wakes the dispatcher.
func (g *graphLane) enqueue(it *item, verify bool) {
	g.mu.Lock()
	if verify {
		g.verifyQ = append(g.verifyQ, it)
	} else {
		g.writeQ = append(g.writeQ, it)
	}
	g.mu.Unlock()
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

func (g *graphLane) requeue(items []*item, verify bool) {
	for _, it := range items {
		g.enqueue(it, verify)
	}
}

// takeReady removes up to n items whose time has come; it returns them and
// the earliest time of those left.
func takeReady(q *[]*item, n int, now time.Time) ([]*item, time.Time) {
	var out []*item
	var next time.Time
	keep := (*q)[:0]
	for _, it := range *q {
		if len(out) < n && !it.notBefore.After(now) {
			out = append(out, it)
			continue
		}
		if next.IsZero() || it.notBefore.Before(next) {
			next = it.notBefore
		}
		keep = append(keep, it)
	}
	*q = keep
	return out, next
}

// dispatch sends Graph work until none is left or ctx ends: read-backs
// first (they decide whether a write is needed), then writes in $batches of
// up to 20 within the pacer's slots, then notices.
func (g *graphLane) dispatch(ctx, parent context.Context, work *sync.WaitGroup) {
	sem := make(chan struct{}, g.cfg.Concurrency)
	for g.out.Load() > 0 && ctx.Err() == nil {
		now := g.now()
		g.mu.Lock()
		verify, nextV := takeReady(&g.verifyQ, graph.MaxBatch, now)
		var writes, notices []*item
		var nextW time.Time
		if len(verify) == 0 {
			ready, next := takeReady(&g.writeQ, graph.MaxBatch, now)
			nextW = next
			for _, it := range ready {
				if it.step == StepNotify {
					notices = append(notices, it)
				} else {
					writes = append(writes, it)
				}
			}
		}
		g.mu.Unlock()
		// The last read of the break-glass accounts decides, before a slot is taken.
		writes = slices.DeleteFunc(writes, func(it *item) bool { return g.excluded(parent, it) })

		switch {
		case len(notices) > 0:
			for _, it := range notices {
				g.sendNotice(parent, it)
			}
			for _, it := range writes {
				g.enqueue(it, false)
			}
			continue
		case len(verify) > 0:
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				g.requeue(verify, true)
				return
			}
			work.Add(1)
			go func() { defer work.Done(); defer func() { <-sem }(); g.verifyBatch(parent, verify) }()
			continue
		case len(writes) > 0:
			n, err := g.pace.Acquire(ctx, len(writes))
			if err != nil {
				g.requeue(writes, false)
				return
			}
			g.requeue(writes[n:], false)
			writes = writes[:n]
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				g.pace.Done(n, 0)
				g.requeue(writes, false)
				return
			}
			work.Add(1)
			go func() { defer work.Done(); defer func() { <-sem }(); g.sendBatch(parent, writes) }()
			continue
		}
		// Nothing ready: wait for an answer, a retry time, or the end.
		wait := 200 * time.Millisecond
		for _, next := range []time.Time{nextV, nextW} {
			if !next.IsZero() {
				wait = min(wait, max(next.Sub(now), time.Millisecond))
			}
		}
		select {
		case <-ctx.Done():
		case <-g.changed:
		case <-time.After(wait):
		}
	}
}

// writeRequest is the Graph request for a step (for verify_must_change:
// its fallback write).
func (g *graphLane) writeRequest(id string, it *item) (graph.BatchRequest, error) {
	cloudID := g.targets[it.idx].CloudID
	user := "/users/" + url.PathEscape(cloudID)
	revoke := graph.BatchRequest{ID: id, Method: http.MethodPost, URL: user + "/revokeSignInSessions", Body: map[string]any{}} // a POST item needs a body
	switch it.step {
	case StepCloudMustChange:
		return graph.BatchRequest{ID: id, Method: http.MethodPatch, URL: user, Body: map[string]any{
			"passwordProfile": map[string]any{
				"forceChangePasswordNextSignIn":        true,
				"forceChangePasswordNextSignInWithMfa": g.cfg.WithMFA,
			}}}, nil
	case StepVerifyMustChange:
		switch it.fallback {
		case mustchange.WriteTemporaryPassword:
			// Never stored or logged: the user resets it (self-service or
			// helpdesk); what matters is that the old one no longer works.
			pw, err := mustchange.TemporaryPassword()
			if err != nil {
				return graph.BatchRequest{}, err
			}
			return graph.BatchRequest{ID: id, Method: http.MethodPatch, URL: user, Body: map[string]any{
				"passwordProfile": map[string]any{
					"password":                             pw,
					"forceChangePasswordNextSignIn":        true,
					"forceChangePasswordNextSignInWithMfa": g.c.Verify.WithMFA,
				}}}, nil
		case mustchange.WriteRevoke:
			return revoke, nil
		case mustchange.WritePendingGroup:
			return graph.BatchRequest{ID: id, Method: http.MethodPost, URL: "/groups/" + url.PathEscape(g.c.Verify.PendingGroupID) + "/members/$ref",
				Body: map[string]any{"@odata.id": strings.TrimRight(g.cfg.GraphBaseURL, "/") + "/directoryObjects/" + url.PathEscape(cloudID)}}, nil
		}
		return graph.BatchRequest{}, fmt.Errorf("unknown fallback write %q", it.fallback)
	default: // StepRevoke
		return revoke, nil
	}
}

// sendBatch writes one $batch. Exactly once: the intent is stored before
// the request leaves; each item's answer is stored before the intent goes.
// An item whose answer is unknown (transport error, 5xx: Graph may or may
// not have applied it) becomes "uncertain" and is read back before any new
// write; a 429 is Graph's statement that it did nothing, so only that item
// is sent again, after Retry-After.
func (g *graphLane) sendBatch(ctx context.Context, items []*item) {
	seq := g.nonce + "-" + strconv.FormatInt(g.seq.Add(1), 10)
	at := g.now().UTC()
	in := Intent{At: at}
	reqs := make([]graph.BatchRequest, 0, len(items))
	for j := 0; j < len(items); j++ {
		it := items[j]
		req, err := g.writeRequest(strconv.Itoa(len(reqs)), it)
		if err != nil { // not sent: cannot happen short of a broken random source
			g.pace.Done(1, 0)
			g.record(ctx, it, StepResult{Status: StatusFailed, At: at, Detail: err.Error()})
			items = slices.Delete(items, j, j+1)
			j--
			continue
		}
		it.attempts++
		it.sentAt = at
		in.Items = append(in.Items, IntentRef{Idx: it.idx, Step: it.step, Fallback: it.fallback})
		reqs = append(reqs, req)
	}
	if len(items) == 0 {
		return
	}
	if err := g.store.PutIntent(ctx, g.c.ID, seq, in); err != nil {
		g.log.Warn().Err(err).Msg("recording batch intent failed; batch not sent")
		g.pace.Done(len(items), 0)
		for _, it := range items {
			it.attempts--
			it.notBefore = g.now().Add(time.Second)
		}
		g.requeue(items, false)
		return
	}
	resps, err := g.batch.Batch(ctx, reqs)
	if err != nil {
		var ge *graph.Error
		if errors.As(err, &ge) && ge.Status == http.StatusTooManyRequests {
			// The whole batch was refused: nothing ran.
			g.pace.Throttled(ge.RetryAfter)
			g.pace.Done(len(items), 0)
			g.ledger.count(func(s *Stats) { s.Throttled++ })
			for _, it := range items {
				it.attempts--
				it.notBefore = g.now().Add(max(ge.RetryAfter, time.Second))
			}
			g.requeue(items, false)
		} else {
			g.pace.Done(len(items), len(items)) // may have counted: assume it did
			for _, it := range items {
				g.uncertain(ctx, it, StepResult{Status: StatusUncertain, At: at, HTTP: graph.StatusOf(err), Detail: err.Error()})
			}
		}
		g.dropIntent(ctx, seq)
		return
	}
	// The pacer hears first: a slot's window starts at the answer, and
	// recording below takes time that must not stretch it.
	counted, pct := 0, 0.0
	for _, resp := range resps {
		pct = max(pct, resp.ThrottlePercentage())
		switch {
		case resp.Status == http.StatusTooManyRequests:
			g.pace.Throttled(resp.RetryAfter)
		default:
			counted++ // applied, refused or unknown: it may have counted
		}
	}
	g.pace.Done(len(items), counted)
	g.pace.Usage(pct)
	for j, resp := range resps {
		it := items[j]
		switch {
		case resp.Status >= 200 && resp.Status < 300:
			g.ledger.count(func(s *Stats) { s.Writes++ })
			if it.step == StepVerifyMustChange {
				g.fallbackApplied(ctx, it, resp.Status, false)
				continue
			}
			g.record(ctx, it, StepResult{Status: StatusDone, At: g.now().UTC(), HTTP: resp.Status})
		case it.fallback == mustchange.WritePendingGroup && resp.Err != nil && graph.IsAlreadyMember(resp.Err):
			g.fallbackApplied(ctx, it, resp.Status, true) // an unanswered earlier add took
		case resp.Status == http.StatusTooManyRequests:
			g.ledger.count(func(s *Stats) { s.Throttled++ })
			it.attempts-- // throttling is pacing, not failure
			it.notBefore = g.now().Add(max(resp.RetryAfter, time.Second))
			g.enqueue(it, false)
		case resp.Status == 0 || resp.Status >= 500 || resp.Status == http.StatusRequestTimeout:
			detail := "no answer for this item"
			if resp.Err != nil {
				detail = resp.Err.Error()
			}
			g.uncertain(ctx, it, StepResult{Status: StatusUncertain, At: at, HTTP: resp.Status, Detail: detail})
		default:
			res := StepResult{Status: StatusFailed, At: g.now().UTC(), HTTP: resp.Status}
			if resp.Err != nil {
				res.Code, res.Detail = resp.Err.Code, resp.Err.Message
			}
			if it.step == StepVerifyMustChange {
				res.Detail = mustchange.MissingDetail(g.c.Verify.Fallback) + ": " + string(it.fallback) + " refused: " + res.Detail
			}
			g.record(ctx, it, res)
		}
	}
	g.dropIntent(ctx, seq)
}

func (g *graphLane) dropIntent(ctx context.Context, seq string) {
	if err := g.store.DeleteIntent(ctx, g.c.ID, seq); err != nil {
		// Harmless: the next load finds every item recorded and skips it.
		g.log.Warn().Err(err).Msg("removing batch intent")
	}
}

// uncertain records that a write's effect is unknown and queues a
// read-back; after MaxAttempts the step fails.
func (g *graphLane) uncertain(ctx context.Context, it *item, res StepResult) {
	g.ledger.count(func(s *Stats) { s.Retries++ })
	g.record(ctx, it, res) // durable: a restart reads back too
	it.verify = true
	it.notBefore = g.now().Add(g.cfg.backoff(it.attempts))
	g.enqueue(it, true)
}
