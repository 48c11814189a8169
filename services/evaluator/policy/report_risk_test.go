package policy

import (
	"strings"
	"testing"

	"github.com/pwsync/pwsync/shared/graph"
)

// TestRiskResetFinding: with risk.enabled, the setting off (or on without
// password hash sync) and no dismissal is a warning naming both fixes; on
// with the dismissal too is a note; unknown without the dismissal is a
// note with the reason; otherwise nothing.
func TestRiskResetFinding(t *testing.T) {
	phs := &graph.OnPremisesSync{Features: map[string]bool{graph.FeaturePasswordSync: true}}
	noPHS := &graph.OnPremisesSync{Features: map[string]bool{}}
	on, off := &RiskReset{On: true}, &RiskReset{}
	unknown := &RiskReset{Unknown: "Graph answered 403 (needs Policy.Read.IdentityProtection)"}
	tests := []struct {
		name             string
		enabled, dismiss bool
		reset            *RiskReset
		sync             *graph.OnPremisesSync
		sev              string   // "" = no finding about the setting
		has              []string // in What, Consequence or Fix
	}{
		{"risk disabled", false, false, off, phs, "", nil},
		{"off without dismissal", true, false, off, phs, "warn", []string{"is off and risk.dismiss_after_change is false",
			"stays at risk", "turn the setting on", "risk.dismiss_after_change: true"}},
		{"off with dismissal", true, true, off, phs, "", nil},
		{"on with password hash sync", true, false, on, phs, "", nil},
		{"on and dismissal", true, true, on, phs, "info", []string{"is on and risk.dismiss_after_change is true", "both remediate", "harmless"}},
		{"on without password hash sync", true, false, on, noPHS, "warn", []string{"password hash sync is off",
			"enable password hash sync", "risk.dismiss_after_change: true"}},
		{"on without password hash sync, dismissal", true, true, on, noPHS, "", nil},
		{"unknown without dismissal", true, false, unknown, phs, "info", []string{"is unknown: Graph answered 403 (needs Policy.Read.IdentityProtection)",
			"if it is off", "Policy.Read.IdentityProtection", "risk.dismiss_after_change: true"}},
		{"unknown with dismissal", true, true, unknown, phs, "", nil},
		{"not asked", true, false, nil, phs, "", nil},
		{"no directory sync", true, false, off, nil, "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := testPolicy()
			p.Risk.Enabled, p.Risk.DismissAfterChange = tc.enabled, tc.dismiss
			var got []Finding
			for _, f := range Analyse(p, nil, Tenant{Sync: tc.sync, RiskReset: tc.reset}, UserCounts{}) {
				if strings.Contains(f.What, "Allow on-premises password change to reset user risk") {
					got = append(got, f)
				}
			}
			if tc.sev == "" {
				if len(got) != 0 {
					t.Fatalf("want no finding about the setting, got %+v", got)
				}
				return
			}
			if len(got) != 1 || got[0].Severity != tc.sev {
				t.Fatalf("want one %s finding, got %+v", tc.sev, got)
			}
			text := got[0].What + "\n" + got[0].Consequence + "\n" + got[0].Fix
			for _, h := range tc.has {
				if !strings.Contains(text, h) {
					t.Errorf("finding lacks %q:\n%s", h, text)
				}
			}
		})
	}
}

// TestRiskResetFact: the report's facts say on, off or unknown and why;
// nothing when the setting was not asked.
func TestRiskResetFact(t *testing.T) {
	const line = "Entra ID Protection: Allow on-premises password change to reset user risk (isUserRiskClearedOnPasswordReset): "
	for _, tc := range []struct {
		reset *RiskReset
		want  string // "" = no line
	}{
		{&RiskReset{On: true}, line + "on\n"},
		{&RiskReset{}, line + "off\n"},
		{&RiskReset{On: true, Unknown: "Graph answered 404"}, line + "unknown: Graph answered 404\n"},
		{nil, ""},
	} {
		var b strings.Builder
		PrintFacts(&b, nil, Tenant{RiskReset: tc.reset}, UserCounts{})
		switch {
		case tc.want == "" && strings.Contains(b.String(), "Allow on-premises"):
			t.Errorf("not asked, yet printed:\n%s", b.String())
		case tc.want != "" && !strings.Contains(b.String(), tc.want):
			t.Errorf("%+v: facts lack %q:\n%s", tc.reset, tc.want, b.String())
		}
	}
}
