package actuator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/metrics"
	"github.com/pwsync/pwsync/shared/natsx"
)

// step runs one Graph write at most once per action: the idempotency record
// is checked before and written after. In dry-run it only audits.
func (x *execution) step(ctx context.Context, name string, fn func(context.Context) error) error {
	if _, err := x.s.done.Get(ctx, stepKey(x.a.ID, name)); err == nil {
		x.did(name)
		return nil // done before a crash or redelivery
	} else if !natsx.IsNotFound(err) {
		return fmt.Errorf("checking step %s: %w", name, err)
	}
	if x.a.DryRun {
		x.audit(ctx, name, events.OutcomeDryRun, 0, "would call Graph")
		return nil
	}
	err := x.s.retry(ctx, name, func(ctx context.Context) error {
		return x.paced(ctx, fn)
	})
	if err != nil {
		x.audit(ctx, name, events.OutcomeFailed, graph.StatusOf(err), err.Error())
		return err
	}
	x.audit(ctx, name, events.OutcomeOK, 0, "")
	x.did(name)
	return x.markDone(ctx, name)
}

// did records that step name is carried out; steps may run at once.
func (x *execution) did(name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.done = append(x.done, name)
}

// together runs independent steps at once and waits for all of them: a
// step needs only what came before the call, never its sibling. The first
// failure in argument order is returned; the others are audited by their
// steps and settled on the redelivery by their step records.
func together(ctx context.Context, fns ...func(context.Context) error) error {
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Go(func() { errs[i] = fn(ctx) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// paced sends one write under the budget at the action's priority; a 429
// pauses the lower priorities for its Retry-After.
func (x *execution) paced(ctx context.Context, fn func(context.Context) error) error {
	b := x.s.budget
	if b == nil {
		return fn(ctx)
	}
	if _, err := b.Acquire(ctx, x.prio, 1); err != nil {
		return err
	}
	err := fn(ctx)
	var ge *graph.Error
	if errors.As(err, &ge) && ge.Status == http.StatusTooManyRequests {
		b.Throttled(x.prio, ge.RetryAfter)
		b.Done(1, 0)
		return err
	}
	b.Done(1, 1) // applied, refused or unknown: it may have counted
	return err
}

func stepKey(actionID, step string) string { return events.KeySafe("step." + actionID + "." + step) }

func attemptKey(actionID, step string) string {
	return events.KeySafe("attempt." + actionID + "." + step)
}

// stepChecked is step for a write that Graph cannot deduplicate: the first
// attempt's time is recorded before the call, and every later attempt (an
// in-process retry after an ambiguous failure, or a redelivery after a crash)
// first asks took whether an earlier one took effect since then.
func (x *execution) stepChecked(ctx context.Context, name string, took func(context.Context, time.Time) (bool, error), fn func(context.Context) error) error {
	if x.a.DryRun {
		return x.step(ctx, name, fn)
	}
	if _, err := x.s.done.Get(ctx, stepKey(x.a.ID, name)); err == nil {
		x.did(name)
		return nil
	} else if !natsx.IsNotFound(err) {
		return fmt.Errorf("checking step %s: %w", name, err)
	}
	key := attemptKey(x.a.ID, name)
	var since time.Time
	retried := false
	switch e, err := x.s.done.Get(ctx, key); {
	case err == nil:
		since, err = time.Parse(time.RFC3339Nano, string(e.Value()))
		retried = err == nil
	case !natsx.IsNotFound(err):
		return fmt.Errorf("checking attempts of step %s: %w", name, err)
	}
	if !retried {
		since = x.s.now().UTC()
		if _, err := x.s.done.Put(ctx, key, []byte(since.Format(time.RFC3339Nano))); err != nil {
			return fmt.Errorf("recording attempt of step %s: %w", name, err)
		}
	}
	return x.step(ctx, name, func(ctx context.Context) error {
		if retried {
			ok, err := took(ctx, since)
			if err != nil {
				return err
			}
			if ok {
				zerolog.Ctx(ctx).Info().Str("step", name).Time("attempted", since).
					Msg("an earlier attempt took effect; not sending it again")
				return nil
			}
		}
		retried = true
		return fn(ctx)
	})
}

// markDone records that a step needs no further attempt.
func (x *execution) markDone(ctx context.Context, name string) error {
	if _, err := x.s.done.Put(ctx, stepKey(x.a.ID, name), []byte(x.s.now().UTC().Format(time.RFC3339Nano))); err != nil {
		return fmt.Errorf("recording step %s: %w", name, err)
	}
	return nil
}

func (x *execution) audit(ctx context.Context, step, outcome string, status int, detail string) {
	rec := events.AuditRecord{Kind: "step", EventID: x.a.EventID, ActionID: x.a.ID, Rule: x.a.Rule,
		Action: string(x.a.Kind), Step: step, User: x.a.User, Outcome: outcome, HTTPStatus: status, Detail: detail,
		LatencyMS: x.latencyMS()}
	if x.user != nil {
		rec.CloudID = x.user.ID
	}
	if err := x.s.audit.Write(ctx, rec); err != nil {
		zerolog.Ctx(ctx).Error().Err(err).Str("step", step).Msg("audit write failed")
	}
	ev := zerolog.Ctx(ctx).Info()
	if outcome == events.OutcomeFailed {
		ev = zerolog.Ctx(ctx).Warn()
	}
	ev.Str("step", step).Str("outcome", outcome).Int("http_status", status).Str("detail", detail).
		Float64("latency_ms", rec.LatencyMS).Msg("step")
}

// finish audits the action's outcome; cause is the error, if any.
func (x *execution) finish(ctx context.Context, outcome, detail string, cause error) error {
	rec := events.AuditRecord{Kind: "action", EventID: x.a.EventID, ActionID: x.a.ID, Rule: x.a.Rule,
		Action: string(x.a.Kind), User: x.a.User, Outcome: outcome, Detail: detail, HTTPStatus: graph.StatusOf(cause),
		LatencyMS: x.latencyMS()}
	if x.user != nil {
		rec.CloudID = x.user.ID
	}
	start := x.a.EventTime
	if x.a.Kind == events.ActionAlert {
		start = time.Time{} // no Graph write: not part of the AD -> Graph latency
	}
	metrics.Action(string(x.a.Kind), outcome, start, x.s.now())
	return x.s.audit.Write(ctx, rec)
}

func (x *execution) latencyMS() float64 {
	if x.a.EventTime.IsZero() {
		return 0
	}
	return float64(x.s.now().Sub(x.a.EventTime).Microseconds()) / 1000
}
