// Package rules decides what pwsync does about a user. It is pure: state,
// event and policy in, new state and actions out; no I/O, no logging, no clock.
package rules

import (
	"fmt"
	"strings"
	"time"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/userstate"
)

// The per-user state the rules read and write lives in shared/userstate,
// its one owner (the user view and the CLI read it without the rules).
type (
	State         = userstate.State
	UndoAwait     = userstate.UndoAwait
	ExpiryState   = userstate.ExpiryState
	SkippedNotice = userstate.SkippedNotice
	DryRunState   = userstate.DryRunState
)

// What an undo waits for (userstate.UndoAwait.For).
const (
	AwaitHashSync    = userstate.AwaitHashSync
	AwaitCloudChange = userstate.AwaitCloudChange
)

// Rule names, as they appear in actions and the audit trail.
const (
	RuleScope           = "scope"
	RuleForcedChange    = "forced-change"
	RulePasswordChanged = "password-changed"
)

// Policy is the rule configuration.
type Policy struct {
	IncludeOUs       []string // DNs; empty = every user
	BreakGlassUPNs   []string
	BreakGlassGroups []string // group DNs (nested membership through ADUser.Groups)
	IncludeDisabled  bool
	// IncludeGroups: members (nested) of these AD groups are in scope, as
	// are users under IncludeOUs.
	IncludeGroups []string
	// IncludeEntraGroups names Entra groups whose (transitive) members are
	// in scope; EntraMembers is their current membership (cloud object IDs),
	// refreshed by the evaluator. Nil when no Entra group is configured.
	IncludeEntraGroups []string
	EntraMembers       map[string]bool

	// ResetNotice: forced-change also tells the user their password was reset.
	ResetNotice bool
	Expiry      ExpiryPolicy

	ForcedChange bool
	// IncludeNeverExpires (opt-in, stricter than AD) also acts on pwdLastSet 0
	// when "password never expires" is set, which AD does not treat as must change.
	IncludeNeverExpires bool
	Backfill            bool // act on users already flagged when first seen
	PasswordChanged     bool
	Undo                UndoPolicy

	DryRun bool

	Cloud CloudPolicy
	Risk  RiskPolicy // Identity Protection detections (risk.go)
}

// Decision explains one rule's verdict, for the audit trail.
type Decision struct {
	Rule    string `json:"rule"`
	Outcome string `json:"outcome"` // act | skip
	Reason  string `json:"reason"`
}

// Result is the output of Evaluate.
type Result struct {
	State     State
	Actions   []events.Action
	Decisions []Decision
	Changed   bool // State differs from the input state and must be saved
	Timers    []events.Timer
}

