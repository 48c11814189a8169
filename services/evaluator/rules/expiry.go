package rules

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pwsync/pwsync/shared/events"
)

// Expiry rule names.
const (
	// RuleExpiry enforces an expired AD password in the cloud, as forced-change does.
	RuleExpiry = "expiry"
	// RuleExpiryNotice tells the user at each lead day, and after expiry.
	RuleExpiryNotice = "expiry-notice"
	// RuleResetNotice tells the user their password was reset (forced-change).
	RuleResetNotice = "password-reset-notice"
)

// Day is a lead day's length. Lead days count whole 24-hour periods back
// from the expiry instant, so daylight saving never moves a notice into the
// wrong day (a classic false-notice bug of script notifiers).
const Day = 24 * time.Hour

// ExpiryPolicy configures the expiry rules.
type ExpiryPolicy struct {
	Enabled bool
	// LeadDays: notices at expiry minus each many days; 0 is the moment of
	// expiry and negative values are after it. Any order; Leads() sorts.
	LeadDays []int
	Notify   bool // send the lead-day notices
	Enforce  bool // require a password change in the cloud at expiry
	// MaxLate: a notice found due more than this late (pwsync was down) is
	// skipped rather than sent stale; 0 = never skipped. Enforcement is never
	// skipped.
	MaxLate time.Duration
}

// Leads returns the lead days, largest (earliest) first, without repeats.
func (p ExpiryPolicy) Leads() []int {
	out := slices.Clone(p.LeadDays)
	slices.Sort(out)
	out = slices.Compact(out)
	slices.Reverse(out)
	return out
}

// Why a due notice was not sent.
const (
	// SkipSuperseded: a later lead day was due at the same time (pwsync
	// was down, or the password was first seen late): only the latest is sent.
	SkipSuperseded = "superseded"
	// SkipStale: found due more than max_late late.
	SkipStale = "max_late"
)

// Point is one due point of a schedule: a lead day's notice and/or the
// enforcement at expiry.
type Point struct {
	LeadDays int
	Due      time.Time
	Notice   bool
	Enforce  bool
}

// Schedule is a user's expiry schedule for their current password.
type Schedule struct {
	Key    string // events.ExpiryKey; empty when nothing is scheduled
	Expiry time.Time
	Points []Point // in time order
	Why    string  // why nothing is scheduled
}

// UserSchedule computes the schedule of the user's current password.
func UserSchedule(p Policy, s State) Schedule {
	switch {
	case !p.Expiry.Enabled:
		return Schedule{Why: "expiry rules disabled"}
	case !s.Seen:
		return Schedule{Why: "user not seen yet"}
	case s.AD.Deleted:
		return Schedule{Why: "deleted in AD"}
	case !s.InScope:
		return Schedule{Why: "out of scope"}
	case s.AD.MustChange():
		return Schedule{Why: "must change password at next logon: no expiry"}
	case s.AD.NeverExpires():
		return Schedule{Why: "password never expires (userAccountControl)"}
	}
	exp, ok := s.AD.PasswordExpiry()
	if !ok {
		return Schedule{Why: "password does not expire (no maximum age applies)"}
	}
	sc := Schedule{Key: events.ExpiryKey(s.AD.PwdLastSet, exp), Expiry: exp}
	enforceAt := -1 // index of the point that enforces
	if p.Expiry.Notify {
		for _, l := range p.Expiry.Leads() {
			sc.Points = append(sc.Points, Point{LeadDays: l, Due: exp.Add(-time.Duration(l) * Day), Notice: true})
		}
	}
	if p.Expiry.Enforce {
		enforceAt = slices.IndexFunc(sc.Points, func(pt Point) bool { return pt.LeadDays == 0 })
		if enforceAt < 0 {
			sc.Points = append(sc.Points, Point{LeadDays: 0, Due: exp})
			slices.SortStableFunc(sc.Points, func(a, b Point) int { return a.Due.Compare(b.Due) })
			enforceAt = slices.IndexFunc(sc.Points, func(pt Point) bool { return pt.LeadDays == 0 })
		}
		sc.Points[enforceAt].Enforce = true
	}
	if len(sc.Points) == 0 {
		return Schedule{Why: "neither notices nor enforcement configured"}
	}
	return sc
}

// Pending returns the points of sc that st has not handled yet.
func Pending(sc Schedule, st ExpiryState) []Point {
	if sc.Key == "" {
		return nil
	}
	if st.Key != sc.Key {
		return sc.Points
	}
	var out []Point
	for _, pt := range sc.Points {
		noticeDone := !pt.Notice || slices.Contains(st.Fired, pt.LeadDays)
		enforceDone := !pt.Enforce || st.Enforced
		if !noticeDone || !enforceDone {
			out = append(out, pt)
		}
	}
	return out
}

