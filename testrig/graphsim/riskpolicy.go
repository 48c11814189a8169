package graphsim

import "net/http"

// Identity Protection's tenant settings: GET /beta/identityProtection/policy
// (docs/graph-fidelity.md, "Identity Protection"). Graph serves the
// resource in beta only, so it is the one route under /beta here; other
// beta paths answer 400 as an unknown segment would.

// Roles of the policy read (least privileged first).
var rolesRiskPolicyRead = []string{"Policy.Read.IdentityProtection", "Policy.ReadWrite.IdentityProtection"}

// RiskPolicyRoles is what pwsync's policy report needs to read the
// setting: add it to Options.Roles (it is not in DefaultRoles, as it is
// optional for pwsync).
var RiskPolicyRoles = []string{"Policy.Read.IdentityProtection"}

var betaRoutes = []route{
	{method: "GET", pattern: segs("/identityProtection/policy"), roles: rolesRiskPolicyRead, handle: (*Server).getRiskPolicy},
}

// SetRiskClearedOnPasswordReset is the admin hook for the tenant setting
// "Allow on-premises password change to reset user risk"
// (isUserRiskClearedOnPasswordReset). It starts off: Microsoft documents
// the setting as opt-in.
func (s *Server) SetRiskClearedOnPasswordReset(on bool) {
	s.risk.mu.Lock()
	defer s.risk.mu.Unlock()
	s.risk.clearedOnReset = on
}

// GET /beta/identityProtection/policy: 403 without Entra ID P2, as the
// other Identity Protection calls.
func (s *Server) getRiskPolicy(c *call) reply {
	if r := s.riskGate(); r != nil {
		return *r
	}
	s.risk.mu.Lock()
	on := s.risk.clearedOnReset
	s.risk.mu.Unlock()
	return jsonReply(http.StatusOK, map[string]any{
		"@odata.context":                   "https://graph.microsoft.com/beta/$metadata#identityProtection/policy/$entity",
		"isUserRiskClearedOnPasswordReset": on,
	})
}
