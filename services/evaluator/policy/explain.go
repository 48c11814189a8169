package policy

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/events"
)

// Facts is what the caller read for one user's explanation, besides the
// policy and the stored state. Zero fields are "not read": explain says so
// rather than guess.
type Facts struct {
	Now time.Time
	Loc *time.Location // times are shown in it; nil = UTC
	// JoinedCloudID is the cloud account the actuator joined
	// (userview.View.JoinedCloudID), for a user whose stored state has no
	// cloud side yet (delta query has not brought it).
	JoinedCloudID string
	// Entra is the user's membership of the included Entra groups.
	Entra EntraMembership
	// Notify is the notify: section (channel, time zones, quiet hours).
	Notify *config.Notify
	// Ledger looks notices up in the notifier's ledger (KV "notices").
	Ledger LedgerLookup
}

// EntraMembership is what the caller read of the included Entra groups for
// one user: group object ID -> member (directly or through nested groups).
type EntraMembership map[string]bool

// LedgerEntry is a notice's entry in the notifier's ledger.
type LedgerEntry struct {
	State    string    `json:"state"` // sending | sent | failed
	At       time.Time `json:"at"`
	Channel  string    `json:"channel,omitempty"` // email | teams
	Via      string    `json:"via,omitempty"`     // sender mailbox
	Attempts int       `json:"attempts"`
}

// LedgerLookup finds a ledger key (events.Notice.LedgerKey); found false
// when the notice has no entry.
type LedgerLookup func(key string) (e LedgerEntry, found bool, err error)

