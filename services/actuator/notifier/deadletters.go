package notifier

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/deadletter"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
)

// Dead letters -> admin alerts. A durable consumer on the DLQ stream turns
// each new dead letter into an alert card on the Workflows webhook, on the
// replica that holds the notifier lease (it shares the webhook's pacing with
// the alert actions). Exactly once per dead letter: the ledger key
// "deadletter.<dlq seq>..." is claimed, the card posted, the key settled as
// sent, and only then is the DLQ message acknowledged; a redelivery after a
// crash finds the key and acknowledges without posting (a crash between
// the post and the settle leaves it in doubt, not posted again: ledger.go).
//
// Storms (a bad permission, a Graph outage: thousands of dead letters in a
// minute) are coalesced: PerWindow letters per window get a card of their
// own; the next ones are held (unacknowledged) and summarised in one card
// at the end of the window.
//
// This consumer never terminates a message and never lets one exhaust its
// deliveries: either would put an advisory about DLQ itself into DLQ. It
// acknowledges what it gave up on (audited and logged), and skips
// advisories about the DLQ stream.

// ConsumerDeadLetters is the notifier's durable consumer on DLQ.
const ConsumerDeadLetters = natsx.ConsumerDeadLetters

// maxHeld bounds a summary card (and the messages held for it).
const maxHeld = 500

// retryHint tells admins how to retry; the admin API is the one way.
const retryHint = "POST /api/v1/deadletters/%d/retry on the admin API (operator role); GET /api/v1/deadletters lists them"

func (s *Service) ensureDeadLetterConsumer(ctx context.Context) error {
	w := s.set.DeadLetters.Window
	// Held letters wait up to a window for their summary, then the post.
	if _, err := s.js.CreateOrUpdateConsumer(ctx, natsx.StreamDLQ, natsx.DeadLetterConsumer(w+2*time.Minute, maxHeld)); err != nil {
		return fmt.Errorf("ensuring consumer %s on %s: %w", ConsumerDeadLetters, natsx.StreamDLQ, err)
	}
	return nil
}

// deadLetterAlerts is the alerting loop of one lease tenure.
type deadLetterAlerts struct {
	s      *Service
	log    zerolog.Logger
	posted []time.Time // cards in the current window
	held   []heldLetter
	due    time.Time // of the summary of held
}

type heldLetter struct {
	m   natsx.Msg
	d   deadletter.Letter
	key string
}

// runDeadLetters alerts until ctx ends. Held letters are handed back at
// once (another replica may take over).
func (s *Service) runDeadLetters(ctx context.Context) error {
	cons, err := s.js.Consumer(ctx, natsx.StreamDLQ, ConsumerDeadLetters)
	if err != nil {
		return fmt.Errorf("opening consumer %s: %w", ConsumerDeadLetters, err)
	}
	msgs := make(chan jetstream.Msg)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-ctx.Done():
		}
	}, jetstream.PullMaxMessages(64), jetstream.ConsumeErrHandler(func(jetstream.ConsumeContext, error) {}))
	if err != nil {
		return fmt.Errorf("consuming %s: %w", ConsumerDeadLetters, err)
	}
	defer cc.Stop()
	a := &deadLetterAlerts{s: s, log: s.log.With().Str("component", "dead_letter_alerts").Logger()}
	// The posts outlive a lease loss by their own timeout, not more.
	work := context.WithoutCancel(ctx)
	for {
		var flush <-chan time.Time
		var t *time.Timer
		if len(a.held) > 0 {
			t = time.NewTimer(time.Until(a.due))
			flush = t.C
		}
		select {
		case <-ctx.Done():
			for _, h := range a.held {
				_ = h.m.NakWithDelay(0)
			}
			return nil
		case m := <-msgs:
			a.handle(work, m)
		case <-flush:
			a.post(work, a.take())
		}
		if t != nil {
			t.Stop()
		}
	}
}

