package rules

import (
	"time"

	"github.com/pwsync/pwsync/shared/events"
)

// More rule names.
const (
	RuleNeverExpires   = "never-expires"
	RuleDrift          = "drift"
	RuleWritebackGap   = "writeback-gap"
	RuleCloudPwdChange = "cloud-password-change"
)

// CloudPolicy configures the rules that look at the cloud side.
type CloudPolicy struct {
	// NeverExpires keeps passwordPolicies' DisablePasswordExpiration in step
	// with AD's "password never expires" (tenants that use the cloud expiry
	// policy for synced users).
	NeverExpires bool
	// DriftCooldown: a drift is re-applied once; another drift of the same
	// user within this time is not re-applied but alerted (a sync rule
	// fighting us would otherwise make a write loop).
	DriftCooldown time.Duration
	// PendingTimeout: how long our own write may take to show in delta
	// before a differing cloud state counts as drift.
	PendingTimeout time.Duration
	// WritebackWindow: a cloud password change of a synced user that AD's
	// pwdLastSet does not follow within this window is a writeback gap.
	WritebackWindow time.Duration
}

// writebackTolerance absorbs clock skew between the DC and Entra.
const writebackTolerance = 2 * time.Minute

// EvaluateCloud applies the cloud-side rules to a user's new cloud state.
// The caller has joined it to the AD user (s is that user's state).
func EvaluateCloud(p Policy, s State, ev events.Envelope, c events.CloudUser) (res Result) {
	res.State = s
	next := s
	prev := s.Cloud
	if prev != nil {
		c = mergeCloud(*prev, c)
	}
	c.Absent = nil // what stays unknown after the merge is the zero value
	if prev != nil && prev.Equal(c) {
		return res // the same state again (delta round, redelivery)
	}
	next.Cloud = &c
	res.Changed = true
	if next.Seen && len(p.IncludeEntraGroups) > 0 && !next.AD.Deleted {
		// scope by Entra group depends on the joined account
		next.InScope, _ = InScope(p, next.AD, cloudID(next))
	}
	defer func() { res.State = next }()

	if c.Removed {
		next.PoliciesPending = ""
		res.Decisions = append(res.Decisions, Decision{RuleDrift, "skip", "cloud account removed"})
		return res
	}
	// A synced user's password changed in the cloud (SSPR, admin reset): AD
	// must follow through password writeback, else the two passwords differ.
	// Each change is judged on its own: AD's pwdLastSet follows it only if it
	// is newer than the change (less clock skew) and not the value that
	// already followed an earlier change.
	if c.SyncEnabled && prev != nil && c.LastPasswordChange.After(prev.LastPasswordChange) && p.Cloud.WritebackWindow > 0 {
		adChange := events.FileTime(s.AD.PwdLastSet)
		followedBefore := s.WritebackFollowed != 0 && s.AD.PwdLastSet == s.WritebackFollowed
		if !s.Seen || followedBefore || adChange.Before(c.LastPasswordChange.Add(-writebackTolerance)) {
			next.WritebackAwait = c.LastPasswordChange
			res.Timers = append(res.Timers, events.Timer{Due: ev.Time.Add(p.Cloud.WritebackWindow),
				ObjectGUID: s.AD.ObjectGUID, CloudChange: c.LastPasswordChange})
			res.Decisions = append(res.Decisions, Decision{RuleCloudPwdChange, "act",
				"password changed in the cloud; waiting for AD to follow (writeback)"})
		} else {
			next.WritebackFollowed = s.AD.PwdLastSet // AD already has it (writeback came first)
		}
	}
	releaseUndo(p, &next, &res, ev, c)
	syncExpiry(p, &next, &res, ev, RuleDrift)
	return res
}

// EvaluateTimer handles a due writeback check.
func EvaluateTimer(p Policy, s State, ev events.Envelope, t events.Timer) (res Result) {
	res.State = s
	if s.WritebackAwait.IsZero() || !s.WritebackAwait.Equal(t.CloudChange) {
		return res // AD followed, or a newer change replaced this check
	}
	next := s
	next.WritebackAwait = time.Time{}
	res.Changed = true
	res.State = next
	reason := "password changed in Entra at " + t.CloudChange.UTC().Format(time.RFC3339) +
		" but AD's pwdLastSet did not follow: password writeback is missing or failing; the AD and cloud passwords differ"
	res.Actions = append(res.Actions, newAction(events.ActionAlert, RuleWritebackGap, reason, ev, refOf(s), s.AD.USNChanged, p.DryRun))
	res.Decisions = append(res.Decisions, Decision{RuleWritebackGap, "act", reason})
	return res
}

