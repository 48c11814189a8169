package actuator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
)

// clearChange undoes what requireChange did that is no longer wanted.
func (x *execution) clearChange(ctx context.Context) error {
	if g := x.a.AwaitCloud; g != nil && !x.a.DryRun {
		if done, err := x.awaitCloud(ctx, *g); done || err != nil {
			return err
		}
	}
	set := x.s.set
	if set.Undo.ClearCloudFlag && !x.user.SyncEnabled && (x.user.ForceChangeNextSignIn || x.user.ForceChangeWithMFA) {
		if err := x.step(ctx, "clear_force_change", func(ctx context.Context) error {
			return x.s.graph.SetForceChange(ctx, x.user.ID, false, false)
		}); err != nil {
			return err
		}
	}
	if g := set.Synced.PendingGroupID; g != "" && set.Undo.RemoveFromPendingGroup {
		added, err := x.undoneDid(ctx, "add_pending_group")
		if err != nil {
			return err
		}
		if !added {
			x.audit(ctx, "remove_pending_group", events.OutcomeSkipped, 0, "pwsync did not add this user to the group")
			return nil
		}
		return x.step(ctx, "remove_pending_group", func(ctx context.Context) error {
			return x.s.graph.RemoveGroupMember(ctx, g, x.user.ID)
		})
	}
	return nil
}

// awaitCloud holds an undo decided without the user's cloud state until
// Entra has the new password (see events.UndoGate), reading the user on
// each delivery. done means the undo is over without undoing anything.
func (x *execution) awaitCloud(ctx context.Context, g events.UndoGate) (done bool, err error) {
	u, since, what := x.user, g.ADPasswordSet, "the AD password set at "+g.ADPasswordSet.UTC().Format(time.RFC3339)+" (password hash sync)"
	if !u.SyncEnabled {
		// pwsync's own temporary password (fallback) comes seconds after: the
		// evaluator's margin is in the gate
		since, what = g.UserChangeFrom, "a cloud password change after pwsync required one"
		if since.IsZero() {
			return false, nil // not known when it was required: undo as before
		}
	}
	has := !u.LastPasswordChange.IsZero() && !u.LastPasswordChange.Before(since.Add(-undoClockSkew))
	now := x.s.now()
	// the last deliveries are kept for the bound's outcome: JetStream stops
	// redelivering after natsx.MaxDeliver
	bound := !now.Before(g.Until) || x.delivery+2 >= natsx.MaxDeliver
	switch {
	case has:
		x.audit(ctx, "await_cloud", events.OutcomeOK, 0, "Entra has "+what+": lastPasswordChangeDateTime "+u.LastPasswordChange.UTC().Format(time.RFC3339))
		return false, nil
	case !bound:
		if x.delivery <= 1 {
			x.audit(ctx, "await_cloud", events.OutcomeWaiting, 0, "undo waits until Entra has "+what+", at most until "+g.Until.UTC().Format(time.RFC3339))
		}
		wait := max(min(g.Until.Sub(now), undoPoll(g)), time.Second)
		return false, &natsx.RetryLater{After: wait, Err: errAwaitingCloud}
	case u.SyncEnabled:
		msg := "password hash sync did not carry " + what + " to Entra by " + g.Until.UTC().Format(time.RFC3339) +
			": lifting the block anyway (until it arrives, Entra still accepts the previous password); check Entra Connect's password hash sync"
		x.audit(ctx, "await_cloud", events.OutcomeFailed, 0, msg)
		return false, x.s.alert(ctx, x.a, msg)
	default:
		x.audit(ctx, "await_cloud", events.OutcomeSkipped, 0, "the user has not changed the cloud password by "+g.Until.UTC().Format(time.RFC3339)+
			": the must-change flag and the pending group stay until they do (or an admin lifts them)")
		return true, nil
	}
}

var errAwaitingCloud = errors.New("waiting for Entra to have the new password")

// undoClockSkew absorbs clock differences between the DC and Entra.
const undoClockSkew = 5 * time.Second

// undoPoll spreads a gate's reads over the wait: a few reads, not a storm.
func undoPoll(g events.UndoGate) time.Duration {
	return max(g.Until.Sub(g.ADPasswordSet)/6, 15*time.Second)
}

// alert publishes an admin alert about action a (delivered by the notifier).
func (s *Service) alert(ctx context.Context, a events.Action, msg string) error {
	al := events.Action{ID: events.KeySafe("alert." + a.ID), Kind: events.ActionAlert, Rule: "password-hash-sync", Reason: msg,
		EventID: a.EventID, EventTime: a.EventTime, User: a.User, Seq: a.Seq}
	if _, err := natsx.NewPublisher(s.js).PublishJSON(ctx, al.Subject(), al.ID, al); err != nil {
		return fmt.Errorf("publishing alert %s: %w", al.ID, err)
	}
	return nil
}

func resultKey(actionID string) string { return events.KeySafe("result." + actionID) }

// recordResult keeps which steps an action carried out, so that undoing it
// writes only what it did.
func (x *execution) recordResult(ctx context.Context) error {
	if x.a.DryRun {
		return nil
	}
	data, _ := json.Marshal(x.done)
	if _, err := x.s.done.Put(ctx, resultKey(x.a.ID), data); err != nil {
		return fmt.Errorf("recording result of %s: %w", x.a.ID, err)
	}
	return nil
}

// undoneDid reports whether the action being undone carried out step. When
// that is unknown (no Undoes, or its record expired) it answers true: an
// extra idempotent removal is better than a user left blocked.
func (x *execution) undoneDid(ctx context.Context, step string) (bool, error) {
	if x.a.Undoes == "" {
		return true, nil
	}
	e, err := x.s.done.Get(ctx, resultKey(x.a.Undoes))
	switch {
	case natsx.IsNotFound(err):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("reading result of %s: %w", x.a.Undoes, err)
	}
	var steps []string
	if json.Unmarshal(e.Value(), &steps) != nil {
		return true, nil
	}
	return slices.Contains(steps, step), nil
}
