package config

import (
	"os"
	"path/filepath"
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

// TestNotifyOffWarns: expiry (or reset) notices on while notify.enabled is
// off is valid, but every notice would be skipped: Load warns, naming both keys.
func TestNotifyOffWarns(t *testing.T) {
	base := strings.ReplaceAll(valid, "file:SECRETFILE", "env:G")
	base = withPendingGroup(base) // keeps the fallback warning out of these
	getenv := env(map[string]string{"AD_PW": "p", "G": "g"})
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"expiry_notify_without_notifier", "  expiry: {enabled: true}\n",
			[]string{"evaluator.expiry.notify is on but notify.enabled is off"}},
		{"reset_notice_without_notifier", "  forced_change: {notify: true}\n",
			[]string{"evaluator.forced_change.notify is on but notify.enabled is off"}},
		{"both", "  expiry: {enabled: true}\n  forced_change: {notify: true}\n",
			[]string{"evaluator.expiry.notify is on", "evaluator.forced_change.notify is on"}},
		{"expiry_enforce_only", "  expiry: {enabled: true, notify: false}\n", nil},
		{"expiry_off", "  expiry: {enabled: false}\n", nil},
		{"notifier_on", "  expiry: {enabled: true}\nnotify: {enabled: true, senders: [noreply@example.test]}\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "pwsync.yaml")
			if err := os.WriteFile(path, []byte(base+tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, warnings, err := Load(path, Targets{Evaluator: true, Actuator: true}, getenv)
			if err != nil {
				t.Fatal(err)
			}
			if len(warnings) != len(tc.want) {
				t.Fatalf("warnings %q, want %d", warnings, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(warnings[i], w) {
					t.Errorf("warning %q lacks %q", warnings[i], w)
				}
			}
			// an ingest-only process decides no notices: nothing to warn about
			if _, w, _ := Load(path, Targets{Ingest: true}, getenv); len(w) != 0 {
				t.Errorf("ingest target warned %q", w)
			}
		})
	}
}
