package graphsim

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestRiskPolicyBeta: GET /beta/identityProtection/policy answers the
// setting (off until the admin hook turns it on), 403 without the
// permission or the licence; v1.0 has no such resource, and /beta serves
// nothing else.
func TestRiskPolicyBeta(t *testing.T) {
	e := newEnv(t, Options{Roles: append(slices.Clone(DefaultRoles), RiskPolicyRoles...)})
	const path = "/beta/identityProtection/policy"
	get := func() bool {
		t.Helper()
		r := e.do("GET", path, nil)
		wantStatus(t, r, http.StatusOK)
		on, ok := r.json["isUserRiskClearedOnPasswordReset"].(bool)
		if !ok {
			t.Fatalf("no boolean isUserRiskClearedOnPasswordReset: %s", r.raw)
		}
		if ctx, _ := r.json["@odata.context"].(string); !strings.HasPrefix(ctx, "https://graph.microsoft.com/beta/$metadata#identityProtection/policy") {
			t.Fatalf("@odata.context = %q", ctx)
		}
		return on
	}
	if get() {
		t.Fatal("the setting is on by default; Microsoft documents it as opt-in")
	}
	e.srv.SetRiskClearedOnPasswordReset(true)
	if !get() {
		t.Fatal("the setting stayed off after SetRiskClearedOnPasswordReset(true)")
	}
	e.srv.SetRiskClearedOnPasswordReset(false)
	if get() {
		t.Fatal("the setting stayed on after SetRiskClearedOnPasswordReset(false)")
	}

	// Unlicensed tenant: the Identity Protection 403.
	e.srv.SetRiskLicensed(false)
	r := e.do("GET", path, nil)
	wantError(t, r, http.StatusForbidden, codeAuthDenied)
	if !strings.Contains(string(r.raw), "Entra ID P2") {
		t.Fatalf("403 does not name the licence: %s", r.raw)
	}
	e.srv.SetRiskLicensed(true)

	// Not in v1.0; and /beta is no copy of v1.0 here.
	wantStatus(t, e.do("GET", "/v1.0/identityProtection/policy", nil), http.StatusBadRequest)
	wantStatus(t, e.do("GET", "/beta/users", nil), http.StatusBadRequest)

	// The services' default roles do not include the policy read.
	plain := newEnv(t, Options{})
	wantError(t, plain.do("GET", path, nil), http.StatusForbidden, codeAuthDenied)
}
