package graphsim

import "testing"

func TestDomains(t *testing.T) {
	e := newEnv(t, Options{Roles: []string{"Domain.ReadWrite.All"}})
	e.srv.PutDomain(Domain{ID: "contoso.com", IsVerified: true, PasswordValidityPeriodInDays: 90, PasswordNotificationWindowInDays: 14})
	e.srv.PutDomain(Domain{ID: "fed.contoso.com", IsVerified: true, AuthenticationType: "Federated"})
	e.srv.PutDomain(Domain{ID: "new.contoso.com"})

	r := e.do("GET", "/v1.0/domains", nil)
	wantStatus(t, r, 200)
	if v := r.json["value"].([]any); len(v) != 4 {
		t.Fatalf("domains %s", r.raw)
	}
	r = e.do("GET", "/v1.0/domains/CONTOSO.com", nil)
	if r.json["passwordValidityPeriodInDays"] != float64(90) || r.json["authenticationType"] != "Managed" {
		t.Fatalf("domain %s", r.raw)
	}
	tests := []struct {
		name, domain string
		body         map[string]any
		want         int
	}{
		{"set validity and window", "contoso.com", map[string]any{"passwordValidityPeriodInDays": 60, "passwordNotificationWindowInDays": 7}, 204},
		{"never expires", "graphsim.onmicrosoft.com", map[string]any{"passwordValidityPeriodInDays": 2147483647}, 204},
		{"validity out of range", "contoso.com", map[string]any{"passwordValidityPeriodInDays": 5}, 400},
		{"window out of range", "contoso.com", map[string]any{"passwordNotificationWindowInDays": 31}, 400},
		{"other property", "contoso.com", map[string]any{"isDefault": true}, 400},
		{"federated domain", "fed.contoso.com", map[string]any{"passwordValidityPeriodInDays": 60}, 400},
		{"unverified domain", "new.contoso.com", map[string]any{"passwordValidityPeriodInDays": 60}, 400},
		{"unknown domain", "nope.com", map[string]any{"passwordValidityPeriodInDays": 60}, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantStatus(t, e.do("PATCH", "/v1.0/domains/"+tt.domain, tt.body), tt.want)
		})
	}
	if d, _ := e.srv.Domain("contoso.com"); d.PasswordValidityPeriodInDays != 60 || d.PasswordNotificationWindowInDays != 7 {
		t.Fatalf("domain after PATCH %+v", d)
	}
	if st := e.srv.Stats(); st.Writes != 8 {
		t.Fatalf("domain PATCHes are directory writes: %+v", st)
	}
}

// TestDomainUnsetValidity: a domain whose expiry settings were never set
// answers null (pwsync then counts Graph's default 90 days); a PATCH sets it.
func TestDomainUnsetValidity(t *testing.T) {
	e := newEnv(t, Options{Roles: []string{"Domain.ReadWrite.All"}})
	e.srv.PutDomain(Domain{ID: "old.contoso.com", IsVerified: true, ValidityUnset: true, WindowUnset: true})
	r := e.do("GET", "/v1.0/domains/old.contoso.com", nil)
	wantStatus(t, r, 200)
	for _, k := range []string{"passwordValidityPeriodInDays", "passwordNotificationWindowInDays"} {
		if v, ok := r.json[k]; !ok || v != nil {
			t.Errorf("%s = %v (present %v), want null", k, v, ok)
		}
	}
	wantStatus(t, e.do("PATCH", "/v1.0/domains/old.contoso.com", map[string]any{"passwordValidityPeriodInDays": 42}), 204)
	r = e.do("GET", "/v1.0/domains/old.contoso.com", nil)
	if r.json["passwordValidityPeriodInDays"] != float64(42) || r.json["passwordNotificationWindowInDays"] != nil {
		t.Fatalf("after PATCH %s", r.raw)
	}
}

func TestOnPremisesSynchronization(t *testing.T) {
	t.Run("needs its own permission", func(t *testing.T) {
		e := newEnv(t, Options{}) // the default roles do not include it
		wantError(t, e.do("GET", "/v1.0/directory/onPremisesSynchronization", nil), 403, codeAuthDenied)
	})
	e := newEnv(t, Options{Roles: []string{"OnPremDirectorySynchronization.ReadWrite.All"}})
	tenant := e.srv.TenantID()
	if err := e.srv.SetSyncFeature("userForcePasswordChangeOnLogonEnabled", true); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.SetSyncFeature("noSuchFeature", true); err == nil {
		t.Fatal("SetSyncFeature accepted an unknown feature")
	}
	r := e.do("GET", "/v1.0/directory/onPremisesSynchronization", nil)
	wantStatus(t, r, 200)
	obj := r.json["value"].([]any)[0].(map[string]any)
	f := obj["features"].(map[string]any)
	if obj["id"] != tenant || f["passwordSyncEnabled"] != true || f["userForcePasswordChangeOnLogonEnabled"] != true ||
		f["cloudPasswordPolicyForPasswordSyncedUsersEnabled"] != false {
		t.Fatalf("sync object %s", r.raw)
	}
	path := "/v1.0/directory/onPremisesSynchronization/" + tenant
	wantStatus(t, e.do("PATCH", path, map[string]any{"features": map[string]any{"cloudPasswordPolicyForPasswordSyncedUsersEnabled": true}}), 204)
	if !e.srv.SyncFeatures()["cloudPasswordPolicyForPasswordSyncedUsersEnabled"] {
		t.Fatal("PATCH did not set the feature")
	}
	wantStatus(t, e.do("PATCH", path, map[string]any{"features": map[string]any{"bogus": true}}), 400)
	wantStatus(t, e.do("GET", "/v1.0/directory/onPremisesSynchronization/ffffffff-0000-0000-0000-000000000000", nil), 404)
}
