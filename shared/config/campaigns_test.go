package config

import (
	"strings"
	"testing"
	"time"
)

func TestCampaigns(t *testing.T) {
	base := strings.ReplaceAll(valid, "file:SECRETFILE", "lit")
	getenv := env(map[string]string{"AD_PW": "pw"})
	tests := []struct {
		name, yaml, wantErr string
	}{
		{"defaults", "", ""},
		{"time-scaled budget", "campaigns: {write_budget: 3000, write_window: 15s, approval_threshold: 0}\n", ""},
		{"share above 1", "campaigns: {write_share: 1.5}\n", "campaigns.write_share"},
		{"threshold above cap", "campaigns: {approval_threshold: 10, hard_cap: 5}\n", "campaigns.approval_threshold"},
		{"short window", "campaigns: {write_window: 10ms}\n", "campaigns.write_budget"},
		{"uncertain wait below graph timeout", "campaigns: {uncertain_wait: 1s}\n", "campaigns.uncertain_wait"},
		{"outage alert below a second", "campaigns: {ad_outage_alert: 0s}\n", "campaigns.ad_outage_alert"},
		{"unknown key", "campaigns: {budget: 1}\n", "campaigns.budget"},
		{"disabled is not checked", "campaigns: {enabled: false, write_share: 7}\n", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(base+tc.yaml), getenv)
			if err == nil {
				err = cfg.Validate(AllTargets)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one naming %s", err, tc.wantErr)
			}
			if tc.name == "defaults" && (cfg.Campaigns.WriteWindow != 150*time.Second || cfg.Campaigns.WriteBudget != 3000) {
				t.Fatalf("defaults: %+v", cfg.Campaigns)
			}
		})
	}
}
