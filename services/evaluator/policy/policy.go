// Package policy explains pwsync's password policy to admins: the rules in
// force (policy check), how they apply to one user (policy explain), and
// where AD's and Entra's own settings disagree (policy report). Pure: the
// caller reads AD, Graph and the users bucket and passes what it read.
package policy

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/shared/events"
)

// Describe prints the rules in force.
func Describe(w io.Writer, p rules.Policy) {
	on := func(b bool) string {
		if b {
			return "on"
		}
		return "off"
	}
	fmt.Fprintln(w, "Scope")
	if len(p.IncludeOUs)+len(p.IncludeGroups)+len(p.IncludeEntraGroups) == 0 {
		fmt.Fprintln(w, "  include: every user of the watched domains")
	}
	for _, ou := range p.IncludeOUs {
		fmt.Fprintf(w, "  include OU: %s\n", ou)
	}
	for _, g := range p.IncludeGroups {
		fmt.Fprintf(w, "  include AD group (nested): %s\n", g)
	}
	for _, g := range p.IncludeEntraGroups {
		fmt.Fprintf(w, "  include Entra group (transitive): %s\n", g)
	}
	for _, u := range p.BreakGlassUPNs {
		fmt.Fprintf(w, "  exclude break-glass UPN (always): %s\n", u)
	}
	for _, g := range p.BreakGlassGroups {
		fmt.Fprintf(w, "  exclude break-glass group (nested, always): %s\n", g)
	}
	fmt.Fprintf(w, "  disabled accounts: %s\n", map[bool]string{true: "included", false: "ignored"}[p.IncludeDisabled])
	fmt.Fprintln(w, "Rules")
	fmt.Fprintf(w, "  forced-change: %s (never-expires accounts %s, backfill %s, reset notice %s)\n",
		on(p.ForcedChange), map[bool]string{true: "included", false: "skipped"}[p.IncludeNeverExpires], on(p.Backfill), on(p.ResetNotice))
	fmt.Fprintf(w, "  password-changed: %s\n", on(p.PasswordChanged))
	fmt.Fprintf(w, "  never-expires sync: %s\n", on(p.Cloud.NeverExpires))
	x := p.Expiry
	if !x.Enabled {
		fmt.Fprintln(w, "  expiry: off")
	} else {
		var leads []string
		for _, l := range x.Leads() {
			leads = append(leads, leadWord(l))
		}
		fmt.Fprintf(w, "  expiry: on; notices %s at %s; enforcement at expiry %s; stale notices skipped after %s\n",
			on(x.Notify), strings.Join(leads, ", "), on(x.Enforce), lateWord(x.MaxLate))
	}
	if p.DryRun {
		fmt.Fprintln(w, "Dry run: every decision is audited, nothing is written and no notice is sent")
	}
}

func leadWord(l int) string {
	switch {
	case l > 0:
		return fmt.Sprintf("%dd before", l)
	case l == 0:
		return "expiry"
	}
	return fmt.Sprintf("%dd after", -l)
}

func lateWord(d time.Duration) string {
	if d == 0 {
		return "never"
	}
	return d.String()
}

// Explain prints how the policy applies to one user's stored state at now,
// with times in loc. Entra group membership is what p.EntraMembers says.
func Explain(w io.Writer, p rules.Policy, st rules.State, now time.Time, loc *time.Location) {
	ExplainWithEntra(w, p, st, now, loc, nil)
}

// EntraMembership is what the caller read of the included Entra groups for
// one user: group object ID -> member (directly or through nested groups).
type EntraMembership map[string]bool

