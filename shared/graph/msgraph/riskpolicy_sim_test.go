package msgraph_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/graph/msgraph"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// TestIdentityProtectionPolicyAgainstSimulator: the setting is read from
// the beta endpoint next to the configured v1.0 one; a missing permission
// and a tenant without Entra ID P2 are 403s (graph.IsUnlicensed), and a
// base URL not ending in /v1.0 is refused before any request.
func TestIdentityProtectionPolicyAgainstSimulator(t *testing.T) {
	s := startSim(t, graphsim.Options{Roles: append(slices.Clone(graphsim.DefaultRoles), graphsim.RiskPolicyRoles...)})
	c := newClient(t, s, nil)
	for _, on := range []bool{true, false} {
		s.SetRiskClearedOnPasswordReset(on)
		p, err := c.IdentityProtectionPolicy(ctx(t))
		if err != nil || p.UserRiskClearedOnPasswordReset != on {
			t.Fatalf("set %v: got %+v, %v", on, p, err)
		}
	}
	var paths []string
	for _, r := range s.Requests() {
		if strings.Contains(r.Path, "identityProtection/policy") {
			paths = append(paths, r.Method+" "+r.Path)
		}
	}
	if len(paths) != 2 || paths[0] != "GET /beta/identityProtection/policy" {
		t.Fatalf("requests = %v", paths)
	}

	s.SetRiskLicensed(false)
	if _, err := c.IdentityProtectionPolicy(ctx(t)); !graph.IsUnlicensed(err) {
		t.Fatalf("unlicensed: err %v, want a 403", err)
	}
	s.SetRiskLicensed(true)

	plain := newClient(t, startSim(t, graphsim.Options{}), nil) // DefaultRoles: no Policy.Read.IdentityProtection
	if _, err := plain.IdentityProtectionPolicy(ctx(t)); graph.StatusOf(err) != http.StatusForbidden {
		t.Fatalf("without the permission: err %v, want a 403", err)
	}

	proxied := newClient(t, s, func(cfg *msgraph.Config) {
		cfg.GraphBaseURL = strings.TrimSuffix(s.GraphBaseURL(), "/v1.0") + "/graph-proxy"
	})
	before := len(s.Requests())
	if _, err := proxied.IdentityProtectionPolicy(ctx(t)); err == nil || !strings.Contains(err.Error(), "does not end in /v1.0") {
		t.Fatalf("base URL without /v1.0: err %v", err)
	}
	if len(s.Requests()) != before {
		t.Fatal("a request was sent to a guessed beta URL")
	}
}
