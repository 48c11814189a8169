package graphsim

import (
	"bytes"
	"compress/gzip"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func gzipped(t *testing.T, s string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := io.WriteString(zw, s); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestGzipRequestBody(t *testing.T) {
	// The flag-only PATCH must take effect to show the body was read.
	e := newEnv(t, Options{ForceChangeApplies: true})
	cloud, _ := seedUsers(e.srv)
	const body = `{"passwordProfile":{"forceChangePasswordNextSignIn":true}}`
	e.srv.ResetRequests()
	r := e.do("PATCH", "/v1.0/users/"+cloud.ID, gzipped(t, body), "Content-Encoding", "gzip")
	wantStatus(t, r, 204)
	if !e.user(cloud.ID).ForceChangePasswordNextSignIn {
		t.Fatal("gzip body not applied")
	}
	reqs := e.srv.Requests()
	if len(reqs) != 1 || string(reqs[0].Body) != body {
		t.Fatalf("log %+v: want the decompressed body", reqs)
	}

	tests := []struct {
		name, encoding string
		body           []byte
		want           int
	}{
		{"corrupt gzip", "gzip", []byte("not gzip"), 400},
		{"unsupported encoding", "br", []byte(body), 415}, // kiota retries uncompressed on 415
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantStatus(t, e.do("PATCH", "/v1.0/users/"+cloud.ID, tt.body, "Content-Encoding", tt.encoding), tt.want)
		})
	}
}

func TestRequestLog(t *testing.T) {
	e := newEnv(t, Options{})
	cloud, _ := seedUsers(e.srv)
	e.srv.ResetRequests()
	e.do("GET", "/v1.0/users/"+cloud.ID+"?$select=id", nil, "client-request-id", "abc-123")
	e.do("PATCH", "/v1.0/users/"+cloud.ID, []byte(`{"displayName":"Logged"}`))
	e.doToken("", "GET", "/v1.0/users/"+cloud.ID, nil)
	e.fetchToken(testSecret) // not a Graph request: not logged

	reqs := e.srv.Requests()
	want := []struct {
		method, path, query, body string
		status                    int
	}{
		{"GET", "/v1.0/users/" + cloud.ID, "$select=id", "", 200},
		{"PATCH", "/v1.0/users/" + cloud.ID, "", `{"displayName":"Logged"}`, 204},
		{"GET", "/v1.0/users/" + cloud.ID, "", "", 401},
	}
	if len(reqs) != len(want) {
		t.Fatalf("%d entries, want %d: %+v", len(reqs), len(want), reqs)
	}
	for i, w := range want {
		r := reqs[i]
		if r.Method != w.method || r.Path != w.path || r.Query != w.query || string(r.Body) != w.body || r.Status != w.status || r.BatchID != "" || r.Time.IsZero() {
			t.Errorf("entry %d: %+v, want %+v", i, r, w)
		}
	}
	if reqs[0].Header.Get("client-request-id") != "abc-123" {
		t.Errorf("headers not logged: %v", reqs[0].Header)
	}
	if st := e.srv.Stats(); st.Tokens != 2 || st.ByStatus[401] != 1 {
		t.Errorf("stats %+v", st)
	}
	e.srv.ResetRequests()
	if n := len(e.srv.Requests()); n != 0 {
		t.Fatalf("%d entries after reset", n)
	}
}

func TestClientRequestIDEchoed(t *testing.T) {
	e := newEnv(t, Options{})
	r := e.do("GET", "/v1.0/users/nobody", nil, "client-request-id", "my-id")
	wantError(t, r, 404, codeNotFound)
	inner := r.json["error"].(map[string]any)["innerError"].(map[string]any)
	if r.header.Get("client-request-id") != "my-id" || inner["client-request-id"] != "my-id" || inner["request-id"] != r.header.Get("request-id") {
		t.Fatalf("headers %v innerError %v", r.header, inner)
	}
}

func TestTLS(t *testing.T) {
	e := newEnv(t, Options{})
	// An ordinary client does not trust the simulator.
	if _, err := http.Get(e.srv.URL() + "/v1.0/users"); err == nil {
		t.Fatal("default client trusted the simulator's certificate")
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := e.srv.WriteCAFile(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(b, e.srv.CACertPEM()) || !bytes.HasPrefix(b, []byte("-----BEGIN CERTIFICATE-----")) {
		t.Fatalf("CA file %q: %v", b, err)
	}
	// localhost is in the certificate too.
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(e.srv.URL(), "https://"))
	r, err := e.hc.Get("https://localhost:" + port + "/" + e.srv.TenantID() + "/v2.0/.well-known/openid-configuration")
	if err != nil {
		t.Fatalf("via localhost: %v", err)
	}
	r.Body.Close()
	if e.srv.GraphBaseURL() != e.srv.URL()+"/v1.0" || e.srv.AuthorityHost() != e.srv.URL()+"/" {
		t.Fatalf("URLs %s %s", e.srv.GraphBaseURL(), e.srv.AuthorityHost())
	}
}