// Explain prints how the policy applies to one user's stored state: scope,
// expiry, each point of the schedule and what became of it (sent, skipped
// and why, pending), the next one and why it falls when it does, and how
// it will be delivered.
func Explain(w io.Writer, p rules.Policy, st rules.State, f Facts) {
	loc := f.Loc
	if loc == nil {
		loc = time.UTC
	}
	now := f.Now
	ad := st.AD
	fmt.Fprintf(w, "User %s (%s)\n", orDash(ad.UPN), ad.DN)
	cloudID := ""
	switch {
	case st.Cloud != nil && !st.Cloud.Removed:
		cloudID = st.Cloud.ID
		fmt.Fprintf(w, "  Entra account %s (synced %v, passwordPolicies %q)\n", st.Cloud.ID, st.Cloud.SyncEnabled, st.Cloud.PasswordPolicies)
	case f.JoinedCloudID != "":
		cloudID = f.JoinedCloudID
		fmt.Fprintf(w, "  Entra account %s (joined by the actuator; delta query has not brought its state yet)\n", cloudID)
	default:
		fmt.Fprintln(w, "  Entra account: not joined yet")
	}
	if f.Entra != nil && cloudID != "" {
		p.EntraMembers = map[string]bool{}
		for _, g := range p.IncludeEntraGroups {
			if f.Entra[g] {
				p.EntraMembers[cloudID] = true
			}
		}
	}
	in, why := rules.InScope(p, ad, cloudID)
	fmt.Fprintf(w, "Scope: %s (%s)\n", map[bool]string{true: "in scope", false: "OUT of scope"}[in], why)
	if len(ad.Groups) > 0 {
		fmt.Fprintf(w, "  groups of interest (nested): %s\n", strings.Join(ad.Groups, "; "))
	}
	explainEntra(w, p, cloudID, f.Entra)
	if ad.PwdLastSetZero() && ad.NeverExpires() {
		fmt.Fprintln(w, "Password set: 0 (not a must-change: password never expires)")
	} else {
		fmt.Fprintf(w, "Password set: %s\n", fmtFT(ad.PwdLastSet, loc))
	}
	exp, ok := ad.PasswordExpiry()
	switch {
	case ad.MustChange():
		fmt.Fprintln(w, "Expiry: none: the user must change the password at next logon (forced-change applies)")
	case ad.NeverExpires():
		fmt.Fprintln(w, "Expiry: never (\"password never expires\" is set in AD)")
		if ad.PwdLastSetZero() {
			fmt.Fprintln(w, "  pwdLastSet is 0, but AD does not require a change of a \"password never expires\" account (MS-ADA3)")
			if p.ForcedChange && p.IncludeNeverExpires {
				fmt.Fprintln(w, "  include_never_expires is ON: pwsync requires a change in the cloud anyway, signs the account out and blocks it (pending group), which AD itself does not do")
			} else {
				fmt.Fprintln(w, "  pwsync does not act on it either (evaluator.forced_change.include_never_expires is off)")
			}
		}
	case !ok:
		fmt.Fprintf(w, "Expiry: never (%s)\n", sourceWord(ad))
	default:
		rel := "in " + days(exp.Sub(now))
		if !exp.After(now) {
			rel = days(now.Sub(exp)) + " ago"
		}
		fmt.Fprintf(w, "Expiry: %s (%s), from %s\n", fmtTime(exp, loc), rel, sourceWord(ad))
	}
	if st.Seen && in != st.InScope {
		// e.g. an Entra join or group change not evaluated yet: the
		// schedule below is the evaluator's, from what it recorded
		fmt.Fprintf(w, "  the evaluator last recorded %s; it re-evaluates at the user's next event\n",
			map[bool]string{true: "in scope", false: "out of scope"}[st.InScope])
	}
	sc := rules.UserSchedule(p, st)
	var d *delivery
	if f.Notify != nil {
		d = deliveryOf(*f.Notify, st, cloudID)
	}
	if sc.Key == "" {
		fmt.Fprintf(w, "Schedule: nothing (%s)\n", sc.Why)
	} else {
		explainSchedule(w, p, st, sc, f, d, now, loc)
		if p.Expiry.Notify {
			explainDelivery(w, d, f.Notify != nil)
		}
	}
	switch {
	case st.UndoAwait != nil && st.UndoAwait.For == rules.AwaitHashSync:
		fmt.Fprintf(w, "Cloud: the undo waits since %s for Entra to have the AD password set at %s (password hash sync); lifted anyway at %s\n",
			fmtTime(st.UndoAwait.Since, loc), fmtTime(events.FileTime(st.UndoAwait.PwdLastSet), loc), fmtTime(st.UndoAwait.Until, loc))
	case st.UndoAwait != nil:
		fmt.Fprintf(w, "Cloud: the undo waits since %s for the user to change the cloud password (cloud-managed: the must-change flag stays until then)\n",
			fmtTime(st.UndoAwait.Since, loc))
	case st.ChangeRequired:
		fmt.Fprintf(w, "Cloud: a password change is required (by %s) until the user sets a new password in AD\n", st.RequiredByAction)
	default:
		fmt.Fprintln(w, "Cloud: nothing pending")
	}
	if dr := st.DryRun; dr.Active {
		what := "no cloud change"
		if dr.ChangeRequired && !st.ChangeRequired {
			what = "a cloud password change (" + dr.RequiredByAction + ")"
		} else if !dr.ChangeRequired && st.ChangeRequired {
			what = "undoing the cloud requirement"
		}
		fmt.Fprintf(w, "Dry run since %s pretended %s; none of it was done", fmtTime(dr.Since, loc), what)
		if !p.DryRun {
			fmt.Fprint(w, ": pwsync is live, so it acts on it now (at once)")
		}
		fmt.Fprintln(w)
	}
	if p.DryRun {
		fmt.Fprintln(w, "Dry run: decisions are audited only; nothing is written or sent")
	}
}

func explainEntra(w io.Writer, p rules.Policy, cloudID string, entra EntraMembership) {
	if len(p.IncludeEntraGroups) == 0 {
		return
	}
	switch {
	case cloudID == "":
		fmt.Fprintln(w, "  included Entra groups: not applicable until the Entra account is joined")
	case entra == nil:
		fmt.Fprintln(w, "  included Entra groups: membership not read")
	default:
		var member, not []string
		for _, g := range p.IncludeEntraGroups {
			if entra[g] {
				member = append(member, g)
			} else {
				not = append(not, g)
			}
		}
		if len(member) > 0 {
			fmt.Fprintf(w, "  member of included Entra groups (transitive): %s\n", strings.Join(member, "; "))
		}
		if len(not) > 0 {
			fmt.Fprintf(w, "  not a member of included Entra groups: %s\n", strings.Join(not, "; "))
		}
	}
}

