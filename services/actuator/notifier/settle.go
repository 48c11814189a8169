package notifier

// Settling a delivery: refused sends, the ledger's skips, dead letters,
// audit records, send slots and their metrics.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/metrics"
	"github.com/pwsync/pwsync/shared/natsx"
)

// sendFailed settles a refused send and decides: retry (JetStream
// redelivery), or dead letter after max_attempts or a permanent refusal.
func (x *delivery) sendFailed(ctx context.Context, step, key string, rev uint64, entry ledgerEntry, err error) error {
	status := graph.StatusOf(err)
	var ge *graph.Error
	permanent := errors.As(err, &ge) && !ge.Retryable()
	if status == 0 && ge != nil && !notSent(err) {
		// A transport error: Graph may have accepted the message. Leave
		// the claim "sending" (at most once, see ledger.go).
		x.audit(ctx, step, events.OutcomeFailed, 0, "outcome unknown, not resent: "+err.Error())
		return x.finish(ctx, events.OutcomeFailed, "in doubt after a transport error; not resent", nil)
	}
	attempts, lerr := x.s.ledger.failed(ctx, key, rev, entry, true)
	if lerr != nil {
		return lerr
	}
	x.audit(ctx, step, events.OutcomeFailed, status, fmt.Sprintf("attempt %d: %v", attempts, err))
	if permanent || attempts >= x.s.set.MaxAttempts {
		return x.deadLetter(ctx, err)
	}
	return retryable(err)
}

func (x *delivery) ledgerSkip(ctx context.Context, res claimResult, e ledgerEntry) error {
	if res == alreadySent {
		return x.finish(ctx, events.OutcomeSkipped, "already sent ("+e.Channel+" at "+e.At.Format(time.RFC3339)+")", nil)
	}
	return x.finish(ctx, events.OutcomeSkipped, "in doubt: a send by "+e.ActionID+" at "+e.At.Format(time.RFC3339)+
		" did not settle; not resent (at most once)", nil)
}

func (x *delivery) deadLetter(ctx context.Context, err error) error {
	_ = x.finish(ctx, events.OutcomeDeadLetter, err.Error(), err)
	return natsx.Permanent(err)
}

func (x *delivery) audit(ctx context.Context, step, outcome string, status int, detail string) {
	rec := events.AuditRecord{Kind: "step", EventID: x.a.EventID, ActionID: x.a.ID, Rule: x.a.Rule,
		Action: string(x.a.Kind), Step: step, User: x.a.User, CloudID: x.cloud, Outcome: outcome,
		HTTPStatus: status, Detail: detail}
	if err := x.s.audit.Write(ctx, rec); err != nil {
		zerolog.Ctx(ctx).Error().Err(err).Str("step", step).Msg("audit write failed")
	}
	ev := zerolog.Ctx(ctx).Info()
	if outcome == events.OutcomeFailed {
		ev = zerolog.Ctx(ctx).Warn()
	}
	ev.Str("step", step).Str("outcome", outcome).Int("http_status", status).Str("detail", detail).Msg("notify step")
}

func (x *delivery) finish(ctx context.Context, outcome, detail string, cause error) error {
	rec := events.AuditRecord{Kind: "action", EventID: x.a.EventID, ActionID: x.a.ID, Rule: x.a.Rule,
		Action: string(x.a.Kind), User: x.a.User, CloudID: x.cloud, Outcome: outcome, Detail: detail,
		HTTPStatus: graph.StatusOf(cause)}
	if !x.a.EventTime.IsZero() {
		rec.LatencyMS = float64(x.s.now().Sub(x.a.EventTime).Microseconds()) / 1000
	}
	return x.s.audit.Write(ctx, rec)
}

// retryable hands a Graph error back to JetStream: after Retry-After when
// Graph gave one, else with the adapter's backoff; refusals are permanent.
func retryable(err error) error {
	var ge *graph.Error
	if errors.As(err, &ge) {
		if !ge.Retryable() {
			return natsx.Permanent(err)
		}
		if ge.RetryAfter > 0 {
			return &natsx.RetryLater{After: ge.RetryAfter, Err: err}
		}
	}
	return err
}

// Channels, as metrics and the ledger name them.
const (
	channelEmail   = "email"
	channelTeams   = "teams"
	channelWebhook = "webhook"
)

// take waits for a send slot of the channel's pool (metrics: the wait); a
// wait beyond the budget becomes a later redelivery (metrics: deferred).
func (s *Service) take(ctx context.Context, p *pool, channel string) (slot, error) {
	start := time.Now()
	sl, err := p.take(ctx, s.maxWait)
	var tl errTooLong
	switch {
	case err == nil:
		metrics.PacingWait(channel, time.Since(start))
		return sl, nil
	case errors.As(err, &tl):
		metrics.Notification(channel, metrics.NotifyDeferred)
		return slot{}, &natsx.RetryLater{After: tl.wait, Err: err}
	}
	return slot{}, err
}

// counted records a send's outcome on its channel.
func countSend(channel string, err error) {
	if err == nil {
		metrics.Notification(channel, metrics.NotifySent)
		return
	}
	metrics.Notification(channel, metrics.NotifyFailed)
}

// notSent reports whether a transport error happened before the request
// could reach Graph (no connection): then the message surely was not sent.
func notSent(err error) bool {
	var op *net.OpError
	var dns *net.DNSError
	return errors.As(err, &dns) || (errors.As(err, &op) && op.Op == "dial")
}

// preview fits Teams' 150 characters.
func preview(s string) string {
	r := []rune(s)
	if len(r) <= 150 {
		return s
	}
	return strings.TrimSpace(string(r[:149])) + "…"
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
