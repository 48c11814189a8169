package msgraph_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// TestConfirmCompromisedAgainstSimulator: the request is the POST Graph
// documents ({"userIds": [...]}, 204), the users end confirmedCompromised,
// more than graph.MaxRiskUserIDs is Graph's 400 and a tenant without
// Entra ID P2 is graph.IsUnlicensed.
func TestConfirmCompromisedAgainstSimulator(t *testing.T) {
	s := startSim(t, graphsim.Options{Roles: append(slices.Clone(graphsim.DefaultRoles), graphsim.RiskRoles...)})
	var ids []string
	for i := range graph.MaxRiskUserIDs + 1 {
		u := graphsim.User{ID: fmt.Sprintf("0c0c0c0c-%04d-4000-8000-000000000000", i), UserPrincipalName: fmt.Sprintf("cc%d@example.test", i), AccountEnabled: true}
		s.PutUser(u)
		ids = append(ids, u.ID)
	}
	c := newClient(t, s, nil)

	if err := c.ConfirmCompromised(ctx(t), ids[:2]); err != nil {
		t.Fatalf("ConfirmCompromised: %v", err)
	}
	for _, id := range ids[:2] {
		if ru, ok := s.RiskyUser(id); !ok || ru.RiskState != graphsim.RiskStateConfirmedCompromised || ru.RiskLevel != graphsim.RiskLevelHigh {
			t.Fatalf("%s after ConfirmCompromised: %+v %v", id, ru, ok)
		}
	}
	var posts []graphsim.Request
	for _, r := range s.Requests() {
		if r.Method == http.MethodPost && r.Path == "/v1.0/identityProtection/riskyUsers/confirmCompromised" {
			posts = append(posts, r)
		}
	}
	var body struct {
		UserIDs []string `json:"userIds"`
	}
	if len(posts) != 1 || posts[0].Status != http.StatusNoContent || json.Unmarshal(posts[0].Body, &body) != nil || !slices.Equal(body.UserIDs, ids[:2]) {
		t.Fatalf("confirmCompromised requests: %+v", posts)
	}
	if _, ok := s.RiskyUser(ids[2]); ok {
		t.Fatal("a user not in the call has a risk record")
	}

	tests := []struct {
		name       string
		ids        []string
		unlicensed bool
		status     int
	}{
		{"above the limit", ids, false, http.StatusBadRequest},
		{"no Entra ID P2", ids[2:3], true, http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.SetRiskLicensed(!tc.unlicensed)
			err := c.ConfirmCompromised(ctx(t), tc.ids)
			if graph.StatusOf(err) != tc.status || graph.IsUnlicensed(err) != tc.unlicensed {
				t.Fatalf("err %v (status %d), want status %d", err, graph.StatusOf(err), tc.status)
			}
			if _, ok := s.RiskyUser(ids[2]); ok {
				t.Fatal("a refused call marked a user")
			}
		})
	}
}
