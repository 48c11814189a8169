package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/testrig/adtest"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

const riskResetFact = "Entra ID Protection: Allow on-premises password change to reset user risk (isUserRiskClearedOnPasswordReset): "

// TestPolicyReportRiskResetCLI: `pwsync policy report` with risk.enabled
// prints the Identity Protection setting read from the simulator's beta
// endpoint (on, off, unknown on a 403 from a missing permission or
// licence) and warns when neither Entra nor pwsync clears the risk after
// the AD change. The report never fails on the setting.
func TestPolicyReportRiskResetCLI(t *testing.T) {
	dc := adtest.Require(t)
	ou := dc.NewOU(t)
	realm := strings.ToLower(dc.Realm)
	t.Setenv("PWSYNC_TEST_AD_PASSWORD", dc.BindPassword)
	t.Setenv("PWSYNC_TEST_GRAPH_SECRET", simSecret)
	dir := t.TempDir()
	// sim starts a simulator with the report's reads, the policy read
	// when withPolicyRead.
	sim := func(withPolicyRead bool) *graphsim.Server {
		roles := append(slices.Clone(graphsim.DefaultRoles), "Domain.Read.All", "OnPremDirectorySynchronization.Read.All")
		if withPolicyRead {
			roles = append(roles, graphsim.RiskPolicyRoles...)
		}
		s := runSim(t, graphsim.Options{ClientSecret: simSecret, Roles: roles}, "")
		s.PutDomain(graphsim.Domain{ID: realm, IsVerified: true, ValidityUnset: true, WindowUnset: true})
		return s
	}
	report := func(s *graphsim.Server, name, risk string) string {
		t.Helper()
		ca := filepath.Join(dir, name+"-ca.pem")
		if err := s.WriteCAFile(ca); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name+".yaml")
		cfg := adGraphYAML(realm, dc, s, ca) + fmt.Sprintf(`
evaluator:
  scope: {include_ous: ["%s"]}
risk: %s
`, ou, risk)
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return runPolicyReport(t, path)
	}
	const (
		setting  = `Identity Protection's "Allow on-premises password change to reset user risk"`
		warnOff  = "[WARN] " + setting + " is off and risk.dismiss_after_change is false\n"
		infoBoth = "[INFO] " + setting + " is on and risk.dismiss_after_change is true\n"
		infoUnk  = "[INFO] whether " + setting + " is on is unknown: Graph answered 403: the app needs Policy.Read.IdentityProtection"
	)
	readable, denied := sim(true), sim(false)
	for _, c := range []struct {
		name      string
		sim       *graphsim.Server
		on        bool
		unlicense bool
		risk      string
		want      []string
		notWant   []string
	}{
		{"off", readable, false, false, "{enabled: true}",
			[]string{riskResetFact + "off\n", warnOff, "turn the setting on", "risk.dismiss_after_change: true"}, []string{infoBoth}},
		{"on", readable, true, false, "{enabled: true}",
			[]string{riskResetFact + "on\n"}, []string{warnOff, infoBoth, "[WARN] " + setting}},
		{"on_and_dismissal", readable, true, false, "{enabled: true, dismiss_after_change: true}",
			[]string{riskResetFact + "on\n", infoBoth}, []string{warnOff}},
		{"off_risk_disabled", readable, false, false, "{enabled: false}",
			[]string{riskResetFact + "off\n"}, []string{setting}},
		{"unknown_without_permission", denied, true, false, "{enabled: true}",
			[]string{riskResetFact + "unknown: Graph answered 403: the app needs Policy.Read.IdentityProtection", infoUnk},
			[]string{riskResetFact + "on", warnOff}},
		{"unknown_unlicensed", readable, true, true, "{enabled: true}",
			[]string{riskResetFact + "unknown: Graph answered 403", "Entra ID P2", infoUnk}, []string{riskResetFact + "on", warnOff}},
		// a cloud without the beta resource: still a report, the setting unknown
		{"unknown_404", readable, true, false, "{enabled: true}",
			[]string{riskResetFact + "unknown: Graph answered 404: this cloud has no beta identityProtection/policy",
				"[INFO] whether " + setting + " is on is unknown: Graph answered 404"}, []string{riskResetFact + "on", warnOff}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.sim.SetRiskClearedOnPasswordReset(c.on)
			c.sim.SetRiskLicensed(!c.unlicense)
			if c.name == "unknown_404" {
				c.sim.InjectFault(graphsim.Fault{PathPrefix: "/beta/identityProtection/policy", Status: 404, Count: 1})
			}
			out := report(c.sim, c.name, c.risk)
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("report lacks %q:\n%s", w, out)
				}
			}
			for _, w := range c.notWant {
				if strings.Contains(out, w) {
					t.Errorf("report has %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestDoctorRiskResetSetting: doctor's risk check names the setting in
// its one line: on, off, or unknown when the app may not read it.
func TestDoctorRiskResetSetting(t *testing.T) {
	for _, tc := range []struct {
		name string
		read bool
		on   bool
		want string
	}{
		{"on", true, true, "resets user risk: on"},
		{"off", true, false, "resets user risk: off"},
		{"no permission", false, true, "resets user risk: unknown: Graph answered 403: the app needs Policy.Read.IdentityProtection"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := graphsim.Options{ClientSecret: "doctor-secret"}
			if tc.read {
				opts.Roles = append(slices.Clone(graphsim.DefaultRoles), graphsim.RiskPolicyRoles...)
			}
			ca := filepath.Join(t.TempDir(), "graph-ca.pem")
			sim := runSim(t, opts, ca)
			sim.SetRiskClearedOnPasswordReset(tc.on)
			cfg := config.Default()
			useSim(&cfg, sim, "doctor-secret", ca)
			cfg.Risk.Enabled = true
			d := &doctor{cfg: cfg, targets: config.AllTargets, timeout: 10 * time.Second}
			d.checkRisk(context.Background())
			if len(d.results) != 1 || d.results[0].Status != statusPass || !strings.Contains(d.results[0].Detail, tc.want) {
				t.Fatalf("want one PASS naming %q, got %+v", tc.want, d.results)
			}
		})
	}
}