// handle decides for one DLQ message: skip, a card of its own, or held for
// the summary.
func (a *deadLetterAlerts) handle(ctx context.Context, m natsx.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		a.log.Error().Err(err).Msg("DLQ message without metadata; skipped")
		_ = m.Ack()
		return
	}
	d, err := deadletter.Decode(meta.Sequence.Stream, m.Subject(), m.Data(), meta.Timestamp)
	if err != nil {
		a.log.Error().Err(err).Msg("undecodable DLQ advisory; skipped")
		_ = m.Ack()
		return
	}
	if d.Stream == natsx.StreamDLQ {
		_ = m.Ack() // about a DLQ consumer (ours): alerting on it could loop
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	deadletter.Resolve(rctx, a.s.js, &d)
	cancel()
	key := events.KeySafe(fmt.Sprintf("deadletter.%d.%s.%d", d.Seq, d.Stream, d.StreamSeq))
	if e, _, err := a.s.ledger.get(ctx, key); err == nil && e.State != stateFailed {
		_ = m.Ack() // alerted before (or in doubt): a redelivery after a crash
		return
	} else if err != nil && !natsx.IsNotFound(err) {
		a.log.Warn().Err(err).Msg("reading the ledger; the dead letter comes back")
		_ = m.NakWithDelay(natsx.RedeliveryDelay(meta.NumDelivered))
		return
	}
	h := heldLetter{m: m, d: d, key: key}
	now := time.Now()
	win := a.s.set.DeadLetters.Window
	a.posted = slices.DeleteFunc(a.posted, func(t time.Time) bool { return !t.Add(win).After(now) })
	if len(a.held) == 0 && len(a.posted) < a.s.set.DeadLetters.PerWindow {
		a.post(ctx, []heldLetter{h})
		return
	}
	if len(a.held) == 0 {
		a.due = now.Add(win)
	}
	a.held = append(a.held, h)
	if len(a.held) >= maxHeld {
		a.post(ctx, a.take())
	}
}

func (a *deadLetterAlerts) take() []heldLetter {
	hs := a.held
	a.held = nil
	return hs
}

// post sends one card for hs (one letter, or a summary), then settles and
// acknowledges each letter.
func (a *deadLetterAlerts) post(ctx context.Context, hs []heldLetter) {
	s := a.s
	var sl slot
	for {
		var err error
		if sl, err = s.take(ctx, s.hooks, channelWebhook); err == nil {
			break
		}
		var later *natsx.RetryLater
		if !errors.As(err, &later) {
			a.retry(hs, err, 0)
			return
		}
		time.Sleep(min(later.After, time.Second)) // the webhook's own limits: wait our turn
	}
	type claimedLetter struct {
		heldLetter
		rev   uint64
		entry ledgerEntry
	}
	var cl []claimedLetter
	for _, h := range hs {
		res, rev, entry, err := s.ledger.claim(ctx, h.key, "dlq."+fmt.Sprint(h.d.Seq), channelWebhook, "")
		switch {
		case err != nil:
			a.log.Warn().Err(err).Uint64("dlq_seq", h.d.Seq).Msg("claiming the ledger; the dead letter comes back")
			_ = h.m.NakWithDelay(time.Second)
		case res != claimed:
			_ = h.m.Ack()
		default:
			cl = append(cl, claimedLetter{h, rev, entry})
		}
	}
	if len(cl) == 0 {
		sl.Done(ctx, false)
		return
	}
	letters := make([]deadletter.Letter, len(cl))
	for i, c := range cl {
		letters[i] = c.d
	}
	alert := deadLetterAlert(letters)
	err := postCard(ctx, s.hc, s.set.WorkflowsWebhookURL.Value(), alert)
	sl.Done(ctx, true)
	countSend(channelWebhook, err)
	a.posted = append(a.posted, time.Now())
	if err == nil {
		detail := "alert card posted"
		if len(cl) > 1 {
			detail = fmt.Sprintf("summarised in one alert card of %d dead letters", len(cl))
		}
		for _, c := range cl {
			a.audit(ctx, c.d, events.OutcomeOK, 0, detail)
			if err := s.ledger.sent(ctx, c.key, c.rev, c.entry); err != nil {
				a.log.Error().Err(err).Uint64("dlq_seq", c.d.Seq).Msg("recording the alert as sent")
			}
			_ = c.m.Ack()
		}
		a.log.Info().Int("dead_letters", len(cl)).Msg("dead letter alert posted")
		return
	}
	we := &webhookError{msg: err.Error()}
	errors.As(err, &we)
	if we.retryAfter > 0 {
		sl.Block(ctx, we.retryAfter)
	}
	for _, c := range cl {
		attempts, lerr := s.ledger.failed(ctx, c.key, c.rev, c.entry, true)
		if lerr != nil {
			a.log.Warn().Err(lerr).Msg("recording the failed alert")
		}
		if !we.retryable() && attempts >= s.set.MaxAttempts {
			// Refused for good (a deleted workflow, a card it rejects): give
			// up on the alert, not on the dead letter, which stays in DLQ.
			a.audit(ctx, c.d, events.OutcomeFailed, we.status, "alert given up after "+fmt.Sprint(attempts)+" attempts: "+err.Error())
			a.log.Error().Err(err).Uint64("dlq_seq", c.d.Seq).Msg("dead letter alert given up")
			_ = c.m.Ack()
			continue
		}
		a.audit(ctx, c.d, events.OutcomeFailed, we.status, err.Error())
		a.retry([]heldLetter{c.heldLetter}, err, max(we.retryAfter, natsx.RedeliveryDelay(uint64(attempts))))
	}
}

