package msgraph

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/graph"
)

func TestConfigValidation(t *testing.T) {
	ok := Config{TenantID: "t", ClientID: "c", ClientSecret: "s"}
	cases := []struct {
		name   string
		mutate func(*Config)
		want   string // substring of the error; "" = no error
	}{
		{"ok", func(*Config) {}, ""},
		{"tenant", func(c *Config) { c.TenantID = "" }, "graph.tenant_id is required"},
		{"client", func(c *Config) { c.ClientID = "" }, "graph.client_id is required"},
		{"no credential", func(c *Config) { c.ClientSecret = "" }, "graph.client_secret"},
		{"both credentials", func(c *Config) { c.CertificateFile = "x.pem" }, "not both"},
		{"http graph", func(c *Config) { c.GraphBaseURL = "http://graph.example/v1.0" }, "graph.base_url"},
		{"http authority", func(c *Config) { c.AuthorityHost = "http://login.example/" }, "graph.authority_host"},
		{"missing ca file", func(c *Config) { c.CAFile = "/nonexistent/ca.pem" }, "graph.ca_file"},
		{"missing cert file", func(c *Config) { c.ClientSecret, c.CertificateFile = "", "/nonexistent/c.pem" }, "graph.certificate_file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.mutate(&cfg)
			_, err := New(cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			case err != nil && strings.Contains(err.Error(), "s3cret"):
				t.Fatalf("error leaks the secret: %v", err)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"":      0,
		"10":    10 * time.Second,
		"2.128": 2128 * time.Millisecond,
		"-1":    0,
		"soon":  0,
	} {
		if got := retryAfter(in); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", in, got, want)
		}
	}
	date := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	if got := retryAfter(date); got < 80*time.Second || got > 90*time.Second {
		t.Errorf("retryAfter(date +90s) = %v", got)
	}
}

func TestJWTRoles(t *testing.T) {
	payload, _ := json.Marshal(map[string]any{"roles": []string{"User.ReadWrite.All"}, "aud": "x"})
	tok := "e30." + base64.RawURLEncoding.EncodeToString(payload) + ".sig"
	roles, err := jwtRoles(tok)
	if err != nil || len(roles) != 1 || roles[0] != "User.ReadWrite.All" {
		t.Fatalf("jwtRoles = %v, %v", roles, err)
	}
	if _, err := jwtRoles("opaque-token"); err == nil {
		t.Fatal("want error for a non-JWT")
	}
}

func TestEncodeBatch(t *testing.T) {
	if b, err := encodeBatch(nil); b != nil || err != nil {
		t.Fatalf("empty batch: %s, %v", b, err)
	}
	many := make([]BatchRequest, MaxBatch+1)
	for i := range many {
		many[i] = BatchRequest{ID: string(rune('a' + i)), Method: "GET", URL: "/users/x"}
	}
	if _, err := encodeBatch(many); err == nil {
		t.Fatal("21 requests accepted")
	}
	if _, err := encodeBatch([]BatchRequest{{ID: "1", Method: "GET", URL: "/a"}, {ID: "1", Method: "GET", URL: "/b"}}); err == nil {
		t.Fatal("duplicate IDs accepted")
	}
	if _, err := encodeBatch([]BatchRequest{{ID: "1", Method: "GET", URL: "https://graph.microsoft.com/v1.0/users"}}); err == nil {
		t.Fatal("absolute URL accepted")
	}
	b, err := encodeBatch([]BatchRequest{
		{ID: "1", Method: "get", URL: "/users/a"},
		{ID: "2", Method: "PATCH", URL: "/users/b", Body: map[string]any{"passwordPolicies": "None"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// GET items carry neither body nor headers; bodies come with Content-Type.
	want := `{"requests":[{"id":"1","method":"GET","url":"/users/a"},` +
		`{"id":"2","method":"PATCH","url":"/users/b","headers":{"Content-Type":"application/json"},"body":{"passwordPolicies":"None"}}]}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
}

func TestDecodeBatch(t *testing.T) {
	reqs := []BatchRequest{{ID: "a", Method: "PATCH", URL: "/users/1"}, {ID: "b", Method: "PATCH", URL: "/users/2"}, {ID: "c", Method: "GET", URL: "/users/3"}}
	body := `{"responses":[
	  {"id":"b","status":429,"headers":{"retry-after":"5","Content-Type":"application/json"},
	   "body":{"error":{"code":"TooManyRequests","message":"slow down"}}},
	  {"id":"a","status":204,"body":null}]}`
	got, err := decodeBatch(reqs, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if got[0].ID != "a" || got[0].Status != 204 || got[0].Err != nil {
		t.Errorf("item a: %+v", got[0])
	}
	if b := got[1]; b.Status != 429 || b.RetryAfter != 5*time.Second || b.Err == nil ||
		b.Err.Code != "TooManyRequests" || b.Err.RetryAfter != 5*time.Second || !b.Err.Retryable() {
		t.Errorf("item b: %+v %+v", b, b.Err)
	}
	if c := got[2]; c.Status != 0 || c.Err == nil || !c.Err.Retryable() {
		t.Errorf("item c (missing from the answer): %+v", c)
	}
	var _ *graph.Error = got[1].Err
}