// NextDue is the scheduler's question: when does this user next need the
// evaluator, and for which point. Points already due come first: a user
// whose points fell due while pwsync was down is due at once.
func NextDue(p Policy, s State) (events.ExpiryTimer, bool) {
	if !p.DryRun && s.DryRun.Active && s.Seen {
		// live again after a dry run: the user's first live look comes
		// first, even without a new event (endDryRun)
		return events.ExpiryTimer{ObjectGUID: s.AD.ObjectGUID, Key: afterDryRunKey(s.DryRun), Due: s.DryRun.Since}, true
	}
	sc := UserSchedule(p, s)
	pend := Pending(sc, Handled(p, s, sc.Key))
	if len(pend) == 0 {
		return events.ExpiryTimer{}, false
	}
	return events.ExpiryTimer{ObjectGUID: s.AD.ObjectGUID, Key: sc.Key, LeadDays: pend[0].LeadDays, Due: pend[0].Due}, true
}

// EvaluateExpiry handles a due point of a user's schedule at time now. It
// handles every point due by now at once: after downtime only the latest
// notice is sent (older ones are skipped, not piled on the user), and the
// enforcement happens whatever the delay.
func EvaluateExpiry(p Policy, s State, ev events.Envelope, t events.ExpiryTimer, now time.Time) (res Result) {
	res.State = s
	if !p.DryRun && s.DryRun.Active {
		next := s
		endDryRun(p, &next, &res, ev)
		res.State = next
		if isAfterDryRun(t) {
			return res
		}
		// a timer of the dry run's days, evaluated live: it decides now
		more := EvaluateExpiry(p, next, ev, t, now)
		more.Actions = append(res.Actions, more.Actions...)
		more.Decisions = append(res.Decisions, more.Decisions...)
		more.Changed = true
		return more
	}
	if isAfterDryRun(t) {
		return res // the dry run ended already (an AD event came first, a redelivery)
	}
	sc := UserSchedule(p, s)
	if sc.Key == "" {
		res.Decisions = append(res.Decisions, Decision{RuleExpiry, "skip", sc.Why})
		return res
	}
	if sc.Key != t.Key {
		res.Decisions = append(res.Decisions, Decision{RuleExpiry, "skip", "stale timer: the password or its expiry changed since it was scheduled"})
		return res
	}
	cur := Handled(p, s, sc.Key)
	req, _ := required(p, s)
	var due []Point
	for _, pt := range Pending(sc, cur) {
		if !pt.Due.After(now) {
			due = append(due, pt)
		}
	}
	if len(due) == 0 {
		return res // handled already (a second scheduler's timer, a redelivery)
	}
	// The expiry of the same password moved (a PSO or maxPwdAge change)
	// after the user was told the old date: the notice due now is the first
	// chance to tell the new one, so it is not "stale" however long ago its
	// lead day passed (the ledger key carries the lifetime, see
	// events.Notice.LedgerKey).
	moved := cur.Key != "" && cur.Key != sc.Key && len(cur.Fired) > 0 && samePassword(cur.Key, sc.Key)
	next := s
	x := cur // the handled points, as they become
	if x.Key != sc.Key {
		x = ExpiryState{Key: sc.Key}
	} else {
		x.Fired, x.Skipped = slices.Clone(x.Fired), slices.Clone(x.Skipped)
	}
	res.Changed = true
	defer func() {
		slices.Sort(x.Fired)
		x.Fired = slices.Compact(x.Fired)
		setHandled(p, &next, x, now)
		res.State = next
	}()
	ref := refOf(s)
	seq := s.AD.USNChanged
	latest := -1 // the last due point that carries a notice
	for i, pt := range due {
		if pt.Notice {
			latest = i
		}
	}
	for i, pt := range due {
		if pt.Enforce && !x.Enforced {
			x.Enforced = true
			switch {
			case req:
				res.Decisions = append(res.Decisions, Decision{RuleExpiry, "skip", "expired, but a password change is already required in the cloud"})
			default:
				reason := "password expired in AD at " + sc.Expiry.UTC().Format(time.RFC3339) + " (" + expirySource(s.AD) + ")"
				a := events.Action{ID: actionID(p.DryRun, RuleExpiry, ref, sc.Key), Kind: events.ActionRequireChange,
					Rule: RuleExpiry, Reason: reason, EventID: ev.ID, EventTime: ev.Time, User: ref, Seq: seq, DryRun: p.DryRun}
				setRequired(p, &next, true, a.ID, now)
				req = true
				res.Actions = append(res.Actions, a)
				res.Decisions = append(res.Decisions, Decision{RuleExpiry, "act", reason})
			}
		}
		if !pt.Notice {
			continue
		}
		x.Fired = append(x.Fired, pt.LeadDays)
		switch late := now.Sub(pt.Due); {
		case i != latest:
			x.Skipped = append(x.Skipped, SkippedNotice{LeadDays: pt.LeadDays, Why: SkipSuperseded})
			res.Decisions = append(res.Decisions, Decision{RuleExpiryNotice, "skip",
				fmt.Sprintf("lead day %d passed while a later one is already due", pt.LeadDays)})
		case p.Expiry.MaxLate > 0 && late > p.Expiry.MaxLate && !moved:
			x.Skipped = append(x.Skipped, SkippedNotice{LeadDays: pt.LeadDays, Why: SkipStale})
			res.Decisions = append(res.Decisions, Decision{RuleExpiryNotice, "skip",
				fmt.Sprintf("lead day %d is %s late (max_late %s): not sent stale", pt.LeadDays, late.Round(time.Minute), p.Expiry.MaxLate)})
		default:
			a := noticeAction(p, s, ev, ref, sc, pt.LeadDays)
			res.Actions = append(res.Actions, a)
			res.Decisions = append(res.Decisions, Decision{RuleExpiryNotice, "act", a.Reason})
		}
	}
	return res
}

