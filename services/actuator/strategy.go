package actuator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/pwsync/pwsync/services/actuator/budget"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/mustchange"
	"github.com/pwsync/pwsync/shared/natsx"
)

// execution is one action being carried out.
type execution struct {
	s        *Service
	a        events.Action
	user     *graph.User
	mu       sync.Mutex
	done     []string // steps carried out (now or before a redelivery); under mu
	delivery uint64   // JetStream's delivery count of the action
	prio     budget.Priority
	// local: user is the cloud join's record (no passwordProfile), not a
	// read of Graph made for this action.
	local bool
}

// do carries out the action's kind on x.user.
func (x *execution) do(ctx context.Context) error {
	switch x.a.Kind {
	case events.ActionRequireChange:
		return x.requireChange(ctx)
	case events.ActionClearChange:
		return x.clearChange(ctx)
	case events.ActionSetPasswordPolicies:
		return x.setPolicies(ctx)
	default:
		return natsx.Permanent(fmt.Errorf("unknown action kind %q", x.a.Kind))
	}
}

// requireChange makes the cloud account demand a new password.
func (x *execution) requireChange(ctx context.Context) error {
	set := x.s.set
	if x.user.SyncEnabled && !set.Synced.TryCloudFlag {
		return x.syncedChain(ctx)
	}
	switch {
	case x.user.ForceChangeNextSignIn:
		x.audit(ctx, "set_force_change", events.OutcomeSkipped, 0, "already required in the cloud")
	default:
		// A PATCH whose answer was lost (Graph may apply a write and answer
		// 5xx, or never answer) is read back before it is sent again.
		err := x.stepChecked(ctx, "set_force_change", func(ctx context.Context, _ time.Time) (bool, error) {
			u, err := x.s.graph.GetUser(ctx, x.user.ID)
			if err != nil {
				return false, err
			}
			return u.ForceChangeNextSignIn && (!set.CloudManaged.WithMFA || u.ForceChangeWithMFA), nil
		}, func(ctx context.Context) error {
			return x.s.graph.SetForceChange(ctx, x.user.ID, true, set.CloudManaged.WithMFA)
		})
		if graph.IsOnPremMastered(err) && x.local {
			// The join said cloud-managed and Graph says synced: the join
			// lags a change of onPremisesSyncEnabled. Ask Graph itself.
			if rerr := x.reread(ctx); rerr != nil {
				return rerr
			}
		}
		if graph.IsOnPremMastered(err) && x.user.SyncEnabled {
			// Mastered on-prem, by Graph's own words and by the user's
			// onPremisesSyncEnabled: Graph will refuse this write every
			// time, so record it as settled and take the chain instead.
			if err := x.markDone(ctx, "set_force_change"); err != nil {
				return err
			}
			return x.syncedChain(ctx)
		}
		if err != nil {
			// Any other refusal (another 400, or "on-premises mastered" for
			// a user Graph itself reports as cloud-managed) is not the
			// synced case: a dead letter that quotes Graph's message.
			return refused(err)
		}
		// The read-back and the revoke need only the PATCH: both at once.
		verify := set.CloudManaged.Verify && !x.a.DryRun
		var took bool
		err = together(ctx, func(ctx context.Context) error {
			if !verify {
				return nil
			}
			var err error
			took, err = x.verifyFlag(ctx)
			return err
		}, func(ctx context.Context) error {
			if !set.CloudManaged.RevokeSessions {
				return nil
			}
			return x.revoke(ctx)
		})
		if err != nil || !verify || took {
			return err
		}
		return x.fallback(ctx)
	}
	if set.CloudManaged.RevokeSessions {
		return x.revoke(ctx)
	}
	return nil
}

// reread replaces the join's record of the user with a read from Graph.
func (x *execution) reread(ctx context.Context) error {
	var u *graph.User
	err := x.s.retry(ctx, "get_user", func(ctx context.Context) error {
		var err error
		u, err = x.s.graph.GetUser(ctx, x.user.ID)
		return err
	})
	if err != nil {
		return err
	}
	x.s.observe(*u)
	x.user, x.local = u, false
	return nil
}

// refused turns Graph's 4xx refusal of a step into a dead letter whose
// detail quotes Graph's code and message; other errors pass unchanged (a
// 4xx is permanent already, see retry; this only says why).
func refused(err error) error {
	var ge *graph.Error
	if !errors.As(err, &ge) || ge.Status < 400 || ge.Status >= 500 || ge.Status == http.StatusTooManyRequests ||
		ge.Status == http.StatusRequestTimeout {
		return err
	}
	return natsx.Permanent(fmt.Errorf("refused by Graph (%d %s): %q: %w", ge.Status, ge.Code, ge.Message, err))
}

// revoke signs the user out everywhere, once. A second revoke is not
// harmless (it signs out again whoever signed in between), and Graph cannot
// tell it from the first, so a lost answer (timeout, reset, a crash right
// after Graph answered) is settled by reading signInSessionsValidFromDateTime.
func (x *execution) revoke(ctx context.Context) error {
	return x.stepChecked(ctx, "revoke_sessions", func(ctx context.Context, since time.Time) (bool, error) {
		u, err := x.s.graph.GetUser(ctx, x.user.ID)
		if err != nil {
			return false, err
		}
		return !u.SessionsValidFrom.IsZero() && !u.SessionsValidFrom.Before(since.Add(-revokeClockSkew)), nil
	}, func(ctx context.Context) error {
		return x.s.graph.RevokeSessions(ctx, x.user.ID)
	})
}

