package mustchange

import (
	"slices"
	"strings"
	"testing"

	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/graph"
)

func TestTemporaryPasswordIsComplex(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		pw, err := TemporaryPassword()
		if err != nil {
			t.Fatal(err)
		}
		if len(pw) != 20 || !strings.ContainsAny(pw, "ABCDEFGHJKLMNPQRSTUVWXYZ") || !strings.ContainsAny(pw, "abcdefghijkmnopqrstuvwxyz") ||
			!strings.ContainsAny(pw, "23456789") || !strings.ContainsAny(pw, "!#%+-.=?@_") || seen[pw] {
			t.Fatalf("weak or repeated password %q", pw)
		}
		seen[pw] = true
	}
}

func TestStrategy(t *testing.T) {
	tests := []struct {
		name   string
		cfg    config.Actuator
		nilOut bool
		writes []Write
	}{
		{name: "verify off", cfg: config.Actuator{CloudManaged: config.CloudManaged{Fallback: FallbackChain}}, nilOut: true},
		{name: "temporary password", cfg: config.Actuator{CloudManaged: config.CloudManaged{Verify: true, Fallback: FallbackTemporaryPassword}},
			writes: []Write{WriteTemporaryPassword}},
		{name: "chain", cfg: config.Actuator{CloudManaged: config.CloudManaged{Verify: true, Fallback: FallbackChain},
			Synced: config.Synced{RevokeSessions: true, PendingGroupID: "g"}}, writes: []Write{WriteRevoke, WritePendingGroup}},
		{name: "chain, group only", cfg: config.Actuator{CloudManaged: config.CloudManaged{Verify: true, Fallback: FallbackChain},
			Synced: config.Synced{PendingGroupID: "g"}}, writes: []Write{WritePendingGroup}},
		{name: "none", cfg: config.Actuator{CloudManaged: config.CloudManaged{Verify: true, Fallback: FallbackNone}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := FromConfig(tc.cfg)
			if (s == nil) != tc.nilOut {
				t.Fatalf("strategy %+v", s)
			}
			if s != nil && !slices.Equal(s.Writes(), tc.writes) {
				t.Fatalf("writes %v, want %v", s.Writes(), tc.writes)
			}
		})
	}
	if Took(graph.User{}) || !Took(graph.User{ForceChangeWithMFA: true}) || !Took(graph.User{ForceChangeNextSignIn: true}) {
		t.Fatal("Took")
	}
}