// explainSchedule prints each point and what became of it, then the next one.
func explainSchedule(w io.Writer, p rules.Policy, st rules.State, sc rules.Schedule, f Facts, d *delivery, now time.Time, loc *time.Location) {
	fmt.Fprintln(w, "Schedule (lead days are whole 24-hour periods before the expiry instant):")
	handled := rules.Handled(p, st, sc.Key)
	pending := rules.Pending(sc, handled)
	live := rules.ExpiryState{}
	if st.Expiry.Key == sc.Key {
		live = st.Expiry
	}
	// What the next scheduler run does with the points due now: only the
	// latest notice goes out, and not when it is past max_late.
	latest := -1
	for _, pt := range pending {
		if !pt.Due.After(now) && pt.Notice {
			latest = pt.LeadDays
		}
	}
	moved := handled.Key == "" && st.Expiry.Key != "" && st.Expiry.Key != sc.Key // a new schedule of the same password may be told late
	// dueNow: what happens to a point due now; sent: its notice goes out
	dueNow := func(pt rules.Point) (string, bool) {
		if !pt.Notice {
			return "enforced at once", false
		}
		s, sent := "sent at once", true
		switch late := now.Sub(pt.Due); {
		case pt.LeadDays != latest:
			s, sent = "skipped, a later lead day is due too", false
		case p.Expiry.MaxLate > 0 && late > p.Expiry.MaxLate && !moved:
			s, sent = fmt.Sprintf("skipped, %s late (max_late %s)", late.Round(time.Minute), p.Expiry.MaxLate), false
		}
		if pt.Enforce {
			s += "; enforced at once"
		}
		return s, sent
	}
	var next *rules.Point
	for _, pt := range sc.Points {
		var what []string
		if pt.Notice {
			what = append(what, "notice "+template(pt.LeadDays))
		}
		if pt.Enforce {
			what = append(what, "require a password change in the cloud")
		}
		var state string
		if slices.ContainsFunc(pending, func(q rules.Point) bool { return q.LeadDays == pt.LeadDays }) {
			switch {
			case !pt.Due.After(now):
				what, _ := dueNow(pt)
				state = "due now: " + what
			case next == nil:
				state = "NEXT"
			default:
				state = "pending"
			}
			if next == nil {
				next = &pt
			}
			if st.DryRun.Active && !p.DryRun && slices.Contains(st.DryRun.Expiry.Fired, pt.LeadDays) {
				state += "; dry-run only pretended it"
			}
		} else {
			state = pointOutcome(p, st, sc, pt, handled, live, f, d, loc)
		}
		fmt.Fprintf(w, "  %-10s %s  %s  [%s]\n", leadWord(pt.LeadDays), fmtTime(pt.Due, loc), strings.Join(what, " + "), state)
	}
	if next == nil {
		fmt.Fprintln(w, "Next: nothing more for this password (a new password starts a new schedule)")
		return
	}
	if !next.Due.After(now) {
		// the due points fire together: the one that counts is the latest
		for _, pt := range pending {
			if !pt.Due.After(now) && (pt.LeadDays == latest || (latest < 0 && pt.Enforce)) {
				next = &pt
			}
		}
		what, sent := dueNow(*next)
		fmt.Fprintf(w, "Next: now (the scheduler's next run): %s, due %s (%s): %s\n", leadWord(next.LeadDays), fmtTime(next.Due, loc),
			whyDue(*next, sc.Expiry, now, loc), what)
		if sent {
			explainQuiet(w, d, now)
		}
		for _, pt := range pending {
			if pt.Due.After(now) {
				fmt.Fprintf(w, "  then %s at %s: %s\n", leadWord(pt.LeadDays), fmtTime(pt.Due, loc), whyDue(pt, sc.Expiry, now, loc))
				break
			}
		}
	} else {
		fmt.Fprintf(w, "Next: %s at %s: %s\n", leadWord(next.LeadDays), fmtTime(next.Due, loc), whyDue(*next, sc.Expiry, now, loc))
		if next.Notice {
			explainQuiet(w, d, next.Due)
		}
	}
	late := "a late notice is always sent (max_late 0)"
	if p.Expiry.MaxLate > 0 {
		late = fmt.Sprintf("a notice found due more than max_late (%s) late is skipped, not sent stale", p.Expiry.MaxLate)
	}
	fmt.Fprintf(w, "  if several points fall due together (pwsync down, or the user first seen late), only the latest notice is sent; %s; enforcement is never skipped\n", late)
}