// revokeClockSkew is how far Graph's clock may be behind ours when checking
// whether an earlier revoke took effect.
const revokeClockSkew = 5 * time.Second

// verifyFlag reads passwordProfile back: a PATCH of the flag alone has been
// reported to answer 204 and change nothing (microsoft-graph-docs#4267).
func (x *execution) verifyFlag(ctx context.Context) (bool, error) {
	var took bool
	err := x.s.retry(ctx, "verify_force_change", func(ctx context.Context) error {
		u, err := x.s.graph.GetUser(ctx, x.user.ID)
		if err != nil {
			return err
		}
		x.s.observe(*u)
		took = mustchange.Took(*u)
		return nil
	})
	if err != nil {
		return false, err
	}
	outcome, detail := events.OutcomeOK, "flag confirmed by read-back"
	if !took {
		outcome, detail = events.OutcomeFailed, mustchange.MissingDetail(x.s.set.CloudManaged.Fallback)
	}
	x.audit(ctx, "verify_force_change", outcome, 0, detail)
	return took, nil
}

func (x *execution) fallback(ctx context.Context) error {
	switch x.s.set.CloudManaged.Fallback {
	case mustchange.FallbackTemporaryPassword:
		// The password itself is never logged or audited; the user gets a
		// new one through the helpdesk or self-service reset.
		// Sent twice, a second random password would replace the first:
		// a lost answer is settled by lastPasswordChangeDateTime.
		return x.stepChecked(ctx, string(mustchange.WriteTemporaryPassword), func(ctx context.Context, since time.Time) (bool, error) {
			u, err := x.s.graph.GetUser(ctx, x.user.ID)
			if err != nil {
				return false, err
			}
			return !u.LastPasswordChange.IsZero() && !u.LastPasswordChange.Before(since.Add(-revokeClockSkew)), nil
		}, func(ctx context.Context) error {
			pw, err := x.s.newPass()
			if err != nil {
				return natsx.Permanent(err)
			}
			return x.s.graph.SetPassword(ctx, x.user.ID, pw, true)
		})
	case mustchange.FallbackChain:
		return x.syncedChain(ctx)
	default:
		return natsx.Permanent(errors.New("forceChangePasswordNextSignIn did not take and no fallback is configured"))
	}
}

// syncedChain is the must-change strategy where Graph refuses passwordProfile
// writes: sign the user out everywhere and put them in the group a
// Conditional Access policy blocks until the password is changed.
func (x *execution) syncedChain(ctx context.Context) error {
	set := x.s.set
	if !set.Synced.RevokeSessions && set.Synced.PendingGroupID == "" {
		return natsx.Permanent(errors.New("synced user and no chain configured (actuator.synced.revoke_sessions, actuator.synced.pending_group_id)"))
	}
	// Neither needs the other: both at once.
	return together(ctx, func(ctx context.Context) error {
		if !set.Synced.RevokeSessions {
			return nil
		}
		return x.revoke(ctx)
	}, func(ctx context.Context) error {
		g := set.Synced.PendingGroupID
		if g == "" {
			return nil
		}
		// An add whose answer was lost is settled by asking Graph whether
		// the user is a member; a client that cannot ask sends it again,
		// and Graph's "already exist" answer is success.
		return x.stepChecked(ctx, "add_pending_group", func(ctx context.Context, _ time.Time) (bool, error) {
			mc, ok := x.s.graph.(graph.MemberChecker)
			if !ok {
				return false, nil
			}
			return mc.IsGroupMember(ctx, g, x.user.ID)
		}, func(ctx context.Context) error {
			return x.s.graph.AddGroupMember(ctx, g, x.user.ID)
		})
	})
}

// setPolicies writes passwordPolicies unless the cloud already has it (our
// own earlier write, or someone fixed it meanwhile).
func (x *execution) setPolicies(ctx context.Context) error {
	if events.HasPolicy(x.user.PasswordPolicies, events.PolicyDisablePasswordExpiration) ==
		events.HasPolicy(x.a.Policies, events.PolicyDisablePasswordExpiration) {
		x.audit(ctx, "set_password_policies", events.OutcomeSkipped, 0, "already "+x.user.PasswordPolicies)
		return nil
	}
	want := events.HasPolicy(x.a.Policies, events.PolicyDisablePasswordExpiration)
	return x.stepChecked(ctx, "set_password_policies", func(ctx context.Context, _ time.Time) (bool, error) {
		u, err := x.s.graph.GetUser(ctx, x.user.ID)
		if err != nil {
			return false, err
		}
		return events.HasPolicy(u.PasswordPolicies, events.PolicyDisablePasswordExpiration) == want, nil
	}, func(ctx context.Context) error {
		return x.s.graph.SetPasswordPolicies(ctx, x.user.ID, x.a.Policies)
	})
}
