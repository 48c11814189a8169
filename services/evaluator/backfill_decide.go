// Deciding a held backfill batch: approve, reject, release, and its alert and audit record.

package evaluator

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/shared/userstate"
)

// Approve releases a held batch; by is the approver.
func (g *Gate) Approve(ctx context.Context, id, by string) (Batch, error) {
	b, err := g.update(ctx, id, func(b *Batch) (bool, error) {
		if b.Status != BatchHeld {
			return false, fmt.Errorf("%w: %s is %s", ErrBatchState, id, b.Status)
		}
		b.Status, b.Decided, b.DecidedBy, b.Releasing = BatchApproved, g.now().UTC(), by, true
		return true, nil
	})
	if err != nil {
		return b, err
	}
	if err := g.record(ctx, b, "approved", by); err != nil {
		return b, err
	}
	return g.release(ctx, id)
}

// Reject drops a held batch: its users are not acted on, and what pwsync
// had recorded as required of them is cleared, so that their next password
// change does not undo a write that never happened.
func (g *Gate) Reject(ctx context.Context, id, by string) (Batch, error) {
	b, err := g.update(ctx, id, func(b *Batch) (bool, error) {
		if b.Status != BatchHeld {
			return false, fmt.Errorf("%w: %s is %s", ErrBatchState, id, b.Status)
		}
		b.Status, b.Decided, b.DecidedBy = BatchRejected, g.now().UTC(), by
		return true, nil
	})
	if err != nil {
		return b, err
	}
	acts, err := g.staged(ctx, id)
	if err != nil {
		return b, err
	}
	for _, a := range acts {
		if a.Kind == events.ActionRequireChange {
			if err := g.clearRequired(ctx, a); err != nil {
				return b, err
			}
		}
		if err := g.kv.Delete(ctx, stageKey(id, a.ID)); err != nil {
			return b, fmt.Errorf("dropping %s: %w", a.ID, err)
		}
	}
	g.log.Warn().Str("batch", id).Str("by", by).Int("users", b.Users).Msg("backfill rejected: nothing written")
	return b, g.record(ctx, b, "rejected", by)
}

// release publishes a batch's staged actions (IDs are stable: a release
// that a crash interrupted publishes the rest, duplicates are dropped).
func (g *Gate) release(ctx context.Context, id string) (Batch, error) {
	acts, revs, err := g.stagedRevs(ctx, id)
	if err != nil {
		return Batch{}, err
	}
	released, superseded := 0, 0
	for i, a := range acts {
		live, err := g.stillWanted(ctx, a)
		if err != nil {
			return Batch{}, err
		}
		if live {
			if _, err := g.pub.PublishJSON(ctx, a.Subject(), a.ID, a); err != nil {
				return Batch{}, fmt.Errorf("releasing action %s: %w", a.ID, err)
			}
		}
		// Counted by whoever drops the entry: two releases of one batch (a
		// resumed one and a late original) publish an action twice under
		// one ID (deduplicated) but count it once.
		err = g.kv.Delete(ctx, stageKey(id, a.ID), jetstream.LastRevision(revs[i]))
		switch {
		case err == nil && live:
			released++
		case err == nil:
			superseded++
		case isWrongSequence(err) || natsx.IsNotFound(err):
		default:
			return Batch{}, fmt.Errorf("dropping %s: %w", a.ID, err)
		}
	}
	b, err := g.update(ctx, id, func(b *Batch) (bool, error) {
		b.Released += released
		b.Superseded += superseded
		b.Releasing = false
		return true, nil
	})
	if err != nil {
		return b, err
	}
	g.log.Info().Str("batch", id).Str("status", b.Status).Int("released", released).Int("superseded", superseded).
		Bool("dry_run", b.DryRun).Msg("backfill released")
	if released+superseded == 0 {
		return b, nil // another release did it
	}
	return b, g.record(ctx, b, "published", "")
}

