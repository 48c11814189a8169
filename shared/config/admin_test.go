package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAdminValidation(t *testing.T) {
	cert, key := tlsFiles(t)
	hash := strings.Repeat("ab", 32)
	base := "admin:\n  enabled: true\n  listen: LISTEN\n  TLS\n  tokens:\n    - {name: a, sha256: " + hash + ", roles: [operator]EXP}\n"
	tls := "tls_cert: " + cert + "\n  tls_key: " + key
	cfg := func(listen, tlsPart, exp string) string {
		return strings.NewReplacer("LISTEN", listen, "TLS", tlsPart, "EXP", exp).Replace(base)
	}
	cases := []struct {
		name, yaml, wantErr string
	}{
		{"tls", cfg(":8444", tls, ""), ""},
		{"plain on loopback", cfg("127.0.0.1:8444", "allow_plain: true", ""), ""},
		{"plain on localhost", cfg("localhost:8444", "allow_plain: true", ""), ""},
		{"no tls", cfg("127.0.0.1:8444", "max_body: 2048", ""), "admin.tls_cert: required"},
		{"plain off loopback", cfg("0.0.0.0:8444", "allow_plain: true", ""), "admin.allow_plain: only allowed on a loopback"},
		{"cert without key", cfg(":8444", "tls_cert: "+cert, ""), "admin.tls_cert: set both"},
		{"missing cert file", cfg(":8444", "tls_cert: /nonexistent\n  tls_key: "+key, ""), "admin.tls_cert: stat /nonexistent"},
		{"bad listen", cfg("8444", tls, ""), "admin.listen: must be host:port"},
		{"expiry date", cfg(":8444", tls, ", expires_at: 2030-01-31"), ""},
		{"expiry time", cfg(":8444", tls, ", expires_at: 2030-01-31T10:00:00Z"), ""},
		{"bad expiry", cfg(":8444", tls, ", expires_at: tomorrow"), "admin.tokens[0].expires_at"},
		{"token instead of hash", strings.Replace(cfg(":8444", tls, ""), hash, "pwsa_secret", 1), "admin.tokens[0].sha256: must be the 64 hex"},
		{"bad role", strings.Replace(cfg(":8444", tls, ""), "[operator]", "[operator, root]", 1), "admin.tokens[0].roles[1]: must be viewer"},
		{"no roles", strings.Replace(cfg(":8444", tls, ""), "[operator]", "[]", 1), "admin.tokens[0].roles: at least one"},
		{"no tokens", "admin:\n  enabled: true\n  " + tls + "\n", "admin.tokens: at least one token"},
		{"duplicate", strings.Replace(cfg(":8444", tls, ""), "  tokens:\n", "  tokens:\n    - {name: a, sha256: "+hash+", roles: [viewer]}\n", 1), "admin.tokens[1].name: duplicate"},
		{"unknown key", strings.Replace(cfg(":8444", tls, ""), "roles:", "role: x, roles:", 1), "admin.tokens[0].role: unknown key"},
		{"disabled needs nothing", "admin: {enabled: false}\n", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte(c.yaml), nil)
			if err == nil {
				err = cfg.Validate(Targets{})
			}
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Fatalf("error %v, want %q", err, c.wantErr)
			}
		})
	}
	c, err := Parse([]byte(cfg(":8444", tls, ", expires_at: 2030-01-31")), nil)
	if err != nil || !c.Admin.Tokens[0].Expiry().Equal(time.Date(2030, 1, 31, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("expiry: %v %v", c.Admin.Tokens[0].Expiry(), err)
	}
}

// The example's admin section validates once enabled, with its files present.
func TestExampleAdminSection(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "deployments", "config", "pwsync.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := strings.Replace(string(data), "  enabled: false\n  listen: 127.0.0.1:8444", "  enabled: true\n  listen: 127.0.0.1:8444", 1)
	for _, f := range []string{"ad-ca.pem", "admin.crt", "admin.key", "admin-ca.pem"} {
		p := filepath.Join(dir, f)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		s = strings.ReplaceAll(s, "/etc/pwsync/"+f, p)
	}
	cfg, err := Parse([]byte(s), func(string) string { return "v" })
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Admin.Enabled || len(cfg.Admin.Tokens) != 1 {
		t.Fatalf("admin section not enabled by the test: %+v", cfg.Admin)
	}
	if err := cfg.Validate(AllTargets); err != nil {
		t.Fatal(err)
	}
}

// TestListenersDiffer: the admin API never shares the webhook's (internet
// facing) listener nor the ops one; a wildcard host overlaps every host.
func TestListenersDiffer(t *testing.T) {
	cert, key := tlsFiles(t)
	conf := func(admin, webhook, ops string) string {
		return "admin:\n  enabled: true\n  listen: \"" + admin + "\"\n  tls_cert: " + cert + "\n  tls_key: " + key +
			"\n  tokens:\n    - {name: a, sha256: " + strings.Repeat("ab", 32) + ", roles: [operator]}\n" +
			"webhook:\n  enabled: true\n  public_url: https://pwsync.example.com/graph\n  listen: \"" + webhook + "\"\n" +
			"ops:\n  listen: \"" + ops + "\"\n"
	}
	const webhookErr, opsErr = "admin.listen: must differ from webhook.listen", "admin.listen: must differ from ops.listen"
	for _, c := range []struct {
		name, admin, webhook, ops, want string
	}{
		{"distinct", "127.0.0.1:8444", ":8443", "127.0.0.1:9090", ""},
		{"same as webhook", ":8443", ":8443", "127.0.0.1:9090", webhookErr},
		{"webhook on all addresses", "127.0.0.1:8443", "0.0.0.0:8443", "127.0.0.1:9090", webhookErr},
		{"same port, other hosts", "127.0.0.1:8443", "10.0.0.5:8443", "127.0.0.1:9090", ""},
		{"same as ops", "127.0.0.1:9090", ":8443", "127.0.0.1:9090", opsErr},
		{"ops on all addresses", "127.0.0.1:9090", ":8443", "[::]:9090", opsErr},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte(conf(c.admin, c.webhook, c.ops)), nil)
			if err != nil {
				t.Fatal(err)
			}
			// The ingest target's other requirements fail too (no AD, no
			// Graph): only the listener errors matter here.
			err = cfg.Validate(Targets{Ingest: true})
			for _, e := range []string{webhookErr, opsErr} {
				if got := err != nil && strings.Contains(err.Error(), e); got != (e == c.want) {
					t.Fatalf("error %v: want %q, not the other", err, c.want)
				}
			}
		})
	}
}

// tlsFiles writes a stand-in certificate and key (mode 600).
func tlsFiles(t *testing.T) (cert, key string) {
	t.Helper()
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	for _, f := range []string{cert, key} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key
}
