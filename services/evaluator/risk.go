package evaluator

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/shared/userstate"
)

// BatchRisk is the kind of a batch of risk actions held because an hour
// had more than risk.hourly_cap of them: a false-positive storm in
// Identity Protection must not reset the company. An approver releases it
// with `pwsync backfill approve` as any held batch.
const BatchRisk = "risk"

// handleRisk joins a risk event's user to AD and applies the risk rule;
// the rule's password action goes through the hourly brake.
func (s *Service) handleRisk(ctx context.Context, ev events.Envelope) error {
	var r events.RiskEvent
	if err := ev.Decode(&r); err != nil {
		return natsx.Permanent(err)
	}
	guid := ""
	var err error
	switch {
	case r.Cloud != nil:
		guid, err = s.join(ctx, *r.Cloud)
	case r.User.UPN != "":
		guid, err = s.lookup(ctx, userstate.UPNKey(r.User.UPN))
	}
	if err != nil {
		return err
	}
	if guid == "" {
		// A cloud-only account: the tenant's own risk policies are its remedy.
		rec := events.AuditRecord{Kind: "decision", EventID: ev.ID, Rule: rules.RuleRisk, CloudID: r.User.ID,
			User: events.UserRef{UPN: r.User.UPN, CloudID: r.User.ID}, Outcome: "skip", Detail: "risk of a cloud account without an AD user"}
		return s.audit.Write(ctx, rec)
	}
	var decided rules.Result
	decide := func(st rules.State) rules.Result {
		decided = rules.EvaluateRisk(s.currentPolicy(), st, ev, r)
		return decided
	}
	batch := func(rules.State) string {
		for _, a := range decided.Actions {
			if a.Kind == events.ActionADRequireChange || a.Kind == events.ActionRequireChange {
				id, err := s.riskBrake(ctx, a)
				if err != nil {
					// Unsure whether the hour is over its cap: hold rather than act.
					zerolog.Ctx(ctx).Error().Err(err).Str("action_id", a.ID).Msg("risk brake: counting failed; holding the action")
				}
				return id
			}
		}
		return ""
	}
	return s.evaluateInto(ctx, ev, guid, decide, batch)
}

func riskHour(s *Service) string          { return s.now().UTC().Format("2006010215") }
func riskBatchID(hour string) string      { return "risk-" + hour }
func riskCountKey(hour, id string) string { return "riskcount." + hour + "." + id }

// riskBrake counts a's user in the current hour: "" = publish; a batch ID
// = stage it there (held for an approver). Counted once per action, so a
// redelivery gets the same answer.
func (s *Service) riskBrake(ctx context.Context, a events.Action) (string, error) {
	if a.DryRun {
		return "", nil // nothing is written anyway
	}
	hour := riskHour(s)
	batch := riskBatchID(hour)
	key := riskCountKey(hour, a.ID)
	kv := s.gate.kv
	if e, err := kv.Get(ctx, key); err == nil {
		if string(e.Value()) == "held" {
			return batch, nil
		}
		return "", nil
	} else if !natsx.IsNotFound(err) {
		return batch, fmt.Errorf("reading %s: %w", key, err)
	}
	// One counter per hour under optimistic concurrency: evaluator workers
	// deciding at once must not both take the last place.
	counter := "riskhour." + hour
	verdict := "published"
	for attempt := 0; ; attempt++ {
		if attempt == 10 {
			return batch, fmt.Errorf("counting %s: %w", counter, errConflict)
		}
		n, rev := 0, uint64(0)
		e, err := kv.Get(ctx, counter)
		switch {
		case err == nil:
			n, rev = atoiOr0(string(e.Value())), e.Revision()
		case !natsx.IsNotFound(err):
			return batch, fmt.Errorf("reading %s: %w", counter, err)
		}
		if n >= s.riskCap {
			verdict = "held"
		}
		next := []byte(strconv.Itoa(n + 1))
		if rev == 0 {
			_, err = kv.Create(ctx, counter, next)
		} else {
			_, err = kv.Update(ctx, counter, next, rev)
		}
		if err == nil {
			break
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSequence(err) {
			return batch, fmt.Errorf("counting %s: %w", counter, err)
		}
		verdict = "published"
	}
	if _, err := kv.Create(ctx, key, []byte(verdict)); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return s.riskBrake(ctx, a) // a concurrent delivery counted it first
		}
		return batch, fmt.Errorf("counting %s: %w", key, err)
	}
	if verdict != "held" {
		return "", nil
	}
	return batch, s.holdRisk(ctx, batch, a)
}

// holdRisk adds a's user to the hour's held batch, creating it (and
// alerting the admins) on the first.
func (s *Service) holdRisk(ctx context.Context, id string, a events.Action) error {
	g := s.gate
	b := Batch{ID: id, Kind: BatchRisk, Status: BatchHeld, Threshold: s.riskCap, Created: s.now().UTC(),
		Detail: "Identity Protection risk actions above risk.hourly_cap this hour"}
	if err := g.create(ctx, b); err != nil {
		return err
	}
	b, err := g.update(ctx, id, func(b *Batch) (bool, error) {
		b.Users++
		b.Actions++
		if len(b.Sample) < sampleSize {
			b.Sample = append(b.Sample, a.User.UPN)
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	zerolog.Ctx(ctx).Warn().Str("batch", id).Str("upn", a.User.UPN).Int("held", b.Users).Int("hourly_cap", s.riskCap).
		Msg("risk action held: the hour is over its cap")
	if b.Users != 1 {
		return nil
	}
	reason := fmt.Sprintf("risk actions held: more than %d Identity Protection detections this hour would reset passwords; "+
		"nothing more is written until approved. Approve with `pwsync backfill approve %s` (approver role) or reject with `pwsync backfill reject %s`.",
		s.riskCap, id, id)
	alert := events.Action{ID: events.KeySafe("risk." + id + ".held"), Kind: events.ActionAlert, Rule: rules.RuleRisk,
		Reason: reason, EventID: "risk." + id, EventTime: s.now().UTC()}
	if _, err := s.pub.PublishJSON(ctx, alert.Subject(), alert.ID, alert); err != nil {
		return fmt.Errorf("alerting the hold of %s: %w", id, err)
	}
	return g.record(ctx, b, "held", "")
}

func atoiOr0(v string) int {
	n, _ := strconv.Atoi(v)
	return n
}
