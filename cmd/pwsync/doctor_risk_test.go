package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// TestDoctorRiskLicence: with risk.enabled, doctor reads Identity
// Protection; the simulator switched to a tenant without Entra ID P2
// answers 403, which doctor reports with the licence in the fix.
func TestDoctorRiskLicence(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "graph-ca.pem")
	sim := runSim(t, graphsim.Options{ClientSecret: "doctor-secret"}, ca)
	cfg := config.Default()
	useSim(&cfg, sim, "doctor-secret", ca)
	cfg.Risk.Enabled = true
	for _, tc := range []struct {
		licensed bool
		status   checkStatus
		fixHas   string
	}{
		{true, statusPass, ""},
		{false, statusFail, "Entra ID P2"},
	} {
		sim.SetRiskLicensed(tc.licensed)
		d := &doctor{cfg: cfg, targets: config.AllTargets, timeout: 10 * time.Second}
		d.checkRisk(context.Background())
		if len(d.results) != 1 || d.results[0].Status != tc.status || !strings.Contains(d.results[0].Fix, tc.fixHas) {
			t.Fatalf("licensed=%v: %+v", tc.licensed, d.results)
		}
	}
	// The role lines name what risk needs.
	var roles []string
	for _, n := range neededRoles(cfg, config.AllTargets) {
		roles = append(roles, n.Roles[0])
	}
	if j := strings.Join(roles, ","); !strings.Contains(j, "IdentityRiskyUser.Read.All") || !strings.Contains(j, "IdentityRiskEvent.Read.All") {
		t.Fatalf("needed roles %v lack the risk ones", roles)
	}
}