// pointOutcome says what became of a handled point.
func pointOutcome(p rules.Policy, st rules.State, sc rules.Schedule, pt rules.Point, handled, live rules.ExpiryState,
	f Facts, d *delivery, loc *time.Location) string {
	var parts []string
	if pt.Notice {
		dryOnly := !slices.Contains(live.Fired, pt.LeadDays)
		switch why := handled.SkipOf(pt.LeadDays); {
		case why == rules.SkipSuperseded:
			parts = append(parts, "skipped: a later lead day was due at the same time (only the latest due notice is sent)")
		case why == rules.SkipStale:
			parts = append(parts, fmt.Sprintf("skipped: found due more than max_late (%s) late, not sent stale", p.Expiry.MaxLate))
		case dryOnly:
			parts = append(parts, "decided in dry-run only: not sent")
		default:
			parts = append(parts, noticeOutcome(st, sc, pt, f, d, loc))
		}
	}
	if pt.Enforce {
		switch {
		case live.Enforced:
			parts = append(parts, "enforced")
		case handled.Enforced:
			parts = append(parts, "enforcement decided in dry-run only: not done")
		}
	}
	return strings.Join(parts, "; ")
}

// noticeOutcome reads a decided notice's ledger entry.
func noticeOutcome(st rules.State, sc rules.Schedule, pt rules.Point, f Facts, d *delivery, loc *time.Location) string {
	if f.Ledger == nil {
		return "decided (ledger not read)"
	}
	n := events.Notice{Template: template(pt.LeadDays), LeadDays: pt.LeadDays, Expiry: sc.Expiry,
		PasswordSetAt: events.FileTime(st.AD.PwdLastSet)}
	e, found, err := f.Ledger(n.LedgerKey(rules.Ref(st.AD)))
	switch {
	case err != nil:
		return "decided (ledger: " + err.Error() + ")"
	case !found && d != nil && !d.enabled:
		return "decided, not sent: notify.enabled is off"
	case !found:
		return "decided, not sent yet (waiting for quiet hours or pacing), or dropped by the notifier (see the audit trail)"
	case e.State == "sent":
		s := "sent by " + e.Channel + " at " + fmtTime(e.At, loc)
		if e.Via != "" {
			s += " from " + e.Via
		}
		return s
	case e.State == "failed":
		return fmt.Sprintf("send failed %d time(s), last at %s; retried", e.Attempts, fmtTime(e.At, loc))
	case e.State == "sending":
		return "in doubt: a send started at " + fmtTime(e.At, loc) + " was never confirmed; not retried (at most once)"
	}
	return "ledger state " + e.State
}

// whyDue says why a point falls when it does.
func whyDue(pt rules.Point, exp, now time.Time, loc *time.Location) string {
	var why string
	switch {
	case pt.LeadDays > 0:
		why = fmt.Sprintf("the expiry %s minus %d x 24h", fmtTime(exp, loc), pt.LeadDays)
	case pt.LeadDays == 0:
		why = "the expiry instant"
	default:
		why = fmt.Sprintf("the expiry %s plus %d x 24h", fmtTime(exp, loc), -pt.LeadDays)
	}
	if pt.Due.After(now) {
		why += ", in " + days(pt.Due.Sub(now))
	} else {
		why += ", " + days(now.Sub(pt.Due)) + " ago"
	}
	return why
}

func template(lead int) string {
	if lead <= 0 {
		return events.NoticeExpired
	}
	return events.NoticeExpiryWarning
}

