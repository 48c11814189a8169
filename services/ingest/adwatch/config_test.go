package adwatch

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func validConfig() Config {
	c := DefaultConfig()
	c.Domain = "example.test"
	c.URL = "ldaps://dc1.example.test:636"
	c.BindDN = "svc-pwsync@example.test"
	c.BindPassword = "secret"
	c.BaseDN = "DC=example,DC=test"
	return c
}

func TestNewValidatesConfig(t *testing.T) {
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string // substring naming the setting; "" = valid
	}{
		{"valid_ldaps", func(*Config) {}, ""},
		{"valid_starttls", func(c *Config) { c.URL = "ldap://dc1:389"; c.StartTLS = true }, ""},
		{"plain_allowed_explicitly", func(c *Config) { c.URL = "ldap://dc1:389"; c.AllowPlain = true }, ""},
		{"defaults_fill_zero_values", func(c *Config) { c.Mode, c.UserFilter, c.PageSize, c.PollInterval = "", "", 0, 0 }, ""},
		{"plain_refused", func(c *Config) { c.URL = "ldap://dc1:389" }, "AllowPlain"},
		{"starttls_on_ldaps", func(c *Config) { c.StartTLS = true }, "StartTLS"},
		{"no_domain", func(c *Config) { c.Domain = "" }, "Domain"},
		{"no_url", func(c *Config) { c.URL = "" }, "URL"},
		{"bad_scheme", func(c *Config) { c.URL = "https://dc1" }, "URL"},
		{"no_bind_dn", func(c *Config) { c.BindDN = "" }, "BindDN"},
		{"no_password", func(c *Config) { c.BindPassword = "" }, "BindPassword"},
		{"no_base", func(c *Config) { c.BaseDN = "" }, "BaseDN"},
		{"bad_base", func(c *Config) { c.BaseDN = "not a dn" }, "BaseDN"},
		{"bad_filter", func(c *Config) { c.UserFilter = "(objectClass=user" }, "UserFilter"},
		{"bad_mode", func(c *Config) { c.Mode = "syncrepl" }, "Mode"},
		{"page_too_big", func(c *Config) { c.PageSize = 5000 }, "PageSize"},
		{"negative_interval", func(c *Config) { c.PollInterval = -1 }, "PollInterval"},
		{"missing_ca", func(c *Config) { c.CAFile = "/nonexistent/ca.pem" }, "CAFile"},
		{"ca_without_cert", func(c *Config) { c.CAFile = caFile }, "CAFile"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig()
			tt.edit(&cfg)
			_, err := New(cfg, &recSink{}, newMemCursors(), zerolog.Nop())
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("New accepted the config; want an error naming %s", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("New: %v; want it to name %s", err, tt.wantErr)
			}
			if err != nil && cfg.BindPassword != "" && strings.Contains(err.Error(), cfg.BindPassword) {
				t.Fatalf("error reveals the bind password: %v", err)
			}
		})
	}
}

func TestCursorKey(t *testing.T) {
	tests := []struct{ domain, mode, want string }{
		{"example.test", ModeDirSync, "dirsync.example.test"},
		{"Corp.Example.COM", ModeUSN, "usn.corp.example.com"},
		{"odd domain*>", ModeDirSync, "dirsync.odd_domain__"},
	}
	for _, tt := range tests {
		if got := (Config{Domain: tt.domain}).cursorKey(tt.mode); got != tt.want {
			t.Errorf("cursorKey(%q, %q) = %q, want %q", tt.domain, tt.mode, got, tt.want)
		}
	}
}

func TestGUIDFilter(t *testing.T) {
	raw := []byte{0xb9, 0x32, 0xd1, 0x6c, 0xa9, 0x6a, 0xec, 0x49, 0xa0, 0x35, 0xac, 0x12, 0xa4, 0xef, 0xd9, 0x28}
	want := `(objectGUID=\b9\32\d1\6c\a9\6a\ec\49\a0\35\ac\12\a4\ef\d9\28)`
	if got := guidFilter(raw); got != want {
		t.Fatalf("guidFilter = %s, want %s", got, want)
	}
	// bytes that are filter syntax: ( ) * \ NUL must come out escaped
	special := []byte{'(', ')', '*', '\\', 0, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k'}
	if got := anyGUID([][]byte{special}); got != `(|(objectGUID=\28\29\2a\5c\00\61\62\63\64\65\66\67\68\69\6a\6b))` {
		t.Fatalf("anyGUID = %s", got)
	}
}

func TestUSNInScope(t *testing.T) {
	p := &usnPoll{w: &Watcher{cfg: Config{BaseDN: "OU=Corp,DC=example,DC=test"}}, ncRoot: "DC=example,DC=test"}
	tests := []struct {
		lastKnownParent string
		want            bool
	}{
		{"OU=People,OU=Corp,DC=example,DC=test", true},
		{"ou=corp,dc=EXAMPLE,dc=test", true},
		{"<GUID=8d4c9379-47af-4a01-889a-8f4197fbe73a>;OU=People,OU=Corp,DC=example,DC=test", true},
		{"CN=Users,DC=example,DC=test", false},
		{"OU=Corporate,DC=example,DC=test", false},
		{`OU=x\0ADEL:826ed545-698f-434c-82af-3d87fe24fa8e,CN=Deleted Objects,DC=example,DC=test`, true},
		{"", true},
	}
	for _, tt := range tests {
		if got := p.inScope(tt.lastKnownParent); got != tt.want {
			t.Errorf("inScope(%q) = %v, want %v", tt.lastKnownParent, got, tt.want)
		}
	}
	root := &usnPoll{w: &Watcher{cfg: Config{BaseDN: "DC=example,DC=test"}}, ncRoot: "DC=example,DC=test"}
	if !root.inScope("CN=Users,DC=example,DC=test") {
		t.Error("with the domain root as base every deleted user is in scope")
	}
}
