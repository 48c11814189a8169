package graphsim

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestTokenEndpoint(t *testing.T) {
	e := newEnv(t, Options{})
	id := e.srv.ClientID()
	tests := []struct {
		name       string
		form       url.Values
		wantStatus int
		wantError  string // OAuth error; "" for success
		wantCode   float64
	}{
		{"secret with MSAL's extra scopes", secretForm(id, testSecret), 200, "", 0},
		{"secret with Graph's app ID as resource", func() url.Values {
			f := secretForm(id, testSecret)
			f.Set("scope", "00000003-0000-0000-c000-000000000000/.default")
			return f
		}(), 200, "", 0},
		{"wrong secret", secretForm(id, "nope"), 401, "invalid_client", 7000215},
		{"unknown client", secretForm("99999999-9999-9999-9999-999999999999", testSecret), 400, "unauthorized_client", 700016},
		{"no credential", func() url.Values { f := secretForm(id, ""); f.Del("client_secret"); return f }(), 401, "invalid_client", 7000218},
		{"no scope", func() url.Values { f := secretForm(id, testSecret); f.Del("scope"); return f }(), 400, "invalid_request", 900144},
		{"delegated-style scope", func() url.Values {
			f := secretForm(id, testSecret)
			f.Set("scope", "User.Read")
			return f
		}(), 400, "invalid_scope", 1002012},
		{"other resource", func() url.Values {
			f := secretForm(id, testSecret)
			f.Set("scope", "https://management.azure.com/.default")
			return f
		}(), 400, "invalid_resource", 500011},
		{"password grant", func() url.Values {
			f := secretForm(id, testSecret)
			f.Set("grant_type", "password")
			return f
		}(), 400, "unsupported_grant_type", 70003},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, out := e.tokenForm(tt.form)
			if status != tt.wantStatus {
				t.Fatalf("status %d, want %d: %v", status, tt.wantStatus, out)
			}
			if tt.wantError == "" {
				if out["token_type"] != "Bearer" || out["access_token"] == "" {
					t.Fatalf("not a bearer token: %v", out)
				}
				if out["expires_in"].(float64) != 3600 || out["ext_expires_in"].(float64) != 3600 {
					t.Fatalf("expires_in/ext_expires_in: %v", out)
				}
				return
			}
			if out["error"] != tt.wantError {
				t.Fatalf("error %v, want %s: %v", out["error"], tt.wantError, out)
			}
			codes, _ := out["error_codes"].([]any)
			if len(codes) != 1 || codes[0].(float64) != tt.wantCode {
				t.Fatalf("error_codes %v, want [%v]", out["error_codes"], tt.wantCode)
			}
			if !strings.HasPrefix(out["error_description"].(string), "AADSTS") {
				t.Fatalf("error_description not AADSTS style: %v", out["error_description"])
			}
		})
	}
}

