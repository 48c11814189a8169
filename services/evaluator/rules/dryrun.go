package rules

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pwsync/pwsync/shared/events"
)

// RuleDryRun names the decisions taken when pwsync goes live after a dry
// run: what dry-run only pretended to do is done then.
const RuleDryRun = "dry-run"

// afterDryRunPrefix marks the scheduler's timer that makes a user's first
// live evaluation after a dry run happen even without a new event.
const afterDryRunPrefix = "after-dry-run."

func afterDryRunKey(d DryRunState) string {
	return afterDryRunPrefix + strconv.FormatInt(d.Since.Unix(), 10)
}

func isAfterDryRun(t events.ExpiryTimer) bool { return strings.HasPrefix(t.Key, afterDryRunPrefix) }

// required is the cloud requirement the rules reason from.
func required(p Policy, s State) (bool, string) {
	if p.DryRun && s.DryRun.Active {
		return s.DryRun.ChangeRequired, s.DryRun.RequiredByAction
	}
	return s.ChangeRequired, s.RequiredByAction
}

// setRequired records a requirement decided (or undone) at at: the real
// one, or under dry-run only the pretended one.
func setRequired(p Policy, s *State, on bool, by string, at time.Time) {
	if p.DryRun {
		startDryRun(s, at)
		s.DryRun.ChangeRequired, s.DryRun.RequiredByAction = on, by
		return
	}
	s.ChangeRequired, s.RequiredByAction = on, by
	s.RequiredAt = time.Time{}
	if on {
		s.RequiredAt = at
	}
}

// Handled is the part of the user's expiry schedule the rules count as
// handled for the password whose schedule key is key: what was done, and
// under dry-run also what dry-run pretended to do.
func Handled(p Policy, s State, key string) ExpiryState {
	live := s.Expiry
	if !p.DryRun || !s.DryRun.Active {
		return live
	}
	d := s.DryRun.Expiry
	switch {
	case d.Key == "":
		return live
	case d.Key == live.Key:
		u := ExpiryState{Key: d.Key, Enforced: d.Enforced || live.Enforced, Fired: slices.Concat(live.Fired, d.Fired),
			Skipped: slices.Concat(live.Skipped, d.Skipped)}
		slices.Sort(u.Fired)
		u.Fired = slices.Compact(u.Fired)
		return u
	case d.Key == key || live.Key != key:
		return d
	}
	return live
}

// setHandled records the expiry state after a decision at at.
func setHandled(p Policy, s *State, x ExpiryState, at time.Time) {
	if p.DryRun {
		startDryRun(s, at)
		s.DryRun.Expiry = x
		return
	}
	s.Expiry = x
}

func startDryRun(s *State, at time.Time) {
	if s.DryRun.Active {
		return
	}
	s.DryRun = DryRunState{Active: true, Since: at, ChangeRequired: s.ChangeRequired, RequiredByAction: s.RequiredByAction}
}

// endDryRun is a user's first live evaluation after dry-run decided about
// them (next holds the current AD state): a requirement dry-run only
// pretended is made now if AD still demands it, one dry-run pretended to
// undo is undone now; the expiry points dry-run pretended to handle are
// pending again (the real Expiry state never counted them) and follow
// through the scheduler. The dry state is dropped.
func endDryRun(p Policy, next *State, res *Result, ev events.Envelope) {
	d := next.DryRun
	next.DryRun = DryRunState{}
	res.Changed = true
	u := next.AD
	if !d.Active || !next.Seen || u.Deleted || !next.InScope {
		return
	}
	ref := refOf(*next)
	since := " (dry-run since " + d.Since.UTC().Format(time.RFC3339) + ")"
	evAfter := ev
	evAfter.ID = ev.ID + ".after-dry-run" // not the ID the event's own rules would use
	switch {
	case u.PwdLastSetZero() && d.ChangeRequired && !next.ChangeRequired:
		switch {
		case !p.ForcedChange:
			res.Decisions = append(res.Decisions, Decision{RuleForcedChange, "skip", "dry-run pretended to require a change; rule disabled now"})
		case u.NeverExpires() && !p.IncludeNeverExpires:
			res.Decisions = append(res.Decisions, Decision{RuleForcedChange, "skip", "dry-run pretended to require a change; " + neverExpiresSkip})
		default:
			reason := "must change at next logon in AD; dry-run only pretended to require the change in the cloud" + since
			a := newAction(events.ActionRequireChange, RuleForcedChange, reason, evAfter, ref, u.USNChanged, false)
			next.ChangeRequired, next.RequiredByAction = true, a.ID
			res.Actions = append(res.Actions, a)
			res.Decisions = append(res.Decisions, Decision{RuleForcedChange, "act", reason})
		}
	case !u.PwdLastSetZero() && next.ChangeRequired && !d.ChangeRequired:
		undoes := next.RequiredByAction
		next.ChangeRequired, next.RequiredByAction = false, ""
		if !p.PasswordChanged {
			res.Decisions = append(res.Decisions, Decision{RulePasswordChanged, "skip", "rule disabled; pending state cleared"})
			return
		}
		reason := "password set in AD while pwsync ran in dry-run, after pwsync required a change" + since
		a := newAction(events.ActionClearChange, RulePasswordChanged, reason, evAfter, ref, u.USNChanged, false)
		a.Undoes = undoes
		res.Actions = append(res.Actions, a)
		res.Decisions = append(res.Decisions, Decision{RulePasswordChanged, "act", reason})
	default:
		res.Decisions = append(res.Decisions, Decision{RuleDryRun, "skip",
			"live again; nothing dry-run pretended needs doing now beyond the expiry points still due" + since})
	}
}
