package adminapi_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/adminapi"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/adminapitest"
	"github.com/pwsync/pwsync/testrig/natstest"
)

func routes(s *adminapi.Server) {
	ok := func(w http.ResponseWriter, r *http.Request) {
		p, _ := adminapi.PrincipalFrom(r.Context())
		adminapi.WriteJSON(w, http.StatusOK, map[string]string{"principal": p.Name})
	}
	s.HandleFunc("GET /api/v1/things", adminapi.RoleViewer, ok)
	s.HandleFunc("POST /api/v1/things", adminapi.RoleOperator, func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Name string `json:"name"`
		}
		if err := adminapi.DecodeJSON(r, &in); err != nil {
			adminapi.DecodeError(w, err)
			return
		}
		ok(w, r)
	})
	s.HandleFunc("POST /api/v1/things/{id}/approve", adminapi.RoleApprover, ok)
}

func TestAuthAndRoles(t *testing.T) {
	_, conn := natstest.Run(t)
	viewer, vt := adminapitest.NewToken(t, "vera", adminapi.RoleViewer)
	operator, ot := adminapitest.NewToken(t, "otto", adminapi.RoleOperator)
	approver, at := adminapitest.NewToken(t, "anna", adminapi.RoleApprover)
	expired, et := adminapitest.NewToken(t, "old", adminapi.RoleOperator)
	et.ExpiresAt = time.Now().Add(-time.Minute)
	future, ft := adminapitest.NewToken(t, "later", adminapi.RoleOperator)
	ft.ExpiresAt = time.Now().Add(time.Hour)
	env := adminapitest.Start(t, conn, routes, vt, ot, at, et, ft)
	wrong, _, _ := adminapi.NewToken()
	allTokens := []string{viewer, operator, approver, expired, future, wrong}

	pool := tlsClient(t, env.CAFile)
	body := `{"name":"x"}`
	cases := []struct {
		name, method, path, auth, body string
		status                         int
		principal, wantErr             string
	}{
		{"missing token", "GET", "/api/v1/things", "", "", 401, "", "missing bearer token"},
		{"basic scheme", "GET", "/api/v1/things", "Basic dXNlcjpwdw==", "", 401, "", "malformed"},
		{"bearer without token", "GET", "/api/v1/things", "Bearer ", "", 401, "", "malformed"},
		{"token with space", "GET", "/api/v1/things", "Bearer " + viewer + " x", "", 401, "", "malformed"},
		{"wrong token", "GET", "/api/v1/things", "Bearer " + wrong, "", 401, "", "invalid token"},
		{"hash as token", "GET", "/api/v1/things", "Bearer " + vt.SHA256, "", 401, "", "invalid token"},
		{"expired token", "GET", "/api/v1/things", "Bearer " + expired, "", 401, "old", "token expired"},
		{"unknown path without token", "GET", "/api/v1/nothing", "", "", 401, "", "missing bearer token"},
		{"unknown path with token", "GET", "/api/v1/nothing", "Bearer " + viewer, "", 404, "vera", "not found"},
		{"viewer reads", "GET", "/api/v1/things", "Bearer " + viewer, "", 200, "vera", ""},
		{"lower-case scheme", "GET", "/api/v1/things", "bearer " + viewer, "", 200, "vera", ""},
		{"approver implies viewer", "GET", "/api/v1/things", "Bearer " + approver, "", 200, "anna", ""},
		{"viewer cannot write", "POST", "/api/v1/things", "Bearer " + viewer, body, 403, "vera", "operator role required"},
		{"operator writes", "POST", "/api/v1/things", "Bearer " + operator, body, 200, "otto", ""},
		{"token not yet expired", "POST", "/api/v1/things", "Bearer " + future, body, 200, "later", ""},
		{"operator cannot approve", "POST", "/api/v1/things/1/approve", "Bearer " + operator, "", 403, "otto", "approver role required"},
		{"approver approves", "POST", "/api/v1/things/1/approve", "Bearer " + approver, "", 200, "anna", ""},
		{"unknown JSON field", "POST", "/api/v1/things", "Bearer " + operator, `{"nam":"x"}`, 400, "otto", "unknown field"},
		{"body too large", "POST", "/api/v1/things", "Bearer " + operator, `{"name":"` + strings.Repeat("a", 2<<20) + `"}`, 413, "otto", "too large"},
		{"wrong method", "DELETE", "/api/v1/things", "Bearer " + operator, "", 405, "otto", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, env.URL+c.path, strings.NewReader(c.body))
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			resp, err := pool.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, b)
			}
			if c.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			var got map[string]string
			if c.status != 405 {
				if err := json.Unmarshal(b, &got); err != nil {
					t.Fatalf("answer is not JSON: %q", b)
				}
			}
			if c.wantErr != "" && !strings.Contains(got["error"], c.wantErr) {
				t.Errorf("error %q, want it to contain %q", got["error"], c.wantErr)
			}
			if c.status == 200 && got["principal"] != c.principal {
				t.Errorf("principal %q, want %q", got["principal"], c.principal)
			}
		})
	}

	// Every request is audited, with who, what and the answer; never a token.
	recs, raw := readAdminAudit(t, conn, len(cases))
	for i, c := range cases {
		a := recs[i].Admin
		if a == nil {
			t.Fatalf("record %d has no admin part: %+v", i, recs[i])
		}
		if a.Method != c.method || a.Path != c.path || a.Status != c.status || a.Principal != c.principal && c.status != 401 {
			t.Errorf("%s: audit %+v, want %s %s %d by %q", c.name, a, c.method, c.path, c.status, c.principal)
		}
		wantOutcome := map[int]string{200: "ok", 401: "denied", 403: "denied"}[c.status]
		if wantOutcome != "" && recs[i].Outcome != wantOutcome {
			t.Errorf("%s: outcome %q, want %q", c.name, recs[i].Outcome, wantOutcome)
		}
	}
	for _, tok := range allTokens {
		if bytes.Contains(raw, []byte(tok)) {
			t.Fatal("a token reached the audit stream")
		}
	}
}

