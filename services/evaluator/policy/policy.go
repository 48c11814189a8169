// Package policy explains pwsync's password policy to admins: the rules in
// force (policy check), how they apply to one user (policy explain), and
// where AD's and Entra's own settings disagree (policy report). Pure: the
// caller reads AD, Graph and the users bucket and passes what it read (the
// notifier's ledger through a LedgerLookup, e.g. KVLedger).
package policy

import (
	"fmt"
	"io"
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
		fmt.Fprintln(w, "Dry run: every decision is audited, nothing is written and no notice is sent; the state keeps what dry-run decided apart, so going live does it then")
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
