package policy

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
)

// Tenant is what the report reads from Entra.
type Tenant struct {
	Domains []graph.Domain
	Sync    *graph.OnPremisesSync // nil: no directory synchronization
	// RiskReset: Identity Protection's on-premises password change
	// setting (report_risk.go); nil: not asked.
	RiskReset *RiskReset
}

// UserCounts come from pwsync's users bucket (what delta query and AD showed).
type UserCounts struct {
	Known bool // the bucket was readable
	// CloudKnown: some user has a cloud side (delta query / webhook data);
	// without it nothing is known of anyone's passwordPolicies.
	CloudKnown bool
	// SyncedStamped: synced users whose cloud passwordPolicies holds
	// DisablePasswordExpiration although their AD password expires.
	SyncedStamped []string
	// NeverExpiresAD: in-scope AD users with "password never expires".
	NeverExpiresAD int
	// UPNSuffixes: per AD domain (lower case), its users' UPN suffixes and
	// how many users have each: which Entra domains its users sign in to.
	UPNSuffixes map[string]map[string]int
}

// Finding is one discrepancy: what, what it causes, and how to fix it.
type Finding struct {
	Severity    string // warn | info
	What        string
	Consequence string
	Fix         string
}

// Analyse compares AD's policies, the tenant's settings and pwsync's own
// policy, and returns what disagrees.
func Analyse(p rules.Policy, ads []events.ADPolicy, t Tenant, u UserCounts) []Finding {
	var out []Finding
	add := func(sev, what, cons, fix string) { out = append(out, Finding{sev, what, cons, fix}) }
	feature := func(name string) bool { return t.Sync != nil && t.Sync.Features[name] }
	enforce := p.Expiry.Enabled && p.Expiry.Enforce
	cloudPolicy := feature(graph.FeatureCloudPasswordPolicyForSynced)

	if t.Sync == nil {
		add("info", "the tenant has no on-premises directory synchronization object",
			"cloud accounts are not synced from AD: pwsync joins AD users to cloud accounts by UPN",
			"nothing, if that is intended; otherwise check Entra Connect / Cloud Sync")
	} else {
		if !cloudPolicy {
			what := "CloudPasswordPolicyForPasswordSyncedUsersEnabled is off"
			cons := "Entra Connect stamps synced users DisablePasswordExpiration: an expired AD password keeps working in the cloud"
			if enforce {
				add("info", what, cons+"; pwsync's expiry rule enforces AD expiry per user, so this is covered",
					"nothing needed while evaluator.expiry.enforce is on")
			} else {
				add("warn", what, cons,
					"turn on evaluator.expiry (enabled, enforce) so pwsync enforces each user's AD expiry, or enable the feature "+
						"(Update-MgDirectoryOnPremiseSynchronization, features.cloudPasswordPolicyForPasswordSyncedUsersEnabled=true) "+
						"and align passwordValidityPeriodInDays with AD's maxPwdAge")
			}
		}
		if !feature(graph.FeatureForceChangeOnLogon) {
			what := "UserForcePasswordChangeOnLogonEnabled is off"
			cons := "a helpdesk reset with \"user must change password at next logon\" does not reach the cloud: the old cloud session and the temporary password keep working"
			if p.ForcedChange {
				add("info", what, cons+" (without pwsync); pwsync's forced-change rule covers it", "nothing needed while evaluator.forced_change.enabled is on")
			} else {
				add("warn", what, cons, "enable evaluator.forced_change, or the feature (needs SSPR with password writeback)")
			}
		}
		if p.ForcedChange && p.IncludeNeverExpires && !u.Known { // with counts: the accounts are reported below
			add("warn", "evaluator.forced_change.include_never_expires is on",
				neverExpiresOptIn, "set it to false unless this is intended")
		}
		if !feature(graph.FeaturePasswordWriteback) && (p.ForcedChange || enforce) {
			add("info", "password writeback is off",
				"a user forced to change the password in the cloud changes it there only: AD keeps the old one and pwsync's writeback-gap alert fires",
				"enable SSPR password writeback, or have users change the password on-premises")
		}
	}

	for _, ad := range ads {
		adAge := ad.DomainMaxAge
		doms, how := EntraDomainsOf(ad.Domain, t.Domains, u)
		if len(doms) == 0 && len(t.Domains) > 0 {
			add("info", fmt.Sprintf("no Entra domain matches AD %s by %s", ad.Domain, how),
				"the cloud password expiry of its users could not be compared with AD's",
				"check the users' UPN suffixes: each must be a verified Entra domain for sign-in to work")
		}
		for _, d := range doms {
			if !d.IsVerified || d.AuthenticationType == "Federated" {
				continue
			}
			validity := 90 // Graph's documented default when unset
			if d.PasswordValidityPeriodInDays != nil {
				validity = *d.PasswordValidityPeriodInDays
			}
			cloudNever := validity == graph.NeverExpiresDays
			switch {
			case !cloudPolicy:
				// the cloud expiry does not apply to synced users: nothing to compare
			case adAge == 0 && !cloudNever:
				add("warn", fmt.Sprintf("domain %s: cloud passwords expire after %d days but AD %s has no maximum age", d.ID, validity, ad.Domain),
					"synced users are forced to change the password in the cloud although AD never asks",
					fmt.Sprintf("set passwordValidityPeriodInDays of %s to 2147483647 (never), or give AD a maxPwdAge", d.ID))
			case adAge > 0 && cloudNever:
				add("warn", fmt.Sprintf("domain %s: cloud passwords never expire but AD %s's maxPwdAge is %s", d.ID, ad.Domain, dayWord(adAge)),
					"the cloud policy for synced users is on but does nothing: expired AD passwords keep working in the cloud"+map[bool]string{true: " (pwsync enforces per user)", false: ""}[enforce],
					fmt.Sprintf("PATCH /domains/%s passwordValidityPeriodInDays=%d, or rely on evaluator.expiry.enforce", d.ID, int(adAge/(24*time.Hour))))
			case adAge > 0 && time.Duration(validity)*24*time.Hour != adAge:
				add("warn", fmt.Sprintf("domain %s: cloud validity %d days differs from AD %s's maxPwdAge %s", d.ID, validity, ad.Domain, dayWord(adAge)),
					"the same password expires at different times in AD and in the cloud; users get two different deadlines",
					fmt.Sprintf("PATCH /domains/%s passwordValidityPeriodInDays=%d", d.ID, int(adAge/(24*time.Hour))))
			}
			if d.PasswordNotificationWindowInDays != nil && p.Expiry.Enabled && p.Expiry.Notify {
				leads := p.Expiry.Leads()
				if len(leads) > 0 && leads[0] != *d.PasswordNotificationWindowInDays {
					add("info", fmt.Sprintf("domain %s: passwordNotificationWindowInDays is %d, pwsync's first notice is %s", d.ID, *d.PasswordNotificationWindowInDays, leadWord(leads[0])),
						"Microsoft retired its own expiry notices; only pwsync's lead days reach users",
						"nothing needed; align evaluator.expiry.lead_days if users expect the cloud window")
				}
			}
		}
		for _, pso := range ad.PSOs {
			if pso.MaxAge == adAge {
				continue
			}
			cons := fmt.Sprintf("members' passwords expire after %s, not the domain's %s; a per-domain cloud policy cannot express that", dayWord(pso.MaxAge), dayWord(adAge))
			if enforce {
				add("info", fmt.Sprintf("PSO %s (precedence %d) sets a maximum age of %s", pso.Name, pso.Precedence, dayWord(pso.MaxAge)),
					cons+"; pwsync computes each user's expiry with the PSO and enforces it", "nothing needed")
			} else {
				add("warn", fmt.Sprintf("PSO %s (precedence %d) sets a maximum age of %s", pso.Name, pso.Precedence, dayWord(pso.MaxAge)),
					cons, "turn on evaluator.expiry (enforce) so each user's PSO expiry is mirrored in the cloud")
			}
		}
	}

	stampedWhat := "whether synced users are still stamped DisablePasswordExpiration is unknown"
	stampedCons := "the cloud policy for synced users was enabled, but Entra Connect removes the stamp only at each user's next on-prem password change: until then their cloud password never expires"
	switch {
	case !cloudPolicy:
		// stamped by design while the feature is off (reported above)
	case !u.Known:
		add("info", stampedWhat+": pwsync's users bucket was not read", stampedCons,
			"run the report where pwsync's NATS is reachable (nats.url, or nats.embedded.listen)")
	case !u.CloudKnown:
		add("info", stampedWhat+": pwsync has no cloud state (no webhook or delta query data in the users bucket)", stampedCons,
			"enable webhook: (change notifications and delta query) so pwsync reads each user's passwordPolicies, "+
				"or list them: Get-MgUser -All -Property UserPrincipalName,PasswordPolicies,OnPremisesSyncEnabled")
	}
	if u.Known && cloudPolicy && len(u.SyncedStamped) > 0 {
		sample := u.SyncedStamped
		if len(sample) > 5 {
			sample = sample[:5]
		}
		fix := "enable evaluator.never_expires so pwsync writes passwordPolicies=None for them, or Update-MgUser -PasswordPolicies None"
		if p.Cloud.NeverExpires {
			fix = "evaluator.never_expires is on: pwsync corrects them as delta query reports them"
		}
		add("warn", fmt.Sprintf("%d synced user(s) still stamped DisablePasswordExpiration although their AD password expires (e.g. %v)", len(u.SyncedStamped), sample),
			stampedCons, fix)
	}
	if u.Known && u.NeverExpiresAD > 0 {
		what := fmt.Sprintf("%d in-scope AD user(s) have \"password never expires\"", u.NeverExpiresAD)
		cons := "AD does not require such an account to change its password even with pwdLastSet 0 (MS-ADA3), so neither Entra Connect nor pwsync carries a must-change to the cloud; they get no expiry notices and no enforcement"
		switch {
		case p.ForcedChange && p.IncludeNeverExpires:
			add("warn", what+" and evaluator.forced_change.include_never_expires is on", neverExpiresOptIn,
				"set include_never_expires to false unless this is intended")
		default:
			add("info", what, cons,
				"nothing, if intended (service accounts); otherwise clear \"password never expires\" in AD, after which AD's own must-change applies")
		}
	}
	return append(out, riskResetFindings(p, t)...)
}