// EvaluateAD applies the rules to a new AD state of a user. ev is the
// envelope that carried it: its ID and time go into the actions, so a
// redelivered event decides exactly the same thing.
func EvaluateAD(p Policy, s State, ev events.Envelope, u events.ADUser) (res Result) {
	res.State = s
	// Stale or repeated: an older state than what we already decided on.
	// A full resync re-reads users with their current USN: equal USN and equal
	// state means nothing changed, so no action storm after a lost cookie.
	u, offset, stale := placeUSN(s, u)
	if stale {
		res.Decisions = append(res.Decisions, Decision{RuleScope, "skip", "stale event: older than the state already evaluated"})
		return res
	}
	// (after a dry run, the same state is worth one live look: endDryRun)
	if s.Seen && u.USNChanged == s.AD.USNChanged && sameAD(s.AD, u) && (p.DryRun || !s.DryRun.Active) {
		return res
	}

	inScope, why := InScope(p, u, cloudID(s))
	next := s
	next.AD, next.Seen, next.InScope, next.USNOffset = u, true, inScope, offset
	res.Changed = true
	// Every return below hands back next, whatever it became.
	defer func() { res.State = next }()
	defer riskAfterChange(p, s, &next, &res, ev, u) // risk.go: the loop's AD side

	if !p.DryRun && s.DryRun.Active {
		endDryRun(p, &next, &res, ev)
		// the rules below reason from what is true now
		s.ChangeRequired, s.RequiredByAction = next.ChangeRequired, next.RequiredByAction
	}
	if u.Deleted {
		next.ChangeRequired, next.RequiredByAction, next.UndoAwait = false, "", nil
		next.DryRun.ChangeRequired, next.DryRun.RequiredByAction = false, ""
		res.Decisions = append(res.Decisions, Decision{RuleScope, "skip", "deleted in AD"})
		return res
	}
	if !inScope {
		res.Decisions = append(res.Decisions, Decision{RuleScope, "skip", why})
		return res
	}

	if !next.WritebackAwait.IsZero() && !events.FileTime(u.PwdLastSet).Before(next.WritebackAwait.Add(-writebackTolerance)) {
		next.WritebackAwait = time.Time{} // AD followed the cloud change
		next.WritebackFollowed = u.PwdLastSet
	}
	if u.NeverExpires() != s.AD.NeverExpires() || !s.Seen || !s.InScope {
		defer syncExpiry(p, &next, &res, ev, RuleNeverExpires)
	}

	if aw := next.UndoAwait; aw != nil && aw.For == AwaitHashSync && u.PwdLastSet != 0 && u.PwdLastSet != aw.PwdLastSet {
		// a newer AD password while waiting: the cloud must have that one
		moved := *aw
		moved.PwdLastSet = u.PwdLastSet
		next.UndoAwait = &moved
		res.Timers = append(res.Timers, events.Timer{Due: moved.Until, ObjectGUID: u.ObjectGUID, PwdLastSet: u.PwdLastSet})
	}

	ref := refOf(next)
	req, reqBy := required(p, s)
	switch {
	case u.PwdLastSetZero() && !req:
		reason, act := forcedChangeTrigger(p, s, u)
		if !act {
			res.Decisions = append(res.Decisions, Decision{RuleForcedChange, "skip", reason})
			return res
		}
		a := newAction(events.ActionRequireChange, RuleForcedChange, reason, ev, ref, u.USNChanged, p.DryRun)
		a.ID = actionID(p.DryRun, RuleForcedChange, ref, writeID(ev, u))
		setRequired(p, &next, true, a.ID, ev.Time)
		if !p.DryRun {
			next.UndoAwait = nil // a new reset: the block stays, nothing to undo
		}
		res.Actions = append(res.Actions, a)
		res.Decisions = append(res.Decisions, Decision{RuleForcedChange, "act", reason})
		// Only a reset seen happening is news to the user; an old flag found
		// by backfill or a move into scope is not "your password was reset".
		if p.ResetNotice && s.Seen && s.InScope && s.AD.PwdLastSet != 0 {
			res.Actions = append(res.Actions, resetNotice(p, next, ev, ref, writeID(ev, u)))
			res.Decisions = append(res.Decisions, Decision{RuleResetNotice, "act", "password reset in AD; telling the user"})
		}

	case !u.PwdLastSetZero() && req && u.PwdLastSet != s.AD.PwdLastSet:
		// A new non-zero pwdLastSet: the user (or a helpdesk without
		// must-change) set a password. Undo what we did, once.
		setRequired(p, &next, false, "", ev.Time)
		if !p.PasswordChanged {
			res.Decisions = append(res.Decisions, Decision{RulePasswordChanged, "skip", "rule disabled; pending state cleared"})
			return res
		}
		reason := "password set in AD after pwsync required a change"
		var gate *events.UndoGate
		if !p.DryRun {
			wait, g, why := awaitUndo(p, s, &next, &res, ev, u, reqBy)
			if wait {
				return res
			}
			gate, reason = g, reason+why
		}
		a := newAction(events.ActionClearChange, RulePasswordChanged, reason, ev, ref, u.USNChanged, p.DryRun)
		a.ID = actionID(p.DryRun, RulePasswordChanged, ref, writeID(ev, u))
		a.Undoes, a.AwaitCloud = reqBy, gate
		res.Actions = append(res.Actions, a)
		res.Decisions = append(res.Decisions, Decision{RulePasswordChanged, "act", reason})
	}
	return res
}

// neverExpiresSkip is why pwdLastSet 0 alone is not acted on.
const neverExpiresSkip = "pwdLastSet is 0 but password never expires is set: AD does not require a change (MS-ADA3); include_never_expires is off"

// forcedChangeTrigger says whether a must-change state is new enough to act on.
func forcedChangeTrigger(p Policy, s State, u events.ADUser) (string, bool) {
	switch {
	case !p.ForcedChange:
		return "rule disabled", false
	case u.NeverExpires() && !p.IncludeNeverExpires:
		return neverExpiresSkip, false
	case !s.Seen && !p.Backfill:
		return "already flagged at first sync and backfill is off", false
	case !s.Seen:
		return "flagged in AD before pwsync first synced (backfill)", true
	case !s.InScope:
		return "came into scope while flagged in AD", true
	case s.AD.PwdLastSet != 0:
		return "pwdLastSet became 0 in AD (must change at next logon)", true
	}
	// Flagged before, not acted on (e.g. the rule was off then): an unrelated
	// attribute change must not trigger a write now.
	return "still flagged; nothing new", false
}