// delivery is how notices reach this user (the notifier's rules).
type delivery struct {
	enabled              bool
	teams                bool // activity feed first (needs a cloud account)
	mail                 string
	senders              []string
	zone                 *time.Location
	zoneWhy              string
	quietStart, quietEnd string
	start, end           int // minutes after midnight; equal: none
}

func deliveryOf(n config.Notify, st rules.State, cloudID string) *delivery {
	d := &delivery{enabled: n.Enabled, teams: n.Teams.Enabled && cloudID != "", senders: n.Senders,
		quietStart: n.QuietHours.Start, quietEnd: n.QuietHours.End}
	d.mail = st.AD.Mail
	if st.Cloud != nil && st.Cloud.Mail != "" {
		d.mail = st.Cloud.Mail
	}
	// by UPN, then by domain, else the default (as the notifier does)
	zones := map[string]string{}
	for who, tz := range n.TimeZones {
		zones[strings.ToLower(who)] = tz
	}
	upn := strings.ToLower(st.AD.UPN)
	tz, key := n.DefaultTimeZone, "notify.default_time_zone"
	if z, ok := zones[upn]; ok && upn != "" {
		tz, key = z, "notify.time_zones["+upn+"]"
	} else if i := strings.LastIndexByte(upn, '@'); i >= 0 {
		if z, ok := zones[upn[i:]]; ok {
			tz, key = z, "notify.time_zones["+upn[i:]+"]"
		}
	}
	d.zone, d.zoneWhy = time.UTC, key
	if loc, err := time.LoadLocation(tz); err == nil {
		d.zone = loc
	}
	if n.QuietHours.Start != "" {
		d.start, _ = config.ParseClock(n.QuietHours.Start)
		d.end, _ = config.ParseClock(n.QuietHours.End)
	}
	return d
}

// quietFor is how long a notice at t waits for the quiet hours to end (the
// notifier's computation, in the user's zone).
func (d *delivery) quietFor(t time.Time) time.Duration {
	if d.start == d.end {
		return 0
	}
	local := t.In(d.zone)
	m := local.Hour()*60 + local.Minute()
	quiet := m >= d.start && m < d.end
	if d.start > d.end { // wraps past midnight
		quiet = m >= d.start || m < d.end
	}
	if !quiet {
		return 0
	}
	y, mo, day := local.Date()
	end := time.Date(y, mo, day, d.end/60, d.end%60, 0, 0, d.zone)
	if !end.After(local) {
		end = time.Date(y, mo, day+1, d.end/60, d.end%60, 0, 0, d.zone)
	}
	return end.Sub(t)
}

// explainQuiet says when a notice sent at t is delivered, if quiet hours hold it.
func explainQuiet(w io.Writer, d *delivery, t time.Time) {
	if d == nil || !d.enabled {
		return
	}
	if wait := d.quietFor(t); wait > 0 {
		fmt.Fprintf(w, "  it falls in quiet hours (%s-%s, %s): delivered at %s\n", d.quietStart, d.quietEnd, d.zone, fmtTime(t.Add(wait), d.zone))
	}
}

func explainDelivery(w io.Writer, d *delivery, known bool) {
	switch {
	case !known:
		fmt.Fprintln(w, "Delivery: notify settings not read here (pwsync policy explain --config shows them)")
		return
	case !d.enabled:
		fmt.Fprintln(w, "Delivery: notify.enabled is off: notices are decided and audited but never sent")
		return
	}
	mail := d.mail
	if mail == "" {
		mail = "the cloud account's mail (none known in AD)"
	}
	if d.teams {
		fmt.Fprintf(w, "Delivery: Teams activity feed; email to %s when the Teams app is not installed for the user\n", mail)
	} else {
		fmt.Fprintf(w, "Delivery: email to %s from %s\n", mail, strings.Join(d.senders, ", "))
	}
	quiet := "none"
	if d.start != d.end {
		quiet = d.quietStart + "-" + d.quietEnd + " (a notice due then waits for the end)"
	}
	fmt.Fprintf(w, "  notify time zone %s (%s); quiet hours %s\n", d.zone, d.zoneWhy, quiet)
}

func fmtTime(t time.Time, loc *time.Location) string { return t.In(loc).Format("2006-01-02 15:04 MST") }
