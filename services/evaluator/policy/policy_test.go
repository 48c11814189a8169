package policy

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

var (
	setAt = time.Date(2026, 3, 2, 8, 30, 0, 0, time.UTC)
	now   = setAt.Add(25 * rules.Day)
)

func testPolicy() rules.Policy {
	return rules.Policy{IncludeOUs: []string{"OU=Corp,DC=example,DC=test"}, IncludeGroups: []string{"CN=Pilot,OU=Groups,DC=example,DC=test"},
		BreakGlassUPNs: []string{"bg@example.test"}, BreakGlassGroups: []string{"CN=Break-Glass,OU=Groups,DC=example,DC=test"},
		ForcedChange: true, IncludeNeverExpires: false, Backfill: true, PasswordChanged: true, ResetNotice: true,
		Expiry: rules.ExpiryPolicy{Enabled: true, LeadDays: []int{14, 7, 3, 1, 0, -1}, Notify: true, Enforce: true, MaxLate: 36 * time.Hour}}
}

func state(p rules.Policy, mods ...func(*events.ADUser)) rules.State {
	exp := setAt.Add(30 * rules.Day)
	u := events.ADUser{Domain: "example.test", ObjectGUID: "guid-alice", DN: "CN=Alice,OU=Elsewhere,DC=example,DC=test",
		UPN: "alice@example.test", PwdLastSet: events.ToFileTime(setAt), UserAccountControl: 512, USNChanged: 10,
		ExpiryComputed: events.ToFileTime(exp), Expiry: events.ToFileTime(exp), ExpirySource: events.ExpirySourceComputed,
		ResultantPSO: "CN=PSO-Privileged,CN=Password Settings Container,CN=System,DC=example,DC=test", PolicyName: "PSO-Privileged",
		Groups: []string{"CN=Pilot,OU=Groups,DC=example,DC=test"}}
	for _, m := range mods {
		m(&u)
	}
	s := rules.EvaluateAD(p, rules.State{}, events.Envelope{ID: u.EventID(), Time: setAt}, u).State
	// the 14-day notice went out
	if tm, ok := rules.NextDue(p, s); ok && !tm.Due.After(now) {
		s = rules.EvaluateExpiry(p, s, events.Envelope{ID: tm.EventID(), Time: tm.Due}, tm, tm.Due).State
	}
	return s
}

// fakeLedger is the notifier's ledger as explain reads it.
type fakeLedger map[string]LedgerEntry

func (l fakeLedger) lookup(key string) (LedgerEntry, bool, error) {
	e, ok := l[key]
	return e, ok, nil
}

// sentKey is the ledger key of lead's notice of st's current password.
func sentKey(st rules.State, lead int) string {
	exp, _ := st.AD.PasswordExpiry()
	tpl := events.NoticeExpiryWarning
	if lead <= 0 {
		tpl = events.NoticeExpired
	}
	n := events.Notice{Template: tpl, LeadDays: lead, Expiry: exp, PasswordSetAt: events.FileTime(st.AD.PwdLastSet)}
	return n.LedgerKey(rules.Ref(st.AD))
}

