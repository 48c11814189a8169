package rules

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/userstate"
)

// RuleRisk acts on Entra ID Protection detections (issue 17): a synced
// user's password is made to change in AD (pwdLastSet 0, which the
// forced-change rule then carries to the cloud: sessions revoked, the
// pending group), a cloud-managed user's in the cloud, as a helpdesk reset
// would; the admins get an alert. Once per detection.
const RuleRisk = "risk"

// RiskPolicy is the rule's configuration (config risk.*).
type RiskPolicy struct {
	Enabled        bool
	Levels         []string // detection risk levels that trigger
	States         []string // risky user states that trigger
	DetectionTypes []string // riskEventTypes that trigger; empty = any
	DryRun         bool
	Notify         bool
	// DismissAfterChange: dismiss the user's risk in Entra once AD shows
	// the new password.
	DismissAfterChange bool
	// StillAtRiskAfter: how long after the AD change the user's risk is
	// read again; still at risk then is an alert. 0 = no check.
	StillAtRiskAfter time.Duration
}

// triggers reports whether a detection is one the policy acts on.
func (rp RiskPolicy) triggers(d events.RiskDetection) bool {
	if len(rp.DetectionTypes) > 0 && !containsFold(rp.DetectionTypes, d.EventType) {
		return false
	}
	// A detection's own state: at risk, or confirmed by an admin.
	return containsFold(rp.Levels, d.Level) && (d.State == "atRisk" || d.State == "confirmedCompromised")
}

func containsFold(list []string, v string) bool {
	return slices.ContainsFunc(list, func(x string) bool { return strings.EqualFold(x, v) })
}

// EvaluateRisk applies the risk rule to a risk event of a user joined to
// AD (s is that user's state; the caller handles accounts without an AD
// user). ev's time starts the latency clock.
func EvaluateRisk(p Policy, s State, ev events.Envelope, r events.RiskEvent) (res Result) {
	res.State = s
	rp := p.Risk
	if !rp.Enabled {
		return res
	}
	var fresh []events.RiskDetection
	for _, d := range r.Detections {
		if d.ID != "" && !slices.Contains(s.Risk.Handled, d.ID) && rp.triggers(d) {
			fresh = append(fresh, d)
		}
	}
	if len(fresh) == 0 {
		return res // nothing new (a re-read, a remediation, a level below the policy)
	}
	next := s
	next.Risk.Handled = slices.Clone(s.Risk.Handled)
	for _, d := range fresh {
		next.Risk.Handled = append(next.Risk.Handled, d.ID)
	}
	if over := len(next.Risk.Handled) - userstate.MaxHandled; over > 0 {
		next.Risk.Handled = next.Risk.Handled[over:]
	}
	res.Changed = true
	defer func() { res.State = next }()

	first := fresh[0]
	what := fmt.Sprintf("%s detection (%s) of %s", first.EventType, first.Level, r.User.UPN)
	if !containsFold(rp.States, r.User.State) {
		res.Decisions = append(res.Decisions, Decision{RuleRisk, "skip", fmt.Sprintf("%s: user risk state %q is not one that triggers", what, r.User.State)})
		return res
	}
	if !s.Seen || s.AD.Deleted {
		res.Decisions = append(res.Decisions, Decision{RuleRisk, "skip", what + ": no AD user"})
		return res
	}
	cid := cloudID(s)
	if r.Cloud != nil && cid == "" {
		cid = r.Cloud.ID
	}
	if in, why := InScope(p, s.AD, cid); !in {
		res.Decisions = append(res.Decisions, Decision{RuleRisk, "skip", what + ": " + why})
		return res
	}
	synced := (r.Cloud != nil && r.Cloud.SyncEnabled) || (r.Cloud == nil && s.Cloud != nil && s.Cloud.SyncEnabled)
	dry := p.DryRun || rp.DryRun
	ref := Ref(s.AD)
	ref.CloudID = cid
	// The detection names the action: a re-read or a second event carrying
	// the same detection decides the same ID.
	trigger := ev
	trigger.ID = events.KeySafe("risk." + first.ID)
	seq := s.AD.USNChanged
	var act events.Action
	if synced {
		act = newAction(events.ActionADRequireChange, RuleRisk, what+": AD must change password at next logon", trigger, ref, seq, dry)
	} else {
		act = newAction(events.ActionRequireChange, RuleRisk, what+": cloud must change password at next sign-in", trigger, ref, seq, dry)
		if !dry {
			// as forced-change: the next password change undoes it
			next.ChangeRequired, next.RequiredByAction, next.RequiredAt = true, act.ID, ev.Time
		}
	}
	next.Risk.ActedAt, next.Risk.ActionID, next.Risk.CloudID, next.Risk.ChangedAt = ev.Time, act.ID, cid, time.Time{}
	res.Actions = append(res.Actions, act)
	alert := newAction(events.ActionAlert, RuleRisk, fmt.Sprintf("Identity Protection: %s; pwsync requires a password change (%s)", what, act.Kind), trigger, ref, seq, dry)
	alert.ID += ".alert"
	res.Actions = append(res.Actions, alert)
	if rp.Notify {
		n := newAction(events.ActionNotify, RuleRisk, "your password must be changed: a risk to your account was detected", trigger, ref, seq, dry)
		n.ID += ".notify"
		n.Notice = &events.Notice{Template: events.NoticePasswordReset, PasswordSetAt: first.Detected, Language: s.AD.Language, DisplayName: s.AD.DisplayName}
		res.Actions = append(res.Actions, n)
	}
	res.Decisions = append(res.Decisions, Decision{RuleRisk, "act", what})
	return res
}