// retry hands letters back to JetStream for later.
func (a *deadLetterAlerts) retry(hs []heldLetter, err error, after time.Duration) {
	a.log.Warn().Err(err).Int("dead_letters", len(hs)).Dur("retry_in", after).Msg("dead letter alert not posted; retrying")
	for _, h := range hs {
		_ = h.m.NakWithDelay(after)
	}
}

func (a *deadLetterAlerts) audit(ctx context.Context, d deadletter.Letter, outcome string, status int, detail string) {
	rec := events.AuditRecord{Kind: "step", EventID: d.EventID, ActionID: d.ActionID, Action: "dead_letter_alert",
		Step: "post_alert", User: events.UserRef{UPN: d.UPN}, Outcome: outcome, HTTPStatus: status,
		Detail: fmt.Sprintf("DLQ seq %d (%s %s seq %d, %s): %s", d.Seq, d.Consumer, d.Stream, d.StreamSeq, d.Why, detail)}
	if err := a.s.audit.Write(ctx, rec); err != nil {
		a.log.Error().Err(err).Msg("audit write failed")
	}
}

// deadLetterAlert describes one dead letter, or summarises several.
func deadLetterAlert(ls []deadletter.Letter) Alert {
	if len(ls) == 1 {
		d := ls[0]
		subject := d.Subject
		if !d.Available {
			subject += " (original no longer in " + d.Stream + ": not retriable)"
		}
		return Alert{Title: "pwsync: dead letter " + fmt.Sprint(d.Seq), Time: d.Time,
			Summary: fmt.Sprintf("A message on %s was given up by consumer %s: %s.", d.Stream, d.Consumer, d.Reason),
			Facts: [][2]string{{"Subject", strings.TrimSpace(subject)}, {"Reason", d.Reason}, {"User", d.UPN},
				{"Action", d.ActionID}, {"Event", d.EventID}, {"Stream", fmt.Sprintf("%s seq %d", d.Stream, d.StreamSeq)},
				{"Consumer", fmt.Sprintf("%s (%s after %d deliveries)", d.Consumer, d.Why, d.Deliveries)},
				{"Retry", fmt.Sprintf(retryHint, d.Seq)}}}
	}
	first, last := ls[0], ls[len(ls)-1]
	bySubject := map[string]int{}
	for _, d := range ls {
		bySubject[firstNonEmpty(d.Subject, d.Stream)+": "+d.Reason]++
	}
	var causes []string
	for c, n := range bySubject {
		causes = append(causes, fmt.Sprintf("%d × %s", n, c))
	}
	slices.Sort(causes)
	if len(causes) > 10 {
		causes = append(causes[:10], fmt.Sprintf("... and %d other causes", len(causes)-10))
	}
	var users []string
	for _, d := range ls {
		if d.UPN != "" && !slices.Contains(users, d.UPN) {
			users = append(users, d.UPN)
		}
	}
	if len(users) > 10 {
		users = append(users[:10], fmt.Sprintf("and %d more", len(users)-10))
	}
	return Alert{Title: fmt.Sprintf("pwsync: %d more dead letters", len(ls)), Time: last.Time,
		Summary: fmt.Sprintf("A storm of dead letters: %d more since the last cards, summarised here. Causes: %s.",
			len(ls), strings.Join(causes, "; ")),
		Facts: [][2]string{{"DLQ sequences", fmt.Sprintf("%d to %d", first.Seq, last.Seq)}, {"Users", strings.Join(users, ", ")},
			{"Retry", fmt.Sprintf(retryHint, first.Seq)}}}
}