// InScope applies the scope rule: break-glass first, always, then disabled
// accounts, then the includes (any of OU, AD group, Entra group; none
// configured = everyone). cloudID is the joined cloud account, if known.
func InScope(p Policy, u events.ADUser, cloudID string) (bool, string) {
	for _, bg := range p.BreakGlassUPNs {
		if u.UPN != "" && strings.EqualFold(bg, u.UPN) {
			return false, "break-glass account (upn)"
		}
	}
	for _, g := range p.BreakGlassGroups {
		if memberOf(u, g) {
			return false, "break-glass account (group " + g + ")"
		}
	}
	if u.Disabled() && !p.IncludeDisabled {
		return false, "disabled in AD"
	}
	if len(p.IncludeOUs) == 0 && len(p.IncludeGroups) == 0 && len(p.IncludeEntraGroups) == 0 {
		return true, "no include rules: every user"
	}
	dn := strings.ToLower(u.DN)
	for _, ou := range p.IncludeOUs {
		if strings.HasSuffix(dn, ","+strings.ToLower(ou)) {
			return true, "under included OU " + ou
		}
	}
	for _, g := range p.IncludeGroups {
		if memberOf(u, g) {
			return true, "member of included AD group " + g
		}
	}
	if cloudID != "" && p.EntraMembers[cloudID] {
		return true, "member of an included Entra group"
	}
	return false, "not under an included OU nor in an included group"
}

// memberOf reports membership of group: direct (memberOf) or nested (the
// groups of interest ingest resolved transitively).
func memberOf(u events.ADUser, group string) bool {
	for _, m := range u.MemberOf {
		if strings.EqualFold(group, m) {
			return true
		}
	}
	for _, m := range u.Groups {
		if strings.EqualFold(group, m) {
			return true
		}
	}
	return false
}

func cloudID(s State) string {
	if s.Cloud == nil || s.Cloud.Removed {
		return ""
	}
	return s.Cloud.ID
}

// Ref is the user reference carried by actions.
func Ref(u events.ADUser) events.UserRef {
	return events.UserRef{Domain: u.Domain, ObjectGUID: u.ObjectGUID, ImmutableID: u.ImmutableID,
		UPN: u.UPN, DN: u.DN, Mail: u.Mail}
}

func newAction(kind events.ActionKind, rule, reason string, ev events.Envelope, ref events.UserRef, seq int64, dry bool) events.Action {
	return events.Action{
		ID: actionID(dry, rule, ref, ev.ID), Kind: kind, Rule: rule, Reason: reason,
		EventID: ev.ID, EventTime: ev.Time, User: ref, Seq: seq, DryRun: dry,
	}
}

// actionID names an action: by the AD state its event carries, whatever
// the policy revision (events.StateID). A dry-run action's ID differs from
// the live one's: JetStream drops a repeated ID within its duplicate
// window, and the live action decided after going live must not be taken
// for the dry one.
func actionID(dry bool, rule string, ref events.UserRef, eventID string) string {
	id := events.ActionID(rule, ref, events.StateID(eventID))
	if dry {
		return "dry-run." + id
	}
	return id
}

// writeID names the pwdLastSet write a forced change or a password change
// acts on, for the action's ID: the write's replication version (one per
// originating write, the same on every DC; MS-ADTS 3.1.1.1.9), so that
// every read of one write decides one action: a re-read after a policy
// change, a newer state with other attributes changed, the write seen on
// another DC, each evaluated before the first read stored the state (a
// restart, concurrent workers). Two resets are two writes. Without the
// version (replPropertyMetaData unreadable): the event's AD state.
func writeID(ev events.Envelope, u events.ADUser) string {
	if u.PwdVersion > 0 {
		return fmt.Sprintf("ad.%s.pwd%d", u.ObjectGUID, u.PwdVersion)
	}
	return ev.ID
}

// sameAD reports whether two AD states agree on everything the rules read.
func sameAD(a, b events.ADUser) bool {
	return a.PwdLastSet == b.PwdLastSet && a.UserAccountControl == b.UserAccountControl &&
		a.DN == b.DN && a.UPN == b.UPN && a.Deleted == b.Deleted &&
		a.ExpiryComputed == b.ExpiryComputed && a.Expiry == b.Expiry && a.ExpirySource == b.ExpirySource &&
		a.PolicyName == b.PolicyName && a.Language == b.Language && a.DisplayName == b.DisplayName &&
		strings.Join(a.MemberOf, "\n") == strings.Join(b.MemberOf, "\n") && strings.Join(a.Groups, "\n") == strings.Join(b.Groups, "\n")
}
