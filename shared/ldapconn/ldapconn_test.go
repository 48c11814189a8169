package ldapconn_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/pwsync/pwsync/shared/ldapconn"
	"github.com/pwsync/pwsync/testrig/adtest"
)

func TestTLSConfig(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("no certificate here"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, url, ca string
		wantErr       string
		wantHost      string
	}{
		{name: "system_pool", url: "ldaps://dc1.example.test:636", wantHost: "dc1.example.test"},
		{name: "missing_ca", url: "ldaps://dc1.example.test:636", ca: filepath.Join(dir, "absent.pem"), wantErr: "reading CA file"},
		{name: "ca_without_cert", url: "ldaps://dc1.example.test:636", ca: notPEM, wantErr: "holds no PEM certificate"},
		{name: "bad_url", url: "ldaps://dc1 example:636\x7f", wantErr: "URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc, err := ldapconn.TLSConfig(tt.url, tt.ca, false)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.ServerName != tt.wantHost || tc.InsecureSkipVerify || tc.RootCAs != nil {
				t.Fatalf("tls config = server %q insecure %v roots %v, want %q, verified, system pool",
					tc.ServerName, tc.InsecureSkipVerify, tc.RootCAs != nil, tt.wantHost)
			}
		})
	}
}

// TestDial pins how a dial fails, which campaigns rely on: a DC that is not
// reached is a network error (nothing was sent), a refused bind is not; a DC
// whose certificate is not trusted also fails at the network level in
// go-ldap, so it counts as unreachable too (as before this package).
func TestDial(t *testing.T) {
	dc := adtest.Require(t)
	closed := closedPort(t)
	tests := []struct {
		name        string
		cfg         ldapconn.Config
		ca          string
		wantErr     bool
		wantNetwork bool
	}{
		{name: "ldaps", cfg: ldapconn.Config{URL: dc.LDAPSURL}, ca: dc.CAFile},
		{name: "start_tls", cfg: ldapconn.Config{URL: dc.LDAPURL, StartTLS: true}, ca: dc.CAFile},
		{name: "unreachable", cfg: ldapconn.Config{URL: "ldaps://" + closed, DialTimeout: time.Second}, ca: dc.CAFile,
			wantErr: true, wantNetwork: true},
		{name: "wrong_password", cfg: ldapconn.Config{URL: dc.LDAPSURL, BindPassword: "not-the-password"}, ca: dc.CAFile,
			wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc, err := ldapconn.TLSConfig(tt.cfg.URL, tt.ca, false)
			if err != nil {
				t.Fatal(err)
			}
			cfg := tt.cfg
			cfg.BindDN = dc.BindUPN
			if cfg.BindPassword == "" {
				cfg.BindPassword = dc.BindPassword
			}
			c, err := ldapconn.Dial(cfg, tc)
			if !tt.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if _, err := c.Search(ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
					"(objectClass=*)", []string{"defaultNamingContext"}, nil)); err != nil {
					t.Fatalf("reading the rootDSE on the bound connection: %v", err)
				}
				return
			}
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded, want an error")
			}
			if got := ldapconn.IsNetwork(err); got != tt.wantNetwork {
				t.Fatalf("IsNetwork(%v) = %v, want %v", err, got, tt.wantNetwork)
			}
		})
	}
}

// closedPort is a local address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
