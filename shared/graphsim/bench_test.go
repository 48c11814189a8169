package graphsim

import (
	"fmt"
	"net/url"
	"testing"
)

// BenchmarkFindByImmutableID is the identity-join lookup in a 10,000-user
// tenant, through HTTPS like a client.
func BenchmarkFindByImmutableID(b *testing.B) {
	srv, err := Start(Options{ClientSecret: testSecret})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	for i := range 10000 {
		srv.PutUser(User{UserPrincipalName: fmt.Sprintf("u%d@contoso.com", i), OnPremisesImmutableId: fmt.Sprintf("imm-%d", i), OnPremisesSyncEnabled: true})
	}
	e := &env{t: &testing.T{}, srv: srv, hc: srv.HTTPClient()}
	e.token = e.fetchToken(testSecret)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		r := e.do("GET", "/v1.0/users?$select=id&$filter="+url.QueryEscape(fmt.Sprintf("onPremisesImmutableId eq 'imm-%d'", i%10000)), nil)
		if r.status != 200 || len(r.json["value"].([]any)) != 1 {
			b.Fatalf("%d %s", r.status, r.raw)
		}
	}
}

// BenchmarkPatch is one passwordProfile PATCH through HTTPS.
func BenchmarkPatch(b *testing.B) {
	srv, err := Start(Options{ClientSecret: testSecret, WriteBudget: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	srv.PutUser(User{ID: "u1", UserPrincipalName: "u1@contoso.com"})
	e := &env{t: &testing.T{}, srv: srv, hc: srv.HTTPClient()}
	e.token = e.fetchToken(testSecret)
	body := []byte(`{"passwordProfile":{"forceChangePasswordNextSignIn":true}}`)
	for b.Loop() {
		if r := e.do("PATCH", "/v1.0/users/u1", body); r.status != 204 {
			b.Fatalf("%d %s", r.status, r.raw)
		}
	}
}
