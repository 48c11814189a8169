package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFallbackWarns (issue 14 item 6): with fallback chain and no pending
// group, a flag that Graph accepts and drops leaves the user merely signed
// out; Load warns for an actuator, naming both keys, and only then.
func TestFallbackWarns(t *testing.T) {
	base := strings.ReplaceAll(valid, "file:SECRETFILE", "env:G")
	getenv := env(map[string]string{"AD_PW": "p", "G": "g"})
	const group = "00000000-0000-0000-0000-0000000000aa"
	for _, tc := range []struct {
		name, actuator string
		warn           bool
	}{
		{"default_chain_without_group", "", true},
		{"chain_without_group", "actuator: {cloud_managed: {fallback: chain}}\n", true},
		{"chain_with_group", "actuator: {synced: {pending_group_id: " + group + "}}\n", false},
		{"temporary_password", "actuator: {cloud_managed: {fallback: temporary_password}}\n", false},
		{"none", "actuator: {cloud_managed: {fallback: none}}\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "pwsync.yaml")
			if err := os.WriteFile(path, []byte(base+tc.actuator), 0o600); err != nil {
				t.Fatal(err)
			}
			_, warnings, err := Load(path, Targets{Actuator: true}, getenv)
			if err != nil {
				t.Fatal(err)
			}
			var found []string
			for _, w := range warnings {
				if strings.Contains(w, "actuator.cloud_managed.fallback") {
					found = append(found, w)
				}
			}
			switch {
			case tc.warn && len(found) != 1:
				t.Fatalf("warnings %q, want one about the fallback", warnings)
			case tc.warn && !strings.Contains(found[0], "actuator.synced.pending_group_id"):
				t.Fatalf("warning %q does not name actuator.synced.pending_group_id", found[0])
			case !tc.warn && len(found) != 0:
				t.Fatalf("warned %q", found)
			}
			// Only the actuator acts on the fallback.
			if _, w, _ := Load(path, Targets{Evaluator: true}, getenv); len(w) != 0 {
				t.Errorf("evaluator target warned %q", w)
			}
		})
	}
}

// withPendingGroup adds a pending group to a config built on valid, so that
// tests of other warnings do not meet the fallback's.
func withPendingGroup(yaml string) string {
	return strings.Replace(yaml, "evaluator:\n", "actuator: {synced: {pending_group_id: 00000000-0000-0000-0000-0000000000aa}}\nevaluator:\n", 1)
}
