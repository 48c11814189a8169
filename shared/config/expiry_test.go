package config

import (
	"strings"
	"testing"
	"time"
)

func TestExpiryDefaultsAndKeys(t *testing.T) {
	// Entra groups: the evaluator reads their members, so it needs graph:.
	cfg, err := Parse([]byte(`
graph: {tenant_id: t, client_id: c, client_secret: s}
evaluator:
  forced_change: {notify: true}
  scope:
    include_groups: ["CN=Pilot,OU=Groups,DC=example,DC=test"]
    include_entra_groups: [0b5f6c1e-4a7d-4c1e-9d1a-3f2b1c0d9e8f]
  expiry:
    enabled: true
    lead_days: [10, 2, 0]
    time_zone: Europe/Berlin
`), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(Targets{Evaluator: true}); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	noGraph := cfg
	noGraph.Graph = Config{}.Graph
	if err := noGraph.Validate(Targets{Evaluator: true}); err == nil || !strings.Contains(err.Error(), "graph.tenant_id: required") {
		t.Fatalf("evaluator with Entra groups and no graph: %v", err)
	}
	x := cfg.Evaluator.Expiry
	if !x.Enabled || len(x.LeadDays) != 3 || !x.Notify || !x.Enforce || x.MaxLate != 36*time.Hour || x.SweepInterval != time.Hour {
		t.Fatalf("expiry = %+v", x)
	}
	if !cfg.Evaluator.ForcedChange.Notify || cfg.Evaluator.Scope.EntraRefresh != 15*time.Minute || len(cfg.Evaluator.Scope.IncludeGroups) != 1 {
		t.Fatalf("evaluator = %+v", cfg.Evaluator)
	}
}

func TestExpiryErrorsNameTheKey(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"duplicate_lead_day", "expiry: {lead_days: [7, 7]}", "evaluator.expiry.lead_days[1]: duplicate"},
		{"lead_day_range", "expiry: {lead_days: [400]}", "evaluator.expiry.lead_days[0]: must be between"},
		{"nothing_to_do", "expiry: {enabled: true, notify: false, enforce: false}", "evaluator.expiry.enabled: neither"},
		{"notify_without_leads", "expiry: {enabled: true, lead_days: []}", "evaluator.expiry.lead_days: required"},
		{"bad_time_zone", "expiry: {time_zone: Mars/Olympus}", "evaluator.expiry.time_zone: unknown time zone"},
		{"short_sweep", "expiry: {sweep_interval: 5s}", "evaluator.expiry.sweep_interval"},
		{"negative_max_late", "expiry: {max_late: -1h}", "evaluator.expiry.max_late"},
		{"group_not_dn", "scope: {include_groups: [Pilot]}", "evaluator.scope.include_groups[0]: must be a group DN"},
		{"entra_group_not_id", "scope: {include_entra_groups: [Pilot]}", "evaluator.scope.include_entra_groups[0]"},
		{"unknown_expiry_key", "expiry: {lead_dayz: [1]}", "evaluator.expiry.lead_dayz: unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte("evaluator:\n  "+tt.yaml+"\n"), env(nil))
			if err == nil {
				err = cfg.Validate(Targets{Evaluator: true})
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}
