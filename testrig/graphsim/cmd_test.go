package graphsim

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCommand(t *testing.T) {
	dir := t.TempDir()
	seed := filepath.Join(dir, "seed.json")
	if err := os.WriteFile(seed, []byte(`{
	  "users": [
	    {"userPrincipalName": "alice@contoso.com", "onPremisesSyncEnabled": true, "onPremisesImmutableId": "AAAA"},
	    {"id": "dddddddd-0000-0000-0000-000000000004", "userPrincipalName": "bob@contoso.com", "accountEnabled": false}
	  ],
	  "groups": [{"id": "g-pending", "displayName": "Pending", "members": ["alice@contoso.com"]}]
	}`), 0o600); err != nil {
		t.Fatal(err)
	}
	caPath := filepath.Join(dir, "ca.pem")

	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-ca-out", caPath, "-client-secret", "cmd-secret", "-seed", seed,
			"-write-budget", "0", "-force-change-applies", "-batch-in-order"}, pw)
		pw.Close()
	}()
	vals := map[string]string{}
	sc := bufio.NewScanner(pr)
	for vals["ca_file"] == "" && sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			vals[k] = v
		}
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }() // keep the command's output flowing
	if vals["ca_file"] != caPath || !strings.HasSuffix(vals["graph_base_url"], "/v1.0") || vals["tenant_id"] != DefaultTenantID {
		t.Fatalf("printed %v", vals)
	}

	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	form := secretForm(vals["client_id"], "cmd-secret")
	r, err := hc.PostForm(vals["authority_host"]+vals["tenant_id"]+"/oauth2/v2.0/token", form)
	if err != nil {
		t.Fatal(err)
	}
	var tok map[string]any
	_ = json.NewDecoder(r.Body).Decode(&tok)
	r.Body.Close()
	if r.StatusCode != 200 {
		t.Fatalf("token: %d %v", r.StatusCode, tok)
	}
	get := func(path string) map[string]any {
		req, _ := http.NewRequest("GET", vals["graph_base_url"]+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok["access_token"].(string))
		r, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(r.Body).Decode(&out)
		return out
	}
	alice := get("/users?$filter=" + url.QueryEscape("onPremisesImmutableId eq 'AAAA'") + "&$select=id,accountEnabled,onPremisesSyncEnabled")
	v := alice["value"].([]any)
	if len(v) != 1 || v[0].(map[string]any)["accountEnabled"] != true || v[0].(map[string]any)["onPremisesSyncEnabled"] != true {
		t.Fatalf("seeded alice: %v (accountEnabled defaults to true)", alice)
	}
	bob := get("/users/bob@contoso.com?$select=id,accountEnabled")
	if bob["id"] != "dddddddd-0000-0000-0000-000000000004" || bob["accountEnabled"] != false {
		t.Fatalf("seeded bob: %v", bob)
	}
	members := get("/groups/g-pending/members?$select=userPrincipalName")
	if m := members["value"].([]any); len(m) != 1 || m[0].(map[string]any)["userPrincipalName"] != "alice@contoso.com" {
		t.Fatalf("seeded group: %v", members)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop when its context ended")
	}
}

func TestCommandErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	_ = os.WriteFile(bad, []byte(`{"users":[{"userPrincipalName":"a@b.c","favouriteColour":"red"}]}`), 0o600)
	noUser := filepath.Join(dir, "nouser.json")
	_ = os.WriteFile(noUser, []byte(`{"groups":[{"id":"g","members":["ghost@b.c"]}]}`), 0o600)
	tests := []struct {
		name string
		args []string
	}{
		{"unknown flag", []string{"-nope"}},
		{"missing seed", []string{"-seed", filepath.Join(dir, "missing.json")}},
		{"unknown seed field", []string{"-seed", bad}},
		{"member not a user", []string{"-seed", noUser}},
		{"bad address", []string{"-addr", "256.0.0.1:0"}},
		{"notify CA without certificates", []string{"-notify-ca", bad}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := run(ctx, tt.args, io.Discard); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestClientTrusting(t *testing.T) {
	e := newEnv(t, Options{})
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := e.srv.WriteCAFile(path); err != nil {
		t.Fatal(err)
	}
	hc, err := clientTrusting(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := hc.Get(e.srv.AuthorityHost() + e.srv.TenantID() + "/v2.0/.well-known/openid-configuration")
	if err != nil {
		t.Fatalf("client built from -notify-ca does not trust it: %v", err)
	}
	r.Body.Close()
}

func TestExampleSeed(t *testing.T) {
	sd, err := readSeed(filepath.Join("testdata", "seed.json"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.LoadSeed(sd); err != nil {
		t.Fatal(err)
	}
	alice, ok := srv.User("alice@contoso.com")
	if !ok || !alice.OnPremisesSyncEnabled || !alice.AccountEnabled || alice.PreferredLanguage != "de-DE" {
		t.Fatalf("alice %+v", alice)
	}
	bob, _ := srv.User("bob@contoso.com")
	if bob.LastPasswordChangeDateTime.IsZero() || bob.OnPremisesSyncEnabled {
		t.Fatalf("bob %+v", bob)
	}
	if m := srv.GroupMembers("0a0b0c0d-0000-4000-8000-0000000000f2"); len(m) != 2 {
		t.Fatalf("Finance members %v", m)
	}
}