func noticeAction(p Policy, s State, ev events.Envelope, ref events.UserRef, sc Schedule, lead int) events.Action {
	n := &events.Notice{Template: events.NoticeExpiryWarning, LeadDays: lead, Expiry: sc.Expiry,
		PasswordSetAt: events.FileTime(s.AD.PwdLastSet), Language: language(s), DisplayName: s.AD.DisplayName}
	reason := fmt.Sprintf("password expires in %d day(s), at %s", lead, sc.Expiry.UTC().Format(time.RFC3339))
	if lead <= 0 {
		n.Template = events.NoticeExpired
		reason = fmt.Sprintf("password expired %d day(s) ago, at %s", -lead, sc.Expiry.UTC().Format(time.RFC3339))
	}
	return events.Action{ID: actionID(p.DryRun, RuleExpiryNotice, ref, sc.Key+".lead"+strconv.Itoa(lead)), Kind: events.ActionNotify,
		Rule: RuleExpiryNotice, Reason: reason, EventID: ev.ID, EventTime: ev.Time, User: ref, Seq: s.AD.USNChanged,
		DryRun: p.DryRun, Notice: n}
}

// resetNotice is forced-change's "your password was reset" notice. The
// reset is identified by its pwdLastSet write (writeID).
func resetNotice(p Policy, s State, ev events.Envelope, ref events.UserRef, write string) events.Action {
	n := &events.Notice{Template: events.NoticePasswordReset, PasswordSetAt: ev.Time.UTC(), Language: language(s),
		DisplayName: s.AD.DisplayName}
	return events.Action{ID: actionID(p.DryRun, RuleResetNotice, ref, write), Kind: events.ActionNotify, Rule: RuleResetNotice,
		Reason: "password reset in AD with must-change; telling the user", EventID: ev.ID, EventTime: ev.Time, User: ref,
		Seq: s.AD.USNChanged, DryRun: p.DryRun, Notice: n}
}

func language(s State) string {
	if s.AD.Language != "" {
		return s.AD.Language
	}
	if s.Cloud != nil {
		return s.Cloud.PreferredLanguage
	}
	return ""
}

// samePassword reports whether two schedule keys (events.ExpiryKey:
// "pwd<pwdLastSet>.exp<expiry>") belong to the same password.
func samePassword(a, b string) bool {
	pa, _, _ := strings.Cut(a, ".exp")
	pb, _, _ := strings.Cut(b, ".exp")
	return pa == pb
}

// expirySource says where the user's expiry comes from, for humans.
func expirySource(u events.ADUser) string {
	switch u.ExpirySource {
	case events.ExpirySourceComputed, "":
		if u.PolicyName != "" {
			return "msDS-UserPasswordExpiryTimeComputed, policy " + u.PolicyName
		}
		return "msDS-UserPasswordExpiryTimeComputed"
	case events.ExpirySourcePSO:
		return "pwdLastSet + maximum age of PSO " + u.PolicyName
	case events.ExpirySourceDomain:
		return "pwdLastSet + the domain's maxPwdAge"
	}
	return u.ExpirySource
}

// ExpirySource is expirySource for callers outside the package (explain).
func ExpirySource(u events.ADUser) string { return expirySource(u) }
