package adminapi

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestAuthenticate(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tok, hash, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	old, oldHash, _ := NewToken()
	ts, err := newTokenSet([]Token{
		{Name: "ops", SHA256: hash, Roles: []Role{RoleOperator}},
		{Name: "old", SHA256: oldHash, Roles: []Role{RoleViewer}, ExpiresAt: now},
	})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		header string
		want   string
		err    error
	}{
		{"", "", errNoToken},
		{"Bearer", "", errMalformed},
		{"Bearer  ", "", errMalformed},
		{"Token " + tok, "", errMalformed},
		{"Bearer " + tok + "x", "", errUnknownToken},
		{"Bearer " + strings.ToUpper(tok), "", errUnknownToken},
		{"Bearer " + hash, "", errUnknownToken},
		{"Bearer " + old, "old", errExpiredToken}, // expires_at is exclusive
		{"Bearer " + tok, "ops", nil},
		{"BEARER " + tok, "ops", nil},
	}
	for _, c := range cases {
		p, err := ts.authenticate(c.header, now)
		if !errors.Is(err, c.err) || p.Name != c.want {
			t.Errorf("%.20q: got %q, %v; want %q, %v", c.header, p.Name, err, c.want, c.err)
		}
		if err != nil && len(p.Roles) != 0 {
			t.Errorf("%.20q: a failed authentication carries roles %v", c.header, p.Roles)
		}
	}
}

func TestNewTokenIsRandomAndHashed(t *testing.T) {
	a, ha, _ := NewToken()
	b, hb, _ := NewToken()
	if a == b || ha == hb || !strings.HasPrefix(a, TokenPrefix) || len(a) != len(TokenPrefix)+43 || HashToken(a) != ha || len(ha) != 64 {
		t.Fatalf("tokens %q %q hashes %q %q", a, b, ha, hb)
	}
}

func TestPrincipalHas(t *testing.T) {
	cases := []struct {
		roles []Role
		need  Role
		want  bool
	}{
		{nil, RoleViewer, false},
		{[]Role{RoleViewer}, RoleViewer, true},
		{[]Role{RoleViewer}, RoleOperator, false},
		{[]Role{RoleOperator}, RoleViewer, true},
		{[]Role{RoleApprover}, RoleViewer, true},
		{[]Role{RoleApprover}, RoleOperator, false},
		{[]Role{RoleOperator}, RoleApprover, false},
		{[]Role{RoleOperator, RoleApprover}, RoleApprover, true},
	}
	for _, c := range cases {
		if got := (Principal{Roles: c.roles}).Has(c.need); got != c.want {
			t.Errorf("%v has %s = %v, want %v", c.roles, c.need, got, c.want)
		}
	}
}

func TestParseRoles(t *testing.T) {
	if r, err := ParseRoles("operator, approver,operator"); err != nil || len(r) != 2 {
		t.Fatalf("got %v %v", r, err)
	}
	for _, bad := range []string{"", ",", "admin", "viewer,root"} {
		if _, err := ParseRoles(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzAuthenticate: whatever the header, no panic, and only the exact token
// authenticates.
func FuzzAuthenticate(f *testing.F) {
	tok, hash, _ := NewToken()
	ts, _ := newTokenSet([]Token{{Name: "ops", SHA256: hash, Roles: []Role{RoleOperator}}})
	f.Add("Bearer " + tok)
	f.Add("Bearer x")
	f.Add("bearer\t" + tok)
	f.Add("")
	f.Fuzz(func(t *testing.T, h string) {
		p, err := ts.authenticate(h, time.Now())
		if err == nil {
			_, got, _ := strings.Cut(h, " ")
			if strings.TrimSpace(got) != tok || p.Name != "ops" {
				t.Fatalf("%q authenticated as %q", h, p.Name)
			}
		}
	})
}