// neverExpiresOptIn says what the stricter opt-in does.
const neverExpiresOptIn = "pwsync acts on \"password never expires\" accounts with pwdLastSet 0, which AD lets log on without a change: it signs them out and blocks them in the cloud (typically service accounts)"

// EntraDomainsOf are the Entra domains AD domain ad's users sign in to:
// those named by their UPN suffixes, or,
// with no users read for ad, the domain of ad's own name.
func EntraDomainsOf(ad string, domains []graph.Domain, u UserCounts) (out []graph.Domain, how string) {
	suffixes := u.UPNSuffixes[strings.ToLower(ad)]
	how = "its users' UPN suffixes"
	if len(suffixes) == 0 {
		suffixes, how = map[string]int{strings.ToLower(ad): 1}, "the AD domain's name, no users read"
	}
	for _, d := range domains {
		if suffixes[strings.ToLower(d.ID)] > 0 {
			out = append(out, d)
		}
	}
	return out, how
}

// Print writes the findings, warnings first.
func Print(w io.Writer, fs []Finding) {
	if len(fs) == 0 {
		fmt.Fprintln(w, "No discrepancies: AD, Entra and pwsync agree.")
		return
	}
	for _, sev := range []string{"warn", "info"} {
		for _, f := range fs {
			if f.Severity != sev {
				continue
			}
			fmt.Fprintf(w, "[%s] %s\n  consequence: %s\n  fix: %s\n", map[string]string{"warn": "WARN", "info": "INFO"}[sev], f.What, f.Consequence, f.Fix)
		}
	}
}

