package config

import (
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"time"
)

// Admin configures the admin API (and the console served on it): its own
// listener, TLS by default, bearer tokens stored as SHA-256 hashes.
type Admin struct {
	Enabled bool   `yaml:"enabled"`
	Listen  string `yaml:"listen"`
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// CAFile: the CA that signed tls_cert, for CLI commands on this host.
	CAFile string `yaml:"ca_file"`
	// AllowPlain serves plain HTTP, only on a loopback listen address (a
	// local TLS-terminating proxy or an SSH tunnel in front).
	AllowPlain bool         `yaml:"allow_plain"`
	MaxBody    int64        `yaml:"max_body"`
	Tokens     []AdminToken `yaml:"tokens"`
}

// AdminToken is one caller. Only the token's hash is stored: `pwsync admin
// token` prints a new token once, with this entry.
type AdminToken struct {
	Name   string   `yaml:"name"`
	SHA256 string   `yaml:"sha256"`
	Roles  []string `yaml:"roles"` // viewer | operator | approver
	// ExpiresAt: RFC 3339 time or YYYY-MM-DD (UTC midnight); empty = never.
	ExpiresAt string `yaml:"expires_at"`
}

// Expiry parses ExpiresAt (validated by Validate); zero = never.
func (t AdminToken) Expiry() time.Time {
	e, _ := parseExpiry(t.ExpiresAt)
	return e
}

func parseExpiry(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Parse(time.DateOnly, s)
}

func defaultAdmin() Admin {
	return Admin{Listen: "127.0.0.1:8444", MaxBody: 1 << 20}
}

func (a Admin) validate() []error {
	if !a.Enabled {
		return nil
	}
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("admin.%s: "+format, append([]any{key}, args...)...))
	}
	loopback := false
	if host, _, err := net.SplitHostPort(a.Listen); err != nil {
		add("listen", "must be host:port (got %q)", a.Listen)
	} else if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		loopback = true
	}
	switch {
	case (a.TLSCert == "") != (a.TLSKey == ""):
		add("tls_cert", "set both admin.tls_cert and admin.tls_key")
	case a.TLSCert == "" && !a.AllowPlain:
		add("tls_cert", "required: the admin API serves TLS (or set allow_plain: true on a loopback listen address)")
	case a.TLSCert == "" && !loopback:
		add("allow_plain", "only allowed on a loopback listen address (got %q)", a.Listen)
	case a.TLSCert != "" && a.AllowPlain:
		add("allow_plain", "cannot be combined with tls_cert")
	}
	for key, f := range map[string]string{"tls_cert": a.TLSCert, "tls_key": a.TLSKey, "ca_file": a.CAFile} {
		if f != "" {
			if _, err := os.Stat(f); err != nil {
				add(key, "%v", err)
			}
		}
	}
	if a.MaxBody < 1024 {
		add("max_body", "must be at least 1024 bytes")
	}
	if len(a.Tokens) == 0 {
		add("tokens", "at least one token is required (create one with `pwsync admin token --name NAME --roles viewer`)")
	}
	names, hashes := map[string]bool{}, map[string]bool{}
	for i, t := range a.Tokens {
		k := fmt.Sprintf("tokens[%d]", i)
		if t.Name == "" {
			add(k+".name", "required")
		} else if names[t.Name] {
			add(k+".name", "duplicate token name %q", t.Name)
		}
		names[t.Name] = true
		if b, err := hex.DecodeString(t.SHA256); err != nil || len(b) != 32 {
			add(k+".sha256", "must be the 64 hex characters printed by `pwsync admin token` (never the token itself)")
		} else if hashes[t.SHA256] {
			add(k+".sha256", "the same token is configured twice")
		}
		hashes[t.SHA256] = true
		if len(t.Roles) == 0 {
			add(k+".roles", "at least one of viewer, operator, approver")
		}
		for j, r := range t.Roles {
			switch r {
			case "viewer", "operator", "approver":
			default:
				add(fmt.Sprintf("%s.roles[%d]", k, j), "must be viewer, operator or approver (got %q)", r)
			}
		}
		if _, err := parseExpiry(t.ExpiresAt); err != nil {
			add(k+".expires_at", "must be an RFC 3339 time or YYYY-MM-DD (got %q)", t.ExpiresAt)
		}
	}
	return errs
}