// syncExpiry is the never-expires rule and its drift form: the cloud's
// DisablePasswordExpiration must equal AD's DONT_EXPIRE_PASSWORD. rule says
// which side's change looked (never-expires for AD, drift for the cloud).
func syncExpiry(p Policy, next *State, res *Result, ev events.Envelope, rule string) {
	c := next.Cloud
	if !p.Cloud.NeverExpires || c == nil || c.Removed || !next.Seen || !next.InScope || next.AD.Deleted {
		return
	}
	desired := next.AD.NeverExpires()
	if c.DisablesExpiration() == desired {
		next.PoliciesPending = "" // in step; our own write coming back lands here
		return
	}
	want := events.WithExpiration(c.PasswordPolicies, desired)
	if next.PoliciesPending == want && ev.Time.Sub(next.PoliciesPendingAt) < p.Cloud.PendingTimeout {
		res.Decisions = append(res.Decisions, Decision{rule, "skip", "our write of " + want + " is not visible yet"})
		return
	}
	if rule == RuleDrift && !next.LastDriftFix.IsZero() && ev.Time.Sub(next.LastDriftFix) < p.Cloud.DriftCooldown {
		reason := "passwordPolicies drifted again to " + quote(c.PasswordPolicies) + " within the cooldown: not re-applied; something keeps rewriting it (sync rule?)"
		res.Decisions = append(res.Decisions, Decision{rule, "skip", reason})
		alertEv := ev
		alertEv.ID = "drift-storm." + next.LastDriftFix.UTC().Format("20060102T150405") // one alert per fix
		res.Actions = append(res.Actions, newAction(events.ActionAlert, rule, reason, alertEv, refOf(*next), next.AD.USNChanged, p.DryRun))
		return
	}
	reason := "AD password never expires=" + boolWord(desired) + " but cloud passwordPolicies is " + quote(c.PasswordPolicies)
	a := newAction(events.ActionSetPasswordPolicies, rule, reason, ev, refOf(*next), next.AD.USNChanged, p.DryRun)
	a.Policies = want
	res.Actions = append(res.Actions, a)
	res.Decisions = append(res.Decisions, Decision{rule, "act", reason})
	if p.DryRun {
		return // nothing is written: no write of ours to wait for, no fix to count
	}
	next.PoliciesPending, next.PoliciesPendingAt = want, ev.Time
	if rule == RuleDrift {
		next.LastDriftFix = ev.Time
	}
}

// refOf is the action target: the AD identity plus the joined cloud ID.
func refOf(s State) events.UserRef {
	r := Ref(s.AD)
	if s.Cloud != nil {
		r.CloudID = s.Cloud.ID
		if r.UPN == "" {
			r.UPN = s.Cloud.UPN
		}
	}
	return r
}

// mergeCloud lays a delta item over the known state. A property the item
// carried replaces the known value, even when it is null (cleared, zero
// here); one it left out (never set, or unchanged) keeps the known value.
func mergeCloud(prev, c events.CloudUser) events.CloudUser {
	out := prev
	out.Removed = c.Removed
	if c.Removed {
		return out // a removed item carries only its id
	}
	take := func(name string, set func()) {
		if c.Has(name) {
			set()
		}
	}
	take("userPrincipalName", func() { out.UPN = c.UPN })
	take("mail", func() { out.Mail = c.Mail })
	take("onPremisesImmutableId", func() { out.ImmutableID = c.ImmutableID })
	take("onPremisesSyncEnabled", func() { out.SyncEnabled = c.SyncEnabled })
	take("accountEnabled", func() { out.AccountEnabled = c.AccountEnabled })
	take("passwordPolicies", func() { out.PasswordPolicies = c.PasswordPolicies })
	take("lastPasswordChangeDateTime", func() { out.LastPasswordChange = c.LastPasswordChange })
	take("preferredLanguage", func() { out.PreferredLanguage = c.PreferredLanguage })
	return out
}

func boolWord(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func quote(s string) string { return `"` + s + `"` }