// PrintFacts writes what was read, before the findings.
func PrintFacts(w io.Writer, ads []events.ADPolicy, t Tenant, u UserCounts) {
	for _, ad := range ads {
		fmt.Fprintf(w, "AD %s: maxPwdAge %s\n", ad.Domain, dayWord(ad.DomainMaxAge))
		doms, how := EntraDomainsOf(ad.Domain, t.Domains, u)
		var names []string
		for _, d := range doms {
			names = append(names, d.ID)
		}
		if len(names) == 0 {
			names = []string{"none"}
		}
		fmt.Fprintf(w, "  Entra domains (matched by %s): %s\n", how, strings.Join(names, ", "))
		for _, p := range ad.PSOs {
			fmt.Fprintf(w, "  PSO %s: precedence %d, maximum age %s, applies to %v\n", p.Name, p.Precedence, dayWord(p.MaxAge), p.AppliesTo)
		}
	}
	for _, d := range t.Domains {
		v, n := "unset (90)", "unset (14)"
		if d.PasswordValidityPeriodInDays != nil {
			v = fmt.Sprint(*d.PasswordValidityPeriodInDays)
			if *d.PasswordValidityPeriodInDays == graph.NeverExpiresDays {
				v = "never"
			}
		}
		if d.PasswordNotificationWindowInDays != nil {
			n = fmt.Sprint(*d.PasswordNotificationWindowInDays)
		}
		fmt.Fprintf(w, "Entra domain %s (%s, verified %v): passwordValidityPeriodInDays %s, passwordNotificationWindowInDays %s\n",
			d.ID, d.AuthenticationType, d.IsVerified, v, n)
	}
	if t.Sync != nil {
		fmt.Fprintf(w, "Entra sync features: %s=%v, %s=%v, %s=%v\n",
			graph.FeatureCloudPasswordPolicyForSynced, t.Sync.Features[graph.FeatureCloudPasswordPolicyForSynced],
			graph.FeatureForceChangeOnLogon, t.Sync.Features[graph.FeatureForceChangeOnLogon],
			graph.FeaturePasswordWriteback, t.Sync.Features[graph.FeaturePasswordWriteback])
	}
	printRiskResetFact(w, t)
	fmt.Fprintln(w)
}

// CountUsers derives the report's user counts from stored states.
func CountUsers(states []rules.State) UserCounts {
	u := UserCounts{Known: true, UPNSuffixes: map[string]map[string]int{}}
	for _, s := range states {
		if s.Cloud != nil {
			u.CloudKnown = true
		}
		if !s.Seen || s.AD.Deleted {
			continue
		}
		if _, suffix, ok := strings.Cut(s.AD.UPN, "@"); ok && suffix != "" {
			dom := strings.ToLower(s.AD.Domain)
			if u.UPNSuffixes[dom] == nil {
				u.UPNSuffixes[dom] = map[string]int{}
			}
			u.UPNSuffixes[dom][strings.ToLower(suffix)]++
		}
		if s.InScope && s.AD.NeverExpires() {
			u.NeverExpiresAD++
		}
		c := s.Cloud
		if c == nil || c.Removed || !c.SyncEnabled || !c.DisablesExpiration() || s.AD.NeverExpires() {
			continue
		}
		name := c.UPN
		if name == "" {
			name = s.AD.UPN
		}
		u.SyncedStamped = append(u.SyncedStamped, name)
	}
	return u
}

func dayWord(d time.Duration) string {
	if d == 0 {
		return "never"
	}
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
	}
	return d.String()
}