func TestExplainGolden(t *testing.T) {
	p := testPolicy()
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skipf("no tzdata: %v", err)
	}
	notify := &config.Notify{Enabled: true, Senders: []string{"noreply@example.com"}, DefaultTimeZone: "UTC",
		TimeZones: map[string]string{"@Example.test": "Europe/Berlin"}, QuietHours: config.QuietHours{Start: "20:00", End: "07:00"}}
	var b strings.Builder
	b.WriteString("== nested pilot member with a PSO, Europe/Berlin; the 14-day notice sent by email\n")
	st := state(p)
	ledger := fakeLedger{sentKey(st, 14): {State: "sent", Channel: "email", Via: "noreply@example.com", At: setAt.Add(16*rules.Day + time.Minute)}}
	Explain(&b, p, st, Facts{Now: now, Loc: berlin, Notify: notify, Ledger: ledger.lookup})
	b.WriteString("== break-glass through a nested group\n")
	Explain(&b, p, state(p, func(u *events.ADUser) { u.Groups = append(u.Groups, "CN=Break-Glass,OU=Groups,DC=example,DC=test") }), Facts{Now: now})
	b.WriteString("== fallback: domain max age, dry run\n")
	dry := p
	dry.DryRun = true
	Explain(&b, dry, state(dry, func(u *events.ADUser) {
		u.ResultantPSO, u.PolicyName, u.ExpiryComputed, u.ExpirySource = "", "domain", 0, events.ExpirySourceDomain
	}), Facts{Now: now})
	b.WriteString("== the dry run's state explained live: what it only pretended fires now\n")
	Explain(&b, p, state(dry), Facts{Now: now, Notify: notify, Ledger: fakeLedger{}.lookup})

	b.WriteString("== pwsync was down: 14 superseded, 7 past max_late\n")
	late := lateState(p)
	Explain(&b, p, late, Facts{Now: now, Notify: notify, Ledger: fakeLedger{}.lookup})
	b.WriteString("== a notice decided but in doubt (sending, never confirmed); Teams; the next point in quiet hours\n")
	teams := *notify
	teams.Teams.Enabled = true
	teams.QuietHours = config.QuietHours{Start: "10:00", End: "11:00"}
	withCloud := func(s rules.State, inScope bool) rules.State {
		s.Cloud = &events.CloudUser{ID: "c-alice", UPN: "alice@example.com", Mail: "alice@example.com", SyncEnabled: true}
		s.InScope = inScope
		return s
	}
	st = withCloud(state(p), true)
	soon := setAt.Add(23*rules.Day + time.Hour) // the 7-day point an hour late: sent, at 10:30 Berlin time
	Explain(&b, p, st, Facts{Now: soon, Loc: berlin, Notify: &teams,
		Ledger: fakeLedger{sentKey(st, 14): {State: "sending", Channel: "teams", At: setAt.Add(16 * rules.Day)}}.lookup})
	b.WriteString("== notify.enabled off\n")
	off := *notify
	off.Enabled = false
	Explain(&b, p, state(p), Facts{Now: now, Notify: &off, Ledger: fakeLedger{}.lookup})

	b.WriteString("== in scope only through a nested Entra group\n")
	pe := testPolicy()
	pe.IncludeOUs, pe.IncludeGroups = nil, nil
	pe.IncludeEntraGroups = []string{"aaaaaaaa-0000-4000-8000-000000000001", "aaaaaaaa-0000-4000-8000-000000000002"}
	joined := func(u *events.ADUser) { u.DN = "CN=Alice,OU=Elsewhere,DC=example,DC=test"; u.Groups = nil }
	// the stored state is the evaluator's, which knew the membership
	Explain(&b, pe, withCloud(state(pe, joined), true), Facts{Now: now, Entra: EntraMembership{"aaaaaaaa-0000-4000-8000-000000000002": true}})
	b.WriteString("== the same, joined by the actuator before delta brought the cloud side (as the user page shows it)\n")
	js := state(pe, joined)
	js.InScope = true
	Explain(&b, pe, js, Facts{Now: now, JoinedCloudID: "c-alice", Entra: EntraMembership{"aaaaaaaa-0000-4000-8000-000000000002": true}})
	b.WriteString("== in no included Entra group\n")
	Explain(&b, pe, withCloud(state(pe, joined), false), Facts{Now: now, Entra: EntraMembership{}})
	b.WriteString("== pwdLastSet 0 on a \"password never expires\" account: AD does not require a change\n")
	neverZero := func(u *events.ADUser) {
		u.PwdLastSet, u.UserAccountControl = 0, u.UserAccountControl|events.UACDontExpirePassword
	}
	Explain(&b, p, state(p, neverZero), Facts{Now: now})
	b.WriteString("== the same with the opt-in include_never_expires\n")
	strict := p
	strict.IncludeNeverExpires = true
	Explain(&b, strict, state(strict, neverZero), Facts{Now: now})
	b.WriteString("== rules in force\n")
	Describe(&b, dry)
	golden(t, "explain.golden", b.String())
}