// readAdminAudit reads exactly n audit.admin records, in order.
func readAdminAudit(t *testing.T, conn *natsx.Conn, n int) ([]events.AuditRecord, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := conn.JS.OrderedConsumer(ctx, natsx.StreamAudit, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"audit.admin"}})
	if err != nil {
		t.Fatal(err)
	}
	var recs []events.AuditRecord
	var raw []byte
	for len(recs) < n {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("after %d of %d audit records: %v", len(recs), n, err)
		}
		var r events.AuditRecord
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			t.Fatal(err)
		}
		recs, raw = append(recs, r), append(raw, m.Data()...)
	}
	if m, err := cons.Next(jetstream.FetchMaxWait(300 * time.Millisecond)); err == nil {
		t.Fatalf("more audit records than requests: %s", m.Data())
	}
	return recs, raw
}

func tlsClient(t *testing.T, caFile string) *http.Client {
	t.Helper()
	c, err := adminapi.NewClient("https://127.0.0.1:1", "x", caFile)
	if err != nil {
		t.Fatal(err)
	}
	return adminapi.HTTPClient(c)
}

func TestTLS(t *testing.T) {
	_, conn := natstest.Run(t)
	tok, cfg := adminapitest.NewToken(t, "vera", adminapi.RoleViewer)
	env := adminapitest.Start(t, conn, routes, cfg)
	ctx := context.Background()

	t.Run("configured CA verifies the server", func(t *testing.T) {
		var out map[string]string
		if err := env.Client(t, tok).Do(ctx, "GET", "/api/v1/things", nil, &out); err != nil || out["principal"] != "vera" {
			t.Fatalf("got %v, %v", out, err)
		}
	})
	t.Run("system roots do not", func(t *testing.T) {
		c, err := adminapi.NewClient(env.URL, tok, "")
		if err != nil {
			t.Fatal(err)
		}
		err = c.Do(ctx, "GET", "/api/v1/things", nil, nil)
		var cve *tls.CertificateVerificationError
		if !errors.As(err, &cve) {
			t.Fatalf("want a certificate error, got %v", err)
		}
	})
	t.Run("plain HTTP is refused", func(t *testing.T) {
		req, _ := http.NewRequest("GET", strings.Replace(env.URL, "https://", "http://", 1)+"/api/v1/things", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || strings.Contains(string(b), "vera") {
				t.Fatalf("plain HTTP got %d %s", resp.StatusCode, b)
			}
		}
	})
	t.Run("TLS 1.1 is refused", func(t *testing.T) {
		c, err := tls.Dial("tcp", env.Server.Addr(), &tls.Config{MaxVersion: tls.VersionTLS11, InsecureSkipVerify: true})
		if err == nil {
			c.Close()
			t.Fatal("TLS 1.1 handshake succeeded")
		}
	})
}

func TestNewRefusesUnsafeListeners(t *testing.T) {
	_, tc := adminapitest.NewToken(t, "v", adminapi.RoleViewer)
	_, cert, key := adminapitest.TLSFiles(t)
	deps := adminapi.Deps{Audit: nopAudit{}, Log: zerolog.Nop()}
	cases := []struct {
		name    string
		cfg     adminapi.Config
		wantErr string
	}{
		{"no TLS, no allow_plain", adminapi.Config{Listen: "127.0.0.1:0", Tokens: []adminapi.Token{tc}}, "TLS is required"},
		{"plain on all interfaces", adminapi.Config{Listen: ":8444", AllowPlain: true, Tokens: []adminapi.Token{tc}}, "loopback"},
		{"plain on a LAN address", adminapi.Config{Listen: "10.0.0.5:8444", AllowPlain: true, Tokens: []adminapi.Token{tc}}, "loopback"},
		{"plain on loopback", adminapi.Config{Listen: "127.0.0.1:0", AllowPlain: true, Tokens: []adminapi.Token{tc}}, ""},
		{"plain on localhost", adminapi.Config{Listen: "localhost:0", AllowPlain: true, Tokens: []adminapi.Token{tc}}, ""},
		{"TLS", adminapi.Config{Listen: ":0", TLSCert: cert, TLSKey: key, Tokens: []adminapi.Token{tc}}, ""},
		{"key missing", adminapi.Config{Listen: ":0", TLSCert: cert, Tokens: []adminapi.Token{tc}}, "tls_cert/tls_key"},
		{"no tokens", adminapi.Config{Listen: ":0", TLSCert: cert, TLSKey: key}, "at least one token"},
		{"bad hash", adminapi.Config{Listen: ":0", TLSCert: cert, TLSKey: key,
			Tokens: []adminapi.Token{{Name: "x", SHA256: "abc", Roles: []adminapi.Role{adminapi.RoleViewer}}}}, "64 hex"},
		{"duplicate name", adminapi.Config{Listen: ":0", TLSCert: cert, TLSKey: key, Tokens: []adminapi.Token{tc, tc}}, "unique"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := adminapi.New(c.cfg, deps)
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Fatalf("error %v, want %q", err, c.wantErr)
			}
		})
	}
}

type nopAudit struct{}

func (nopAudit) Write(context.Context, events.AuditRecord) error { return nil }
