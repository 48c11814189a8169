package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pwsync/pwsync/shared/config"
)

// TestFallbackWarning (issue 14 item 6): with the default fallback (chain)
// and no pending group, a must-change flag that Graph accepts and drops
// leaves the user merely signed out. `pwsync config check` and `pwsync
// doctor` warn, naming actuator.cloud_managed.fallback and
// actuator.synced.pending_group_id; with a pending group, neither does.
func TestFallbackWarning(t *testing.T) {
	t.Setenv("PWSYNC_TEST_AD_PASSWORD", "p")
	t.Setenv("PWSYNC_TEST_GRAPH_SECRET", "s")
	keys := []string{"actuator.cloud_managed.fallback", "actuator.synced.pending_group_id"}
	for _, tc := range []struct {
		name, yaml string
		warn       bool
	}{
		{"chain_without_group", policyCheckBase, true},
		{"chain_with_group", policyCheckBase + "actuator: {synced: {pending_group_id: 00000000-0000-0000-0000-0000000000aa}}\n", false},
		{"temporary_password", policyCheckBase + "actuator: {cloud_managed: {fallback: temporary_password}}\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "pwsync.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			// config check
			var out bytes.Buffer
			if err := dispatch(context.Background(), []string{"config", "check", "--config", path}, &out, &out); err != nil {
				t.Fatalf("config check: %v\n%s", err, out.String())
			}
			var warning string
			for _, l := range strings.Split(out.String(), "\n") {
				if strings.HasPrefix(l, "warning: ") && strings.Contains(l, keys[0]) {
					warning = l
				}
			}
			if tc.warn != (warning != "") {
				t.Fatalf("config check warned %q, want a warning: %v\n%s", warning, tc.warn, out.String())
			}
			for _, k := range keys {
				if tc.warn && !strings.Contains(warning, k) {
					t.Errorf("config check's warning does not name %s: %q", k, warning)
				}
			}
			// doctor: its config check, without the network checks after it.
			d := &doctor{targets: config.AllTargets}
			if !d.checkConfig(path) {
				t.Fatalf("doctor refused the config: %v", d.results)
			}
			var found *checkResult
			for i, r := range d.results {
				if r.Name == "must-change fallback" {
					found = &d.results[i]
				}
			}
			if tc.warn != (found != nil) {
				t.Fatalf("doctor results %v, want a must-change fallback warning: %v", d.results, tc.warn)
			}
			if !tc.warn {
				return
			}
			if found.Status != statusWarn {
				t.Errorf("doctor: %s, want WARN", found.Status)
			}
			for _, k := range keys {
				if !strings.Contains(found.Detail, k) || !strings.Contains(found.Fix, k) {
					t.Errorf("doctor's warning or its fix does not name %s: %s", k, found)
				}
			}
		})
	}
}
