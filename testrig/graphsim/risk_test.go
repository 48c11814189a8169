package graphsim

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func riskEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t, Options{Roles: append(append([]string{}, DefaultRoles...), RiskRoles...)})
	for _, u := range []User{
		{ID: "u1", UserPrincipalName: "alice@example.test", DisplayName: "Alice", AccountEnabled: true},
		{ID: "u2", UserPrincipalName: "bob@example.test", DisplayName: "Bob", AccountEnabled: true},
		{ID: "u3", UserPrincipalName: "carol@example.test", AccountEnabled: true},
	} {
		e.srv.PutUser(u)
	}
	return e
}

func values(r resp) []map[string]any {
	var out []map[string]any
	v, _ := r.json["value"].([]any)
	for _, x := range v {
		out = append(out, x.(map[string]any))
	}
	return out
}

func TestRiskyUsersListFilterPaging(t *testing.T) {
	e := riskEnv(t)
	for _, u := range []string{"u1", "u2", "u3"} {
		if _, err := e.srv.RaiseRisk(u, "leakedCredentials", RiskLevelHigh); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	// Paging: $top=2 gives a nextLink whose page has the third user.
	r := e.do("GET", "/v1.0/identityProtection/riskyUsers?$top=2", nil)
	if r.status != http.StatusOK || len(values(r)) != 2 {
		t.Fatalf("page 1: %d %s", r.status, r.raw)
	}
	next, _ := r.json["@odata.nextLink"].(string)
	if next == "" {
		t.Fatalf("no nextLink: %s", r.raw)
	}
	nu, _ := url.Parse(next)
	r2 := e.do("GET", nu.RequestURI(), nil)
	got := values(r2)
	if len(got) != 1 || got[0]["id"] != "u3" || r2.json["@odata.nextLink"] != nil {
		t.Fatalf("page 2: %s", r2.raw)
	}
	for _, k := range []string{"riskLevel", "riskState", "riskDetail", "riskLastUpdatedDateTime", "userPrincipalName", "isDeleted", "isProcessing"} {
		if _, ok := got[0][k]; !ok {
			t.Errorf("riskyUser lacks %s: %v", k, got[0])
		}
	}
	// The filter on riskLastUpdatedDateTime ge the third's time keeps it only.
	since := got[0]["riskLastUpdatedDateTime"].(string)
	r3 := e.do("GET", "/v1.0/identityProtection/riskyUsers?$filter="+url.QueryEscape("riskLastUpdatedDateTime ge "+since), nil)
	if v := values(r3); len(v) != 1 || v[0]["id"] != "u3" {
		t.Fatalf("filter ge %s: %s", since, r3.raw)
	}
	// Get by id, and 404 for a user without risk.
	if r := e.do("GET", "/v1.0/identityProtection/riskyUsers/u1", nil); r.status != 200 || r.json["riskState"] != RiskStateAtRisk || r.json["riskLevel"] != RiskLevelHigh {
		t.Fatalf("get u1: %d %s", r.status, r.raw)
	}
	if r := e.do("GET", "/v1.0/identityProtection/riskyUsers/nobody", nil); r.status != 404 {
		t.Fatalf("get unknown: %d", r.status)
	}
	// A bad filter is Graph's 400.
	if r := e.do("GET", "/v1.0/identityProtection/riskyUsers?$filter="+url.QueryEscape("riskLastUpdatedDateTime ge yesterday"), nil); r.status != 400 {
		t.Fatalf("bad filter: %d %s", r.status, r.raw)
	}
}

func TestRiskDetectionsFilter(t *testing.T) {
	e := riskEnv(t)
	before := time.Now().UTC().Add(-time.Second).Format(time.RFC3339)
	if _, err := e.srv.RaiseRisk("alice@example.test", "leakedCredentials", RiskLevelHigh); err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.RaiseRisk("u2", "anonymizedIPAddress", RiskLevelLow); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		filter string
		want   []string // user IDs
	}{
		{"", []string{"u1", "u2"}},
		{"riskEventType eq 'leakedCredentials'", []string{"u1"}},
		{"detectedDateTime ge " + before + " and riskEventType eq 'anonymizedIPAddress'", []string{"u2"}},
		{"detectedDateTime ge 2999-01-01T00:00:00Z", nil},
	}
	for _, tc := range tests {
		t.Run(tc.filter, func(t *testing.T) {
			p := "/v1.0/identityProtection/riskDetections"
			if tc.filter != "" {
				p += "?$filter=" + url.QueryEscape(tc.filter)
			}
			r := e.do("GET", p, nil)
			if r.status != 200 {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			var got []string
			for _, d := range values(r) {
				got = append(got, d["userId"].(string))
				if d["detectedDateTime"] == nil || d["id"] == nil || d["riskEventType"] == nil {
					t.Errorf("detection shape: %v", d)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRiskDismissConfirmAndLicence(t *testing.T) {
	e := riskEnv(t)
	if _, err := e.srv.RaiseRisk("u1", "leakedCredentials", RiskLevelMedium); err != nil {
		t.Fatal(err)
	}
	if r := e.do("POST", "/v1.0/identityProtection/riskyUsers/dismiss", map[string]any{"userIds": []string{"u1"}}); r.status != http.StatusNoContent {
		t.Fatalf("dismiss: %d %s", r.status, r.raw)
	}
	ru, _ := e.srv.RiskyUser("u1")
	if ru.RiskState != RiskStateDismissed || ru.RiskLevel != RiskLevelNone || ru.RiskDetail != RiskDetailAdminDismissedAllRiskForUser {
		t.Fatalf("after dismiss: %+v", ru)
	}
	if r := e.do("POST", "/v1.0/identityProtection/riskyUsers/confirmCompromised", map[string]any{"userIds": []string{"u2"}}); r.status != http.StatusNoContent {
		t.Fatalf("confirmCompromised: %d %s", r.status, r.raw)
	}
	if ru, _ := e.srv.RiskyUser("u2"); ru.RiskState != RiskStateConfirmedCompromised || ru.RiskLevel != RiskLevelHigh {
		t.Fatalf("after confirmCompromised: %+v", ru)
	}
	if r := e.do("POST", "/v1.0/identityProtection/riskyUsers/dismiss", map[string]any{"userIds": []string{}}); r.status != 400 {
		t.Fatalf("empty userIds: %d", r.status)
	}
	// Without the write role: 403.
	ro := newEnv(t, Options{Roles: []string{"IdentityRiskyUser.Read.All"}})
	if r := ro.do("POST", "/v1.0/identityProtection/riskyUsers/dismiss", map[string]any{"userIds": []string{"u1"}}); r.status != 403 {
		t.Fatalf("dismiss without ReadWrite: %d", r.status)
	}
	// Without Entra ID P2: 403 on every call.
	e.srv.SetRiskLicensed(false)
	r := e.do("GET", "/v1.0/identityProtection/riskyUsers", nil)
	if r.status != http.StatusForbidden || !strings.Contains(r.errorMessage(), "P2") {
		t.Fatalf("unlicensed: %d %s", r.status, r.raw)
	}
}

// TestRiskActionsTakeAtMost60IDs: dismiss and confirmCompromised take at
// most 60 userIds a call (docs/graph-fidelity.md); 61 is a 400 that
// changes nobody.
func TestRiskActionsTakeAtMost60IDs(t *testing.T) {
	e := riskEnv(t)
	ids := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = "u1" // a repeated ID counts as given
		}
		return out
	}
	tests := []struct {
		action string
		n      int
		want   int
	}{
		{"confirmCompromised", 61, http.StatusBadRequest},
		{"dismiss", 61, http.StatusBadRequest},
		{"confirmCompromised", 60, http.StatusNoContent},
		{"dismiss", 60, http.StatusNoContent},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s %d", tc.action, tc.n), func(t *testing.T) {
			before, _ := e.srv.RiskyUser("u1")
			r := e.do("POST", "/v1.0/identityProtection/riskyUsers/"+tc.action, map[string]any{"userIds": ids(tc.n)})
			if r.status != tc.want {
				t.Fatalf("%d %s, want %d", r.status, r.raw, tc.want)
			}
			after, _ := e.srv.RiskyUser("u1")
			if changed := after != before; changed != (tc.want == http.StatusNoContent) {
				t.Fatalf("u1 before %+v, after %+v", before, after)
			}
		})
	}
}
