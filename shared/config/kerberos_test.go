package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// kerberosBase is valid with a Kerberos bind: no bind_dn, no password.
const kerberosBase = `
ad:
  domains:
    - name: example.test
      url: ldaps://dc1.example.test:636
      kerberos:
        realm: EXAMPLE.TEST
        principal: svc-pwsync
        keytab_file: KEYTAB
        kdcs: [dc1.example.test, "dc2.example.test:88"]
      base_dn: DC=example,DC=test
graph:
  tenant_id: t
  client_id: c
  client_secret: lit
evaluator:
  scope:
    include_ous: [OU=Corp,DC=example,DC=test]
`

func TestKerberosConfig(t *testing.T) {
	dir := t.TempDir()
	keytab := filepath.Join(dir, "svc.keytab")
	if err := os.WriteFile(keytab, []byte{5, 2}, 0o600); err != nil {
		t.Fatal(err)
	}
	base := withPendingGroup(strings.ReplaceAll(kerberosBase, "KEYTAB", keytab))
	set := func(old, new string) string { return strings.Replace(base, old, new, 1) }
	tests := []struct {
		name, yaml string
		want       []string // substrings of the error; none: valid
	}{
		{name: "valid", yaml: base},
		{name: "principal_at_realm", yaml: set("realm: EXAMPLE.TEST\n        principal: svc-pwsync", "principal: svc-pwsync@EXAMPLE.TEST")},
		{name: "spn_explicit", yaml: set("kdcs:", "spn: ldap/dc1.example.test\n        kdcs:")},
		{name: "start_tls", yaml: set("url: ldaps://dc1.example.test:636", "url: ldap://dc1.example.test:389\n      start_tls: true")},
		{name: "with_bind_password", yaml: set("kerberos:", "bind_password: env:AD_PW\n      kerberos:"),
			want: []string{"ad.domains[0].bind_password: must be absent with kerberos"}},
		{name: "with_bind_dn", yaml: set("kerberos:", "bind_dn: CN=svc,DC=example,DC=test\n      kerberos:"),
			want: []string{"ad.domains[0].bind_dn: must be absent with kerberos"}},
		{name: "keytab_missing", yaml: set(keytab, keytab+".absent"), want: []string{"ad.domains[0].kerberos.keytab_file:", "no such file"}},
		{name: "keytab_empty", yaml: set("keytab_file: "+keytab, "keytab_file: \"\""), want: []string{"ad.domains[0].kerberos.keytab_file: required"}},
		{name: "keytab_is_dir", yaml: set(keytab, dir), want: []string{"ad.domains[0].kerberos.keytab_file:", "is a directory"}},
		{name: "no_principal", yaml: set("principal: svc-pwsync", ""), want: []string{"ad.domains[0].kerberos.principal: required"}},
		{name: "no_realm", yaml: set("realm: EXAMPLE.TEST", ""), want: []string{"ad.domains[0].kerberos.realm: required"}},
		{name: "realm_lower_case", yaml: set("realm: EXAMPLE.TEST", "realm: example.test"), want: []string{"ad.domains[0].kerberos.realm:", "upper case"}},
		{name: "realms_differ", yaml: set("principal: svc-pwsync", "principal: svc-pwsync@OTHER.TEST"),
			want: []string{"ad.domains[0].kerberos.principal: names realm OTHER.TEST"}},
		{name: "principal_upn", yaml: set("realm: EXAMPLE.TEST\n        principal: svc-pwsync", "principal: svc-pwsync@example.test"),
			want: []string{"ad.domains[0].kerberos.principal:", "svc-pwsync@EXAMPLE.TEST"}},
		{name: "krb5_conf_missing", yaml: set("kdcs:", "krb5_conf: /nonexistent/krb5.conf\n        kdcs:"),
			want: []string{"ad.domains[0].kerberos.krb5_conf:"}},
		{name: "bad_kdc", yaml: set("\"dc2.example.test:88\"", "\"dc2.example.test:eighty\""), want: []string{"ad.domains[0].kerberos.kdcs[1]: must be host"}},
		{name: "bad_spn", yaml: set("kdcs:", "spn: dc1.example.test\n        kdcs:"), want: []string{"ad.domains[0].kerberos.spn: must be service/host"}},
		{name: "plain_ldap", yaml: set("url: ldaps://dc1.example.test:636", "url: ldap://dc1.example.test:389\n      allow_plain: true"),
			want: []string{"ad.domains[0].kerberos: needs ldaps:// or start_tls"}},
		{name: "plain_ldap_in_urls", yaml: set("url: ldaps://dc1.example.test:636", "urls: [\"ldaps://dc1.example.test\", \"ldap://dc2.example.test\"]\n      allow_plain: true"),
			want: []string{"ad.domains[0].kerberos: needs ldaps:// or start_tls"}},
		{name: "unknown_key", yaml: set("kdcs:", "password: x\n        kdcs:"), want: []string{"ad.domains[0].kerberos.password: unknown key"}},
		{name: "neither", yaml: set("kerberos:", "kerberos_off:"), want: []string{"unknown key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.yaml), env(map[string]string{"AD_PW": "pw"}))
			if err == nil {
				err = cfg.Validate(AllTargets)
			}
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("want valid: %v", err)
				}
				if k := cfg.AD.Domains[0].Kerberos; k == nil || k.KeytabFile != keytab || cfg.AD.Domains[0].BindPassword.IsSet() {
					t.Fatalf("kerberos not parsed: %+v", k)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want one with %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

// TestKerberosWithoutBindRequiresOne pins that a domain with neither a
// password nor Kerberos says both ways out.
func TestKerberosWithoutBindRequiresOne(t *testing.T) {
	errs := Domain{}.validateBind("ad.domains[0]")
	if len(errs) != 2 || !strings.Contains(errs[0].Error(), "bind_dn: required (or kerberos)") ||
		!strings.Contains(errs[1].Error(), "bind_password: required (or kerberos)") {
		t.Fatalf("errors = %v", errs)
	}
}

func TestKerberosKeytabReadableWarns(t *testing.T) {
	dir := t.TempDir()
	keytab := filepath.Join(dir, "svc.keytab")
	if err := os.WriteFile(keytab, []byte{5, 2}, 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "pwsync.yaml")
	data := withPendingGroup(strings.ReplaceAll(kerberosBase, "KEYTAB", keytab))
	if err := os.WriteFile(p, []byte(strings.Replace(data, "client_secret: lit", "client_secret: env:GRAPH", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, warnings, err := Load(p, AllTargets, env(map[string]string{"GRAPH": "x"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "ad.domains[0].kerberos.keytab_file") || !strings.Contains(warnings[0], "chmod 600") {
		t.Fatalf("warnings = %q", warnings)
	}
}