// stillWanted: a staged require-change is released only while the user's
// state still records it as what pwsync requires (not a user who set a
// password, or was re-evaluated, since).
func (g *Gate) stillWanted(ctx context.Context, a events.Action) (bool, error) {
	if a.Kind != events.ActionRequireChange {
		return true, nil
	}
	e, err := g.users.Get(ctx, userstate.UserKey(a.User.ObjectGUID))
	if natsx.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading state of %s: %w", a.User.ObjectGUID, err)
	}
	var st rules.State
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return true, nil // unreadable: the actuator's own checks decide
	}
	return st.RequiredByAction == a.ID || st.DryRun.RequiredByAction == a.ID, nil
}

// clearRequired forgets a requirement that a rejected batch never wrote.
func (g *Gate) clearRequired(ctx context.Context, a events.Action) error {
	key := userstate.UserKey(a.User.ObjectGUID)
	for range 5 {
		e, err := g.users.Get(ctx, key)
		if natsx.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading state of %s: %w", key, err)
		}
		var st rules.State
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			return nil
		}
		switch a.ID {
		case st.RequiredByAction:
			st.ChangeRequired, st.RequiredByAction = false, ""
		case st.DryRun.RequiredByAction:
			st.DryRun.ChangeRequired, st.DryRun.RequiredByAction = false, ""
		default:
			return nil
		}
		data, err := json.Marshal(st)
		if err != nil {
			return fmt.Errorf("encoding state of %s: %w", key, err)
		}
		if _, err := g.users.Update(ctx, key, data, e.Revision()); err == nil {
			return nil
		} else if !isWrongSequence(err) {
			return fmt.Errorf("saving state of %s: %w", key, err)
		}
	}
	return fmt.Errorf("saving state of %s: %w", key, errConflict)
}

// alert tells the admins (notifier: Teams Workflows webhook) once per batch.
func (g *Gate) alert(ctx context.Context, b Batch) error {
	what := "the first full sync of " + b.Domain
	if b.Kind == BatchReevaluate {
		what = "re-evaluating every known user after the rules policy changed"
	}
	reason := fmt.Sprintf("backfill held: %s would act on %d users (threshold %d); nothing is written until approved. Sample: %s. "+
		"Approve with `pwsync backfill approve %s` (approver role) or in the console; reject with `pwsync backfill reject %s`.",
		what, b.Users, b.Threshold, sampleText(b), b.ID, b.ID)
	a := events.Action{ID: events.KeySafe("backfill." + b.ID + ".held"), Kind: events.ActionAlert, Rule: RuleBackfill,
		Reason: reason, EventID: "backfill." + b.ID, EventTime: g.now().UTC(), User: events.UserRef{Domain: b.Domain}}
	if _, err := g.pub.PublishJSON(ctx, a.Subject(), a.ID, a); err != nil {
		return fmt.Errorf("alerting the hold of %s: %w", b.ID, err)
	}
	return nil
}

func sampleText(b Batch) string {
	s := strings.Join(b.Sample, ", ")
	if more := b.Users - len(b.Sample); more > 0 {
		s += fmt.Sprintf(" and %d more", more)
	}
	return s
}

// record writes the batch's audit record: held, released, would_hold,
// approved or rejected (with by whom), with its counts.
func (g *Gate) record(ctx context.Context, b Batch, outcome, by string) error {
	detail := fmt.Sprintf("%s batch %s: %d users, %d actions, threshold %d", b.Kind, b.ID, b.Users, b.Actions, b.Threshold)
	if b.Domain != "" {
		detail += ", domain " + b.Domain
	}
	if by != "" {
		detail += ", by " + by
	}
	if outcome == "published" {
		detail += fmt.Sprintf(", %d actions published", b.Released)
		if b.Superseded > 0 {
			detail += fmt.Sprintf(", %d dropped (the user changed since)", b.Superseded)
		}
	}
	if b.Detail != "" {
		detail += "; " + b.Detail
	}
	return g.audit.Write(ctx, events.AuditRecord{Kind: "backfill", EventID: "backfill." + b.ID, Rule: RuleBackfill,
		Outcome: outcome, Detail: detail, User: events.UserRef{Domain: b.Domain}})
}