// ExplainWithEntra is Explain with the user's membership of the included
// Entra groups read by the caller (nil: not read).
func ExplainWithEntra(w io.Writer, p rules.Policy, st rules.State, now time.Time, loc *time.Location, entra EntraMembership) {
	ad := st.AD
	fmt.Fprintf(w, "User %s (%s)\n", orDash(ad.UPN), ad.DN)
	cloudID := ""
	if st.Cloud != nil && !st.Cloud.Removed {
		cloudID = st.Cloud.ID
		fmt.Fprintf(w, "  Entra account %s (synced %v, passwordPolicies %q)\n", st.Cloud.ID, st.Cloud.SyncEnabled, st.Cloud.PasswordPolicies)
	} else {
		fmt.Fprintln(w, "  Entra account: not joined yet")
	}
	if entra != nil && cloudID != "" {
		p.EntraMembers = map[string]bool{}
		for _, g := range p.IncludeEntraGroups {
			if entra[g] {
				p.EntraMembers[cloudID] = true
			}
		}
	}
	in, why := rules.InScope(p, ad, cloudID)
	fmt.Fprintf(w, "Scope: %s (%s)\n", map[bool]string{true: "in scope", false: "OUT of scope"}[in], why)
	if len(ad.Groups) > 0 {
		fmt.Fprintf(w, "  groups of interest (nested): %s\n", strings.Join(ad.Groups, "; "))
	}
	if len(p.IncludeEntraGroups) > 0 {
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
	fmt.Fprintf(w, "Password set: %s\n", fmtFT(ad.PwdLastSet, loc))
	exp, ok := ad.PasswordExpiry()
	switch {
	case ad.MustChange():
		fmt.Fprintln(w, "Expiry: none: the user must change the password at next logon (forced-change applies)")
	case ad.NeverExpires():
		fmt.Fprintln(w, "Expiry: never (\"password never expires\" is set in AD)")
	case !ok:
		fmt.Fprintf(w, "Expiry: never (%s)\n", sourceWord(ad))
	default:
		rel := "in " + days(exp.Sub(now))
		if !exp.After(now) {
			rel = days(now.Sub(exp)) + " ago"
		}
		fmt.Fprintf(w, "Expiry: %s (%s), from %s\n", exp.In(loc).Format("2006-01-02 15:04 MST"), rel, sourceWord(ad))
	}
	sc := rules.UserSchedule(p, st)
	if sc.Key == "" {
		fmt.Fprintf(w, "Schedule: nothing (%s)\n", sc.Why)
	} else {
		fmt.Fprintln(w, "Schedule:")
		pending := rules.Pending(sc, rules.Handled(p, st, sc.Key))
		nextShown := false
		for _, pt := range sc.Points {
			var what []string
			if pt.Notice {
				tpl := events.NoticeExpiryWarning
				if pt.LeadDays <= 0 {
					tpl = events.NoticeExpired
				}
				what = append(what, "notice "+tpl)
			}
			if pt.Enforce {
				what = append(what, "require a password change in the cloud")
			}
			state := "done"
			if slices.ContainsFunc(pending, func(q rules.Point) bool { return q.LeadDays == pt.LeadDays }) {
				state = "pending"
				if !pt.Due.After(now) {
					state = "due now (fires at once)"
				} else if !nextShown {
					state = "NEXT"
				}
				nextShown = true
			}
			fmt.Fprintf(w, "  %-10s %s  %s  [%s]\n", leadWord(pt.LeadDays), pt.Due.In(loc).Format("2006-01-02 15:04 MST"), strings.Join(what, " + "), state)
		}
	}
	switch {
	case st.ChangeRequired:
		fmt.Fprintf(w, "Cloud: a password change is required (by %s) until the user sets a new password in AD\n", st.RequiredByAction)
	default:
		fmt.Fprintln(w, "Cloud: nothing pending")
	}
	if p.DryRun {
		fmt.Fprintln(w, "Dry run: decisions are audited only")
	}
}

func sourceWord(u events.ADUser) string {
	switch u.ExpirySource {
	case events.ExpirySourceComputed, "":
		if u.ResultantPSO != "" {
			return "msDS-UserPasswordExpiryTimeComputed (PSO " + psoName(u.ResultantPSO) + ")"
		}
		return "msDS-UserPasswordExpiryTimeComputed (domain maxPwdAge)"
	case events.ExpirySourcePSO:
		return "pwdLastSet + PSO " + u.PolicyName + "'s maximum age"
	case events.ExpirySourceDomain:
		return "pwdLastSet + the domain's maxPwdAge"
	case events.ExpirySourceNever:
		if u.PolicyName != "" && u.PolicyName != "domain" {
			return "PSO " + u.PolicyName + " sets no maximum age"
		}
		return "no maximum password age applies"
	}
	return u.ExpirySource
}

func psoName(dn string) string {
	first, _, _ := strings.Cut(dn, ",")
	if _, v, ok := strings.Cut(first, "="); ok {
		return v
	}
	return dn
}

func fmtFT(ft int64, loc *time.Location) string {
	if ft == 0 {
		return "0 (must change at next logon)"
	}
	return events.FileTime(ft).In(loc).Format("2006-01-02 15:04 MST")
}

func days(d time.Duration) string {
	if d < 48*time.Hour {
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%.1f days", d.Hours()/24)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
