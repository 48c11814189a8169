package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const valid = `
log: {level: debug}
ad:
  domains:
    - name: example.test
      url: ldaps://127.0.0.1:636
      bind_dn: CN=svc,DC=example,DC=test
      bind_password: env:AD_PW
      base_dn: DC=example,DC=test
      poll_interval: 1s
graph:
  tenant_id: t
  client_id: c
  client_secret: file:SECRETFILE
evaluator:
  scope:
    include_ous: [OU=Corp,DC=example,DC=test]
    break_glass_upns: [bg@example.test]
`

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseValid(t *testing.T) {
	dir := t.TempDir()
	sf := filepath.Join(dir, "secret")
	if err := os.WriteFile(sf, []byte("graph-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse([]byte(strings.ReplaceAll(valid, "SECRETFILE", sf)), env(map[string]string{"AD_PW": "ad-secret"}))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if err := cfg.Validate(AllTargets); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	d := cfg.AD.Domains[0]
	switch {
	case d.BindPassword.Value() != "ad-secret":
		t.Errorf("bind password not read from env")
	case cfg.Graph.ClientSecret.Value() != "graph-secret":
		t.Errorf("client secret not read from file: %q", cfg.Graph.ClientSecret.Value())
	case d.PollInterval != time.Second || d.Mode != "dirsync" || !*d.Notifications:
		t.Errorf("domain defaults/values wrong: %+v", d)
	case cfg.Log.Level != "debug" || cfg.Log.Format != "json":
		t.Errorf("log = %+v", cfg.Log)
	case strings.Contains(d.BindPassword.String(), "ad-secret"):
		t.Errorf("secret String() leaks the value")
	}
}

func TestErrorsNameTheKey(t *testing.T) {
	base := strings.ReplaceAll(valid, "file:SECRETFILE", "lit")
	tests := []struct {
		name, yaml, want string
		env              map[string]string
	}{
		{"unknown_top_level_key", base + "\nbogus: 1\n", "bogus: unknown key", nil},
		{"unknown_nested_key", strings.Replace(base, "tenant_id: t", "tenant_id: t\n  clent_id: x", 1), "graph.clent_id: unknown key", nil},
		{"unknown_key_in_list_item", strings.Replace(base, "name: example.test", "name: example.test\n      colour: red", 1), "ad.domains[0].colour: unknown key", nil},
		{"missing_client_id", strings.Replace(base, "client_id: c", "", 1), "graph.client_id: required", nil},
		{"missing_env_secret", base, "ad.domains[0].bind_password: environment variable AD_PW", map[string]string{}},
		{"bad_duration", strings.Replace(base, "poll_interval: 1s", "poll_interval: soon", 1), "invalid value", nil},
		{"plain_ldap_refused", strings.Replace(base, "ldaps://127.0.0.1:636", "ldap://127.0.0.1:389", 1), "ad.domains[0].url: plain ldap://", nil},
		{"bad_mode", strings.Replace(base, "poll_interval: 1s", "mode: magic", 1), "ad.domains[0].mode: must be", nil},
		{"bad_log_level", strings.Replace(base, "level: debug", "level: loud", 1), "log.level", nil},
		{"graph_http_refused", strings.Replace(base, "tenant_id: t", "tenant_id: t\n  base_url: http://graph", 1), "graph.base_url: must be an https:// URL", nil},
		{"ou_not_dn", strings.Replace(base, "OU=Corp,DC=example,DC=test", "Corp", 1), "evaluator.scope.include_ous[0]", nil},
		{"duplicate_key", base + "\nlog: {level: info}\n", "log: duplicate key", nil},
		{"bad_instance", base + "\ninstance: \"node 1\"\n", "instance: must be", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.env
			if e == nil {
				e = map[string]string{"AD_PW": "pw"}
			}
			cfg, err := Parse([]byte(tt.yaml), env(e))
			if err == nil {
				err = cfg.Validate(AllTargets)
			}
			if err == nil {
				t.Fatalf("no error, want one containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "lit") {
				t.Fatalf("error leaks the client secret: %v", err)
			}
		})
	}
}

func TestTargetsRequireOnlyTheirSettings(t *testing.T) {
	cfg, err := Parse([]byte("evaluator: {dry_run: true}\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(Targets{Evaluator: true}); err != nil {
		t.Fatalf("evaluator alone needs no AD or Graph settings: %v", err)
	}
	if err := cfg.Validate(Targets{Actuator: true}); err == nil || !strings.Contains(err.Error(), "graph.tenant_id") {
		t.Fatalf("actuator without graph settings: got %v", err)
	}
}

func TestLoadWarnsOnReadableSecrets(t *testing.T) {
	p := filepath.Join(t.TempDir(), "pwsync.yaml")
	if err := os.WriteFile(p, []byte(withPendingGroup(strings.ReplaceAll(valid, "file:SECRETFILE", "literal-secret"))), 0o644); err != nil {
		t.Fatal(err)
	}
	_, warnings, err := Load(p, AllTargets, env(map[string]string{"AD_PW": "x"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "readable") || strings.Contains(warnings[0], "literal-secret") {
		t.Fatalf("warnings = %q", warnings)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, warnings, _ = Load(p, AllTargets, env(map[string]string{"AD_PW": "x"})); len(warnings) != 0 {
		t.Fatalf("mode 600 still warns: %q", warnings)
	}
}

func TestLoadWarnsOnReadableSecretFiles(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "graph-secret")
	if err := os.WriteFile(secretFile, []byte("file-secret-value\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "pwsync.yaml")
	if err := os.WriteFile(p, []byte(withPendingGroup(strings.ReplaceAll(valid, "SECRETFILE", secretFile))), 0o600); err != nil {
		t.Fatal(err)
	}
	_, warnings, err := Load(p, AllTargets, env(map[string]string{"AD_PW": "x"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "graph.client_secret") || !strings.Contains(warnings[0], secretFile) ||
		strings.Contains(warnings[0], "file-secret-value") {
		t.Fatalf("warnings = %q", warnings)
	}
	if err := os.Chmod(secretFile, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, warnings, _ = Load(p, AllTargets, env(map[string]string{"AD_PW": "x"})); len(warnings) != 0 {
		t.Fatalf("mode 600 still warns: %q", warnings)
	}
}

func TestExampleConfigIsValid(t *testing.T) {
	p := filepath.Join("..", "..", "deployments", "config", "pwsync.example.yaml")
	if _, err := os.Stat(p); err != nil {
		t.Skip("example config not present")
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	// The example names a CA file of a real install; point it at one that exists.
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	data = []byte(strings.ReplaceAll(string(data), "/etc/pwsync/ad-ca.pem", ca))
	cfg, err := Parse(data, func(string) string { return "from-env" })
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	if err := cfg.Validate(AllTargets); err != nil {
		t.Fatalf("example config: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(valid))
	f.Add([]byte("ad: {domains: [{name: x}]}"))
	f.Add([]byte("graph: [1,2]"))
	f.Add([]byte("log: !!binary aGVsbG8="))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, func(string) string { return "v" })
		if err != nil {
			return
		}
		_ = cfg.Validate(AllTargets) // must not panic
	})
}

// FuzzLoad runs the whole loader (file, strict YAML, secrets, validation,
// the permission warning) on any file content: no panic; what loads also
// validates; a literal secret never shows in a warning or an error. The
// literal counts as a secret only where it is one: under a secret key, or
// anywhere in a file that is not YAML (syntax errors quote nothing). Written
// as a key, an anchor, a tag or an ordinary value it is just text, and
// errors name it so the user can find the mistake.
func FuzzLoad(f *testing.F) {
	const lit = "Fuzz-Literal-Secret-7781"
	f.Add([]byte(valid), uint16(0o600))
	f.Add([]byte(strings.ReplaceAll(valid, "file:SECRETFILE", lit)), uint16(0o644))
	f.Add([]byte("graph: {client_secret: "+lit+", client_id: [x]}\n"), uint16(0o640))
	f.Add([]byte("ad: {domains: [{name: a, bind_password: "+lit+", url: 'ldap://%zz'}]}\n"), uint16(0o600))
	f.Add([]byte("nats: {embedded: {max_store: 1e99}}"), uint16(0o600))
	dir := f.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("from-file\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte, mode uint16) {
		p := filepath.Join(t.TempDir(), "pwsync.yaml")
		data = []byte(strings.ReplaceAll(string(data), "SECRETFILE", secretFile))
		if err := os.WriteFile(p, data, os.FileMode(mode&0o777|0o600)); err != nil {
			t.Fatal(err)
		}
		cfg, warnings, err := Load(p, AllTargets, func(string) string { return "from-env" })
		if err == nil {
			if verr := cfg.Validate(AllTargets); verr != nil {
				t.Fatalf("loaded but does not validate: %v", verr)
			}
		}
		out := strings.Join(warnings, "\n")
		if err != nil {
			out += err.Error()
		}
		if strings.Contains(out, lit) && onlyAsSecret(data, lit) {
			t.Fatalf("a literal secret leaked: %s", out)
		}
	})
}

// secretKeys are the config keys whose values are Secrets.
var secretKeys = map[string]bool{"bind_password": true, "client_secret": true,
	"certificate_password": true, "workflows_webhook_url": true}

// onlyAsSecret reports whether lit occurs in data's first YAML document only
// inside the values of secret keys (or data is not YAML at all).
func onlyAsSecret(data []byte, lit string) bool {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return true
	}
	var clean func(n *yaml.Node) bool
	clean = func(n *yaml.Node) bool {
		if strings.Contains(n.Anchor, lit) || strings.Contains(n.Tag, lit) ||
			(n.Kind != yaml.MappingNode && strings.Contains(n.Value, lit)) {
			return false
		}
		for i := 0; i < len(n.Content); i++ {
			c := n.Content[i]
			if n.Kind == yaml.MappingNode && i%2 == 0 && i+1 < len(n.Content) &&
				c.Kind == yaml.ScalarNode && secretKeys[c.Value] {
				i++ // the secret's value, whatever its shape, is the secret
				continue
			}
			if !clean(c) {
				return false
			}
		}
		return true
	}
	return clean(&root)
}

// TestTLSKeysReadableWarn: the webhook's and the admin API's TLS private
// keys warn when group or others may read them, like any secret file.
func TestTLSKeysReadableWarn(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		key string
		set func(c *Config, p string)
	}{
		{"webhook.tls_key", func(c *Config, p string) { c.Webhook.TLSKey = p }},
		{"admin.tls_key", func(c *Config, p string) { c.Admin.TLSKey = p }},
	} {
		t.Run(tc.key, func(t *testing.T) {
			p := filepath.Join(dir, tc.key+".pem")
			if err := os.WriteFile(p, []byte("-----BEGIN PRIVATE KEY-----\n"), 0o640); err != nil {
				t.Fatal(err)
			}
			c := Default()
			tc.set(&c, p)
			if w := c.secretFileWarnings(); len(w) != 1 || !strings.HasPrefix(w[0], tc.key+": "+p+" is readable") {
				t.Fatalf("mode 640: warnings %q", w)
			}
			if err := os.Chmod(p, 0o600); err != nil {
				t.Fatal(err)
			}
			if w := c.secretFileWarnings(); len(w) != 0 {
				t.Fatalf("mode 600: warnings %q", w)
			}
		})
	}
}

// TestOnlyAsSecret: FuzzLoad's judge of where the literal is a secret.
func TestOnlyAsSecret(t *testing.T) {
	const lit = "S3"
	for _, tc := range []struct {
		yaml string
		want bool
	}{
		{"graph: {client_secret: S3}", true},
		{"ad: {domains: [{bind_password: xS3x}]}", true},
		{"graph: {client_secret: [S3]}", true},
		{"*S3", true}, // not YAML: every error must hide it
		{"S3: x", false},
		{"log: {level: S3}", false},
		{"graph: {client_id: &S3 x}", false},
		{"graph: {client_secret: S3, client_id: S3}", false},
	} {
		if got := onlyAsSecret([]byte(tc.yaml), lit); got != tc.want {
			t.Errorf("onlyAsSecret(%q) = %v, want %v", tc.yaml, got, tc.want)
		}
	}
}

// TestDefaultsFollowAD: the defaults must not act where AD does not.
func TestDefaultsFollowAD(t *testing.T) {
	d := Default()
	if d.Evaluator.ForcedChange.IncludeNeverExpires {
		t.Error("forced_change.include_never_expires defaults to true: a first start would sign out and block every \"password never expires\" account with pwdLastSet 0, which AD lets log on")
	}
}