// RuleRiskDismiss closes the loop: the user set a new password in AD after
// a risk act; unless Entra remediates the risk itself (the tenant lets an
// on-premises password change reset user risk: riskDetail
// userChangedPasswordOnPremises), pwsync dismisses it when configured.
const RuleRiskDismiss = "risk-dismiss"

// riskAfterChange is the AD side of the loop, run by EvaluateAD on every
// AD state of a user: a new non-zero pwdLastSet after the risk act is the
// change the act asked for. It records it once and, with
// risk.dismiss_after_change, decides the dismissal.
func riskAfterChange(p Policy, s State, next *State, res *Result, ev events.Envelope, u events.ADUser) {
	r := s.Risk
	if r.ActionID == "" || !r.ChangedAt.IsZero() || u.PwdLastSet == 0 || u.Deleted ||
		!events.FileTime(u.PwdLastSet).After(r.ActedAt) {
		return
	}
	next.Risk.ChangedAt = events.FileTime(u.PwdLastSet)
	res.Changed = true
	dry := p.DryRun || p.Risk.DryRun
	if p.Risk.StillAtRiskAfter > 0 && r.CloudID != "" {
		// Whoever remediates (Entra on the on-premises change, or the
		// dismissal below), a user still at risk later is for a human.
		ref := Ref(u)
		ref.CloudID = r.CloudID
		trigger := ev
		trigger.ID = events.KeySafe("risk-check." + r.ActionID)
		c := newAction(events.ActionCheckRisk, RuleRiskDismiss, fmt.Sprintf("is the risk gone %s after the password change?", p.Risk.StillAtRiskAfter), trigger, ref, u.USNChanged, dry)
		c.NotBefore = ev.Time.Add(p.Risk.StillAtRiskAfter)
		res.Actions = append(res.Actions, c)
	}
	if !p.Risk.DismissAfterChange || r.CloudID == "" {
		res.Decisions = append(res.Decisions, Decision{RuleRiskDismiss, "skip", "password changed after the risk act; dismissal not configured (Entra remediates when the tenant allows on-premises changes to)"})
		return
	}
	ref := Ref(u)
	ref.CloudID = r.CloudID
	trigger := ev
	trigger.ID = events.KeySafe("risk-dismiss." + r.ActionID)
	a := newAction(events.ActionDismissRisk, RuleRiskDismiss, "password changed in AD after the risk act", trigger, ref, u.USNChanged, dry)
	res.Actions = append(res.Actions, a)
	res.Decisions = append(res.Decisions, Decision{RuleRiskDismiss, "act", "password changed in AD after the risk act: dismissing the user's risk"})
}
