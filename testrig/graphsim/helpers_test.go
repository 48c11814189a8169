package graphsim

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

const testSecret = "s3cret-value"

// env is a running simulator with a client and a token.
type env struct {
	t     testing.TB
	srv   *Server
	hc    *http.Client
	token string
}

func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	if opts.ClientSecret == "" {
		opts.ClientSecret = testSecret
	}
	srv, err := Start(opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(srv.Close)
	e := &env{t: t, srv: srv, hc: srv.HTTPClient()}
	e.token = e.fetchToken(testSecret)
	return e
}

func (e *env) tokenForm(form url.Values) (int, map[string]any) {
	e.t.Helper()
	resp, err := e.hc.PostForm(e.srv.AuthorityHost()+e.srv.TenantID()+"/oauth2/v2.0/token", form)
	if err != nil {
		e.t.Fatalf("token request: %v", err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		e.t.Fatalf("decode token response: %v", err)
	}
	return resp.StatusCode, out
}

func secretForm(clientID, secret string) url.Values {
	return url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {clientID},
		"client_secret": {secret},
		"scope":         {"https://graph.microsoft.com/.default openid profile offline_access"},
	}
}

func (e *env) fetchToken(secret string) string {
	e.t.Helper()
	status, out := e.tokenForm(secretForm(e.srv.ClientID(), secret))
	if status != http.StatusOK {
		e.t.Fatalf("token: status %d: %v", status, out)
	}
	return out["access_token"].(string)
}

// resp is an answered request with its decoded JSON body (if any).
type resp struct {
	status int
	header http.Header
	raw    []byte
	json   map[string]any
}

func (r resp) errorCode() string {
	e, _ := r.json["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func (r resp) errorMessage() string {
	e, _ := r.json["error"].(map[string]any)
	m, _ := e["message"].(string)
	return m
}

// do sends a Graph request with the env's token. body may be nil, []byte
// or a value to marshal. path is relative to the server root ("/v1.0/...").
func (e *env) do(method, path string, body any, headers ...string) resp {
	e.t.Helper()
	return e.doToken(e.token, method, path, body, headers...)
}

func (e *env) doToken(token, method, path string, body any, headers ...string) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatalf("marshal: %v", err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.srv.URL()+path, rd)
	if err != nil {
		e.t.Fatalf("new request: %v", err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	r, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer r.Body.Close()
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		e.t.Fatalf("read body: %v", err)
	}
	out := resp{status: r.StatusCode, header: r.Header, raw: raw}
	if len(raw) > 0 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &out.json); err != nil {
			e.t.Fatalf("%s %s: body is not JSON: %v: %s", method, path, err, raw)
		}
	}
	return out
}

func (e *env) user(idOrUPN string) User {
	e.t.Helper()
	u, ok := e.srv.User(idOrUPN)
	if !ok {
		e.t.Fatalf("no user %q", idOrUPN)
	}
	return u
}

func wantStatus(t *testing.T, r resp, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("status %d, want %d; body %s", r.status, want, r.raw)
	}
}

// wantError checks status, error code and the innerError Graph always adds.
func wantError(t *testing.T, r resp, status int, code string) {
	t.Helper()
	wantStatus(t, r, status)
	if got := r.errorCode(); got != code {
		t.Fatalf("error code %q, want %q; body %s", got, code, r.raw)
	}
	e := r.json["error"].(map[string]any)
	inner, ok := e["innerError"].(map[string]any)
	if !ok || inner["request-id"] == "" || inner["date"] == "" || inner["client-request-id"] == "" {
		t.Fatalf("innerError missing or incomplete: %s", r.raw)
	}
}

// seedUsers puts a cloud user and a synced user.
func seedUsers(s *Server) (cloud, synced User) {
	cloud = User{ID: "aaaaaaaa-0000-0000-0000-000000000001", UserPrincipalName: "cloud@contoso.com", DisplayName: "Cloud User",
		Mail: "cloud@contoso.com", AccountEnabled: true, PreferredLanguage: "en-US",
		LastPasswordChangeDateTime: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)}
	synced = User{ID: "bbbbbbbb-0000-0000-0000-000000000002", UserPrincipalName: "synced@contoso.com", DisplayName: "Synced User",
		OnPremisesImmutableId: "q1w2e3r4t5y6u7i8o9p0Aa==", OnPremisesSyncEnabled: true, AccountEnabled: true,
		PasswordPolicies: "DisablePasswordExpiration", Password: "OnPrem-Hash-1"}
	s.PutUser(cloud)
	s.PutUser(synced)
	return cloud, synced
}
