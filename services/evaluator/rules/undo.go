package rules

import (
	"time"

	"github.com/pwsync/pwsync/shared/events"
)

// RulePasswordHashSync alerts when password hash sync did not carry a new
// AD password to Entra within the undo's wait.
const RulePasswordHashSync = "password-hash-sync"

// UndoPolicy configures when password-changed undoes a forced change.
type UndoPolicy struct {
	// AwaitCloud bounds a synced user's wait for password hash sync: then
	// the block is lifted anyway, with an alert. 0 = no wait (undo at AD's
	// change).
	AwaitCloud time.Duration
	// ClearOnADChange undoes a cloud-managed user's forced change at AD's
	// password change, for organisations whose other tool copies AD
	// passwords to those accounts. Off: wait for the cloud change.
	ClearOnADChange bool
}

// cloudSkew absorbs clock differences between the DC and Entra when
// comparing pwdLastSet with lastPasswordChangeDateTime.
const cloudSkew = 5 * time.Second

// ownWriteMargin: a cloud password change this soon after pwsync required
// one is taken for pwsync's own temporary password (the cloud-managed
// fallback writes one seconds after the flag did not take), not the user's.
// That fallback leaves nothing to undo, so a user who did change within it
// only has the end recorded at the next change.
const ownWriteMargin = 30 * time.Second

// userChangedCloud reports whether the cloud account shows a password change
// by the user after pwsync required one at requiredAt.
func userChangedCloud(c *events.CloudUser, requiredAt time.Time) bool {
	return !requiredAt.IsZero() && cloudHasSince(c, userChangeFrom(requiredAt))
}

// userChangeFrom is the threshold for cloudHasSince past which a cloud
// change is the user's; the actuator's undo gate carries it
// (events.UndoGate.UserChangeFrom) and compares with the same skew.
func userChangeFrom(requiredAt time.Time) time.Time {
	if requiredAt.IsZero() {
		return time.Time{}
	}
	return requiredAt.Add(ownWriteMargin + cloudSkew)
}

// cloudHasSince reports whether the cloud account's password was set at or
// after t.
func cloudHasSince(c *events.CloudUser, t time.Time) bool {
	return c != nil && !c.LastPasswordChange.IsZero() && !t.IsZero() && !c.LastPasswordChange.Before(t.Add(-cloudSkew))
}

// awaitUndo decides whether the undo of a forced change, due because AD
// shows a new password u, must wait for the cloud. It returns true when it
// recorded the wait (and a bound timer); false means undo now, with gate
// set on the action when the cloud side is unknown.
func awaitUndo(p Policy, s State, next *State, res *Result, ev events.Envelope, u events.ADUser, reqBy string) (wait bool, gate *events.UndoGate, why string) {
	adSet := events.FileTime(u.PwdLastSet)
	c := s.Cloud
	if c == nil || c.Removed {
		// No cloud state (Graph side off, or not joined yet): the actuator
		// reads the user before it undoes.
		if p.Undo.AwaitCloud <= 0 {
			return false, nil, ""
		}
		g := &events.UndoGate{ADPasswordSet: adSet, Until: ev.Time.Add(p.Undo.AwaitCloud)}
		if !p.Undo.ClearOnADChange {
			g.RequiredAt, g.UserChangeFrom = s.RequiredAt, userChangeFrom(s.RequiredAt)
		}
		return false, g, "; the actuator checks Entra has the new password first"
	}
	aw := &UndoAwait{Since: ev.Time, PwdLastSet: u.PwdLastSet, RequiredAt: s.RequiredAt, Undoes: reqBy}
	switch {
	case c.SyncEnabled && p.Undo.AwaitCloud <= 0:
		return false, nil, ""
	case c.SyncEnabled && cloudHasSince(c, adSet):
		return false, nil, "; Entra already has it (password hash sync)"
	case c.SyncEnabled:
		aw.For, aw.Until = AwaitHashSync, ev.Time.Add(p.Undo.AwaitCloud)
		res.Timers = append(res.Timers, events.Timer{Due: aw.Until, ObjectGUID: u.ObjectGUID, PwdLastSet: u.PwdLastSet})
		res.Decisions = append(res.Decisions, Decision{RulePasswordChanged, "wait",
			"password set in AD; the block stays until Entra has it (password hash sync: lastPasswordChangeDateTime at or after " +
				adSet.Format(time.RFC3339) + "), at most until " + aw.Until.Format(time.RFC3339)})
	case p.Undo.ClearOnADChange:
		return false, nil, "; cloud-managed account, undone at AD's change (actuator.undo.clear_cloud_flag)"
	case userChangedCloud(c, s.RequiredAt):
		return false, nil, "; the user has already changed the cloud password"
	default:
		aw.For = AwaitCloudChange
		res.Decisions = append(res.Decisions, Decision{RulePasswordChanged, "wait",
			"password set in AD; a cloud-managed account's cloud password is not AD's, so the must-change stays until the user changes the cloud password"})
	}
	next.UndoAwait = aw
	return true, nil, ""
}