// lateState: the user first seen (or pwsync back) only at now, when the
// 14- and 7-day points are both past, the 7-day one by more than max_late.
func lateState(p rules.Policy) rules.State {
	s := state(p)
	s.Expiry = rules.ExpiryState{}
	for range 5 {
		tm, ok := rules.NextDue(p, s)
		if !ok || tm.Due.After(now) {
			break
		}
		s = rules.EvaluateExpiry(p, s, events.Envelope{ID: tm.EventID(), Time: now}, tm, now).State
	}
	return s
}

func intp(i int) *int { return &i }

func TestReportGolden(t *testing.T) {
	ad := []events.ADPolicy{{Domain: "example.test", DomainMaxAge: 42 * rules.Day, PSOs: []events.PSO{
		{Name: "PSO-Privileged", Precedence: 10, MaxAge: 30 * rules.Day, AppliesTo: []string{"CN=Privileged-Users,OU=Groups,OU=Corp,DC=example,DC=test"}}}}}
	// synced users sign in with UPN suffix example.com (the Entra domain)
	stamped := rules.State{Seen: true, InScope: true, AD: events.ADUser{Domain: "example.test", UPN: "bob@example.com", PwdLastSet: 1, UserAccountControl: 512},
		Cloud: &events.CloudUser{ID: "c1", UPN: "bob@example.com", SyncEnabled: true, PasswordPolicies: "DisablePasswordExpiration"}}
	svc := rules.State{Seen: true, InScope: true, AD: events.ADUser{Domain: "example.test", UPN: "svc@example.com", PwdLastSet: 1, UserAccountControl: 512 | events.UACDontExpirePassword},
		Cloud: &events.CloudUser{ID: "c2", SyncEnabled: true, PasswordPolicies: "DisablePasswordExpiration"}}
	counts := CountUsers([]rules.State{stamped, svc})
	// the same users before any webhook / delta data
	noCloud := func(s rules.State) rules.State { s.Cloud = nil; return s }
	adOnly := CountUsers([]rules.State{noCloud(stamped), noCloud(svc)})
	allOn := &graph.OnPremisesSync{Features: map[string]bool{graph.FeaturePasswordSync: true,
		graph.FeatureCloudPasswordPolicyForSynced: true, graph.FeatureForceChangeOnLogon: true, graph.FeaturePasswordWriteback: true}}
	// two AD forests, each signing in to its own Entra domain
	twoAD := []events.ADPolicy{{Domain: "corp.test", DomainMaxAge: 42 * rules.Day}, {Domain: "lab.test", DomainMaxAge: 30 * rules.Day}}
	twoCounts := CountUsers([]rules.State{
		{Seen: true, InScope: true, AD: events.ADUser{Domain: "corp.test", UPN: "ann@corp.com", PwdLastSet: 1, UserAccountControl: 512}, Cloud: &events.CloudUser{ID: "c3"}},
		{Seen: true, InScope: true, AD: events.ADUser{Domain: "lab.test", UPN: "lee@lab.com", PwdLastSet: 1, UserAccountControl: 512}},
	})
	scenarios := []struct {
		name   string
		policy func(*rules.Policy)
		ad     []events.ADPolicy
		tenant Tenant
		counts UserCounts
	}{
		{"defaults_of_a_phs_tenant_without_pwsync_expiry", func(p *rules.Policy) { p.Expiry.Enabled = false; p.ForcedChange = false }, ad,
			Tenant{Domains: []graph.Domain{{ID: "example.com", AuthenticationType: "Managed", IsVerified: true,
				PasswordValidityPeriodInDays: intp(graph.NeverExpiresDays), PasswordNotificationWindowInDays: intp(14)}},
				Sync: &graph.OnPremisesSync{Features: map[string]bool{graph.FeaturePasswordSync: true}}}, counts},
		{"cloud_policy_enabled_but_never_expires_and_stamped_users", nil, ad,
			Tenant{Domains: []graph.Domain{{ID: "example.com", AuthenticationType: "Managed", IsVerified: true,
				PasswordValidityPeriodInDays: intp(graph.NeverExpiresDays), PasswordNotificationWindowInDays: intp(14)},
				{ID: "fed.example.com", AuthenticationType: "Federated", IsVerified: true}}, Sync: allOn}, counts},
		{"cloud_validity_differs", nil, ad,
			Tenant{Domains: []graph.Domain{{ID: "example.com", AuthenticationType: "Managed", IsVerified: true, PasswordValidityPeriodInDays: intp(90)}},
				Sync: &graph.OnPremisesSync{Features: map[string]bool{graph.FeatureCloudPasswordPolicyForSynced: true, graph.FeatureForceChangeOnLogon: true}}}, counts},
		{"validity_unset_counts_as_90_days", nil, ad,
			Tenant{Domains: []graph.Domain{{ID: "example.com", AuthenticationType: "Managed", IsVerified: true}}, Sync: allOn}, counts},
		{"no_cloud_state_stamped_users_unknown", nil, ad,
			Tenant{Domains: []graph.Domain{{ID: "example.com", AuthenticationType: "Managed", IsVerified: true, PasswordValidityPeriodInDays: intp(42)}}, Sync: allOn}, adOnly},
		{"users_not_read", nil, ad,
			Tenant{Domains: []graph.Domain{{ID: "example.com", AuthenticationType: "Managed", IsVerified: true, PasswordValidityPeriodInDays: intp(42)}}, Sync: allOn}, UserCounts{}},
		{"never_expires_accounts_forced_change_off", func(p *rules.Policy) { p.ForcedChange = false; p.Expiry.Enabled = false }, ad,
			Tenant{Domains: []graph.Domain{{ID: "example.com", AuthenticationType: "Managed", IsVerified: true, PasswordValidityPeriodInDays: intp(42)}}, Sync: allOn}, counts},
		{"never_expires_accounts_acted_on_by_opt_in", func(p *rules.Policy) { p.IncludeNeverExpires = true }, ad,
			Tenant{Domains: []graph.Domain{{ID: "example.com", AuthenticationType: "Managed", IsVerified: true, PasswordValidityPeriodInDays: intp(42)}}, Sync: allOn}, counts},
		{"two_ad_domains_each_compared_with_its_upn_suffix", nil, twoAD,
			Tenant{Domains: []graph.Domain{{ID: "corp.com", AuthenticationType: "Managed", IsVerified: true, PasswordValidityPeriodInDays: intp(42)},
				{ID: "lab.com", AuthenticationType: "Managed", IsVerified: true, PasswordValidityPeriodInDays: intp(90)}}, Sync: allOn}, twoCounts},
	}
	var b strings.Builder
	for _, sc := range scenarios {
		p := testPolicy()
		if sc.policy != nil {
			sc.policy(&p)
		}
		b.WriteString("== " + sc.name + "\n")
		PrintFacts(&b, sc.ad, sc.tenant, sc.counts)
		Print(&b, Analyse(p, sc.ad, sc.tenant, sc.counts))
	}
	golden(t, "report.golden", b.String())
	// The stricter opt-in blocks accounts AD lets log on: never a fix.
	if strings.Contains(b.String(), "include_never_expires: true") {
		t.Errorf("the report recommends include_never_expires: true:\n%s", b.String())
	}
	if len(counts.SyncedStamped) != 1 || counts.SyncedStamped[0] != "bob@example.com" || counts.NeverExpiresAD != 1 || !counts.CloudKnown {
		t.Fatalf("counts = %+v", counts)
	}
	if adOnly.CloudKnown || adOnly.NeverExpiresAD != 1 {
		t.Fatalf("counts without cloud state = %+v", adOnly)
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if string(want) != got {
		t.Fatalf("%s differs (run with -update and review the diff); got:\n%s", path, got)
	}
}