func TestTokenBasicAuthAndTenant(t *testing.T) {
	e := newEnv(t, Options{})
	form := secretForm("", "")
	form.Del("client_id")
	form.Del("client_secret")
	req, _ := http.NewRequest("POST", e.srv.AuthorityHost()+e.srv.TenantID()+"/oauth2/v2.0/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(e.srv.ClientID(), testSecret)
	r, err := e.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 200 {
		t.Fatalf("client_secret_basic: status %d", r.StatusCode)
	}

	for _, tenant := range []string{"common", "ffffffff-0000-0000-0000-000000000000"} {
		r, err := e.hc.PostForm(e.srv.AuthorityHost()+tenant+"/oauth2/v2.0/token", secretForm(e.srv.ClientID(), testSecret))
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != 400 {
			t.Errorf("tenant %s: status %d, want 400", tenant, r.StatusCode)
		}
	}
}

func TestTokenRefusedWithoutConfiguredSecret(t *testing.T) {
	srv, err := Start(Options{}) // no ClientSecret: any secret is refused
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, secret := range []string{"", "anything"} {
		f := secretForm(srv.ClientID(), secret)
		r, err := srv.HTTPClient().PostForm(srv.AuthorityHost()+srv.TenantID()+"/oauth2/v2.0/token", f)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != 401 {
			t.Errorf("secret %q: status %d, want 401", secret, r.StatusCode)
		}
	}
}

func TestAccessTokenClaims(t *testing.T) {
	e := newEnv(t, Options{Roles: []string{"User.Read.All"}, TokenLifetime: 90 * time.Second})
	c, err := verifyHS256(e.srv.tokenKey, e.token)
	if err != nil {
		t.Fatal(err)
	}
	if c.Aud != graphResource || c.Tid != e.srv.TenantID() || c.AppID != e.srv.ClientID() || c.IDType != "app" || c.AppIDACR != "1" {
		t.Fatalf("claims: %+v", c)
	}
	if !slices.Equal(c.Roles, []string{"User.Read.All"}) {
		t.Fatalf("roles %v", c.Roles)
	}
	if d := c.Exp - c.Iat; d != 90 {
		t.Fatalf("lifetime %ds, want 90", d)
	}
}

func TestDiscovery(t *testing.T) {
	e := newEnv(t, Options{})
	get := func(path string) (int, map[string]any) {
		r, err := e.hc.Get(e.srv.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(r.Body).Decode(&out)
		return r.StatusCode, out
	}
	tenant := e.srv.TenantID()
	status, cfg := get("/" + tenant + "/v2.0/.well-known/openid-configuration")
	if status != 200 {
		t.Fatalf("openid-configuration: %d", status)
	}
	want := map[string]string{
		"token_endpoint":         e.srv.AuthorityHost() + tenant + "/oauth2/v2.0/token",
		"authorization_endpoint": e.srv.AuthorityHost() + tenant + "/oauth2/v2.0/authorize",
		"issuer":                 e.srv.AuthorityHost() + tenant + "/v2.0",
	}
	for k, v := range want {
		if cfg[k] != v {
			t.Errorf("%s = %v, want %s", k, cfg[k], v)
		}
	}
	if status, _ := get("/not-a-tenant/v2.0/.well-known/openid-configuration"); status != 400 {
		t.Errorf("unknown tenant: status %d, want 400", status)
	}
	status, inst := get("/common/discovery/instance?api-version=1.1&authorization_endpoint=" +
		url.QueryEscape(e.srv.AuthorityHost()+tenant+"/oauth2/v2.0/authorize"))
	if status != 200 || inst["tenant_discovery_endpoint"] != e.srv.AuthorityHost()+tenant+"/v2.0/.well-known/openid-configuration" {
		t.Errorf("instance discovery: %d %v", status, inst)
	}
}

func TestGraphRequiresValidToken(t *testing.T) {
	e := newEnv(t, Options{})
	cloud, _ := seedUsers(e.srv)
	forge := func(mut func(*accessClaims)) string {
		c, err := verifyHS256(e.srv.tokenKey, e.token)
		if err != nil {
			t.Fatal(err)
		}
		mut(&c)
		tok, err := signHS256(e.srv.tokenKey, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	otherKey, err := signHS256([]byte("another key"), accessClaims{Aud: graphResource, Tid: e.srv.TenantID(), Exp: time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, token, wantMsg string
	}{
		{"no token", "", "Access token is empty."},
		{"garbage", "not.a.jwt", "IDX14100"},
		{"signed by someone else", otherKey, "IDX14100"},
		{"expired", forge(func(c *accessClaims) { c.Exp = time.Now().Add(-time.Minute).Unix() }), "expired"},
		{"other tenant", forge(func(c *accessClaims) { c.Tid = "ffffffff-0000-0000-0000-000000000000" }), "Invalid issuer"},
		{"other audience", forge(func(c *accessClaims) { c.Aud = "https://management.azure.com" }), "Invalid audience"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.doToken(tt.token, "GET", "/v1.0/users/"+cloud.ID, nil)
			wantError(t, r, 401, codeInvalidToken)
			if !strings.Contains(r.errorMessage(), tt.wantMsg) {
				t.Fatalf("message %q, want it to contain %q", r.errorMessage(), tt.wantMsg)
			}
			if r.header.Get("WWW-Authenticate") == "" {
				t.Fatal("no WWW-Authenticate header")
			}
		})
	}
	wantStatus(t, e.do("GET", "/v1.0/users/"+cloud.ID, nil), 200)
}

func TestRolesEnforced(t *testing.T) {
	e := newEnv(t, Options{Roles: []string{"User.Read.All", "User.ReadWrite.All"}})
	cloud, _ := seedUsers(e.srv)
	tests := []struct {
		name, method, path string
		body               any
		want               int
	}{
		{"read", "GET", "/v1.0/users/" + cloud.ID, nil, 200},
		{"patch ordinary property", "PATCH", "/v1.0/users/" + cloud.ID, map[string]any{"displayName": "x"}, 204},
		{"passwordProfile needs User-PasswordProfile.ReadWrite.All", "PATCH", "/v1.0/users/" + cloud.ID,
			map[string]any{"passwordProfile": map[string]any{"forceChangePasswordNextSignIn": true}}, 403},
		{"group members need GroupMember.ReadWrite.All", "POST", "/v1.0/groups/g1/members/$ref",
			map[string]any{"@odata.id": "https://graph.microsoft.com/v1.0/directoryObjects/" + cloud.ID}, 403},
	}
	e.srv.PutGroup("g1", "G1")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(tt.method, tt.path, tt.body)
			wantStatus(t, r, tt.want)
			if tt.want == 403 && r.errorCode() != codeAuthDenied {
				t.Fatalf("code %q", r.errorCode())
			}
		})
	}
	if e.user(cloud.ID).ForceChangePasswordNextSignIn {
		t.Fatal("a refused write changed the user")
	}
}