// releaseUndo ends a wait when the cloud state c shows the new password.
func releaseUndo(p Policy, next *State, res *Result, ev events.Envelope, c events.CloudUser) {
	aw := next.UndoAwait
	if aw == nil {
		return
	}
	var reason string
	switch {
	case aw.For == AwaitHashSync && cloudHasSince(&c, events.FileTime(aw.PwdLastSet)):
		reason = "Entra has the new password since " + c.LastPasswordChange.UTC().Format(time.RFC3339) + " (password hash sync): lifting the block"
	case aw.For == AwaitCloudChange && userChangedCloud(&c, aw.RequiredAt):
		reason = "the user changed the cloud password at " + c.LastPasswordChange.UTC().Format(time.RFC3339) + ": the forced change is complete"
	default:
		return
	}
	next.UndoAwait = nil
	a := newAction(events.ActionClearChange, RulePasswordChanged, reason, ev, refOf(*next), next.AD.USNChanged, false)
	a.Undoes = aw.Undoes
	res.Actions = append(res.Actions, a)
	res.Decisions = append(res.Decisions, Decision{RulePasswordChanged, "act", reason})
}

// EvaluateUndoBound handles the end of a wait for password hash sync: the
// block is lifted anyway and the admins are told what to check.
func EvaluateUndoBound(p Policy, s State, ev events.Envelope, t events.Timer) (res Result) {
	res.State = s
	aw := s.UndoAwait
	if aw == nil || aw.For != AwaitHashSync || aw.PwdLastSet != t.PwdLastSet {
		return res // the cloud caught up, or a newer change replaced this wait
	}
	next := s
	next.UndoAwait = nil
	res.Changed, res.State = true, next
	ref := refOf(s)
	set := events.FileTime(aw.PwdLastSet).Format(time.RFC3339)
	reason := "password hash sync did not carry the AD password set at " + set + " to Entra since " + aw.Since.UTC().Format(time.RFC3339) +
		": lifting the block anyway (until it arrives, Entra still accepts the previous password)"
	a := newAction(events.ActionClearChange, RulePasswordChanged, reason, ev, ref, s.AD.USNChanged, p.DryRun)
	a.Undoes = aw.Undoes
	alert := "password hash sync did not follow for " + ref.UPN + ": the AD password set at " + set +
		" is not in Entra after " + aw.Until.Sub(aw.Since).String() + "; pwsync lifted the pending-group block anyway. Check that Entra Connect's password hash sync is enabled and running " +
		"(Synchronization Service, event IDs 611/656/657 on the Connect server), that the user's OU is in sync scope, and the user's lastPasswordChangeDateTime in Entra"
	res.Actions = append(res.Actions, a,
		newAction(events.ActionAlert, RulePasswordHashSync, alert, ev, ref, s.AD.USNChanged, p.DryRun))
	res.Decisions = append(res.Decisions, Decision{RulePasswordChanged, "act", reason},
		Decision{RulePasswordHashSync, "act", alert})
	return res
}
