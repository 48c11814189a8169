package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-ldap/ldap/v3"

	"github.com/pwsync/pwsync/shared/ldapconn"
	"github.com/pwsync/pwsync/testrig/graphsim"
	"github.com/pwsync/pwsync/testrig/krbtest"
	"github.com/pwsync/pwsync/testrig/natstest"
)

// krbDomain is one ad.domains[] entry with a Kerberos bind.
type krbDomain struct {
	Name, Principal, Keytab, KRB5Conf, SPN string
	KDCs                                   []string
}

func (k krbDomain) yaml(url, ca, base string) string {
	s := fmt.Sprintf("    - name: %s\n      url: %s\n      ca_file: %s\n      base_dn: %q\n      kerberos:\n        realm: EXAMPLE.TEST\n        principal: %s\n        keytab_file: %s\n",
		k.Name, url, ca, base, k.Principal, k.Keytab)
	if k.KRB5Conf != "" {
		s += "        krb5_conf: " + k.KRB5Conf + "\n"
	}
	if k.SPN != "" {
		s += "        spn: " + k.SPN + "\n"
	}
	if len(k.KDCs) > 0 {
		s += fmt.Sprintf("        kdcs: [%q]\n", strings.Join(k.KDCs, `", "`))
	}
	return s
}

// TestDoctorKerberos: doctor checks a Kerberos domain's keytab, ticket and
// bind against Samba's KDC, and names the fix of each failure.
func TestDoctorKerberos(t *testing.T) {
	f := krbtest.Require(t)
	dc := f.DC
	dir := t.TempDir()
	sim := runSim(t, graphsim.Options{ClientSecret: "doctor-secret"}, filepath.Join(dir, "graph-ca.pem"))
	emb, _ := natstest.Run(t)
	hook, hookCA := echoHook(t, dir, true)

	user, kt := f.NewUser(t, "doctorkrb")
	stale, staleKT := f.NewUser(t, "doctorstale")
	dc.ResetPassword(t, stale.DN, "Stale.Passw0rd-9", false)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	doms := []krbDomain{
		{Name: "krb-ok", Principal: user.SAM, Keytab: kt, KRB5Conf: f.KRB5Conf},
		{Name: "krb-stale", Principal: stale.SAM, Keytab: staleKT, KRB5Conf: f.KRB5Conf},
		{Name: "krb-other-keytab", Principal: user.SAM, Keytab: staleKT, KRB5Conf: f.KRB5Conf},
		{Name: "krb-spn", Principal: user.SAM, Keytab: kt, KRB5Conf: f.KRB5Conf, SPN: "ldap/nohost.example.test"},
		{Name: "krb-no-kdc", Principal: user.SAM, Keytab: kt, KDCs: []string{closed}},
	}
	var buf bytes.Buffer
	if err := doctorTemplate.Execute(&buf, doctorEnv{Dir: dir, NATS: emb.ClientURL(), Secret: "doctor-secret", Hook: hook, Sim: sim}); err != nil {
		t.Fatal(err)
	}
	var ad strings.Builder
	for _, d := range doms {
		ad.WriteString(d.yaml(dc.LDAPSURL, dc.CAFile, dc.BaseDN))
	}
	cfg := strings.Replace(buf.String(), "  domains:\n", "  domains:\n"+ad.String(), 1)
	if strings.Contains(cfg, "bind_password") {
		t.Fatal("the Kerberos config holds a bind password")
	}
	path := filepath.Join(dir, "doctor.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err = dispatch(context.Background(), []string{"doctor", "--config", path, "--timeout", "5s", "--webhook-ca", hookCA}, &out, &out)
	t.Logf("pwsync doctor:\n%s", out.String())
	if err == nil {
		t.Fatal("doctor passed, want the broken domains to fail")
	}
	o := out.String()
	for _, name := range []string{"ad krb-ok kerberos keytab", "ad krb-ok kerberos ticket", "ad krb-ok bind", "ad krb-ok dirsync"} {
		line(t, o, "PASS", name)
	}
	if d, _ := line(t, o, "PASS", "ad krb-ok bind"); !strings.Contains(d, "Kerberos as "+user.SAM+"@EXAMPLE.TEST") || !strings.Contains(d, "SPN ldap/") {
		t.Errorf("bind line: %q", d)
	}
	if d, _ := line(t, o, "PASS", "ad krb-ok kerberos keytab"); !strings.Contains(d, "aes256-cts-hmac-sha1-96") {
		t.Errorf("keytab line names no enctype: %q", d)
	}
	wantFix(t, o, "FAIL", "ad krb-stale kerberos ticket", "export it again", "samba-tool domain exportkeytab")
	line(t, o, "SKIP", "ad krb-stale bind")
	wantFix(t, o, "FAIL", "ad krb-other-keytab kerberos keytab", "ad.domains[2].kerberos.principal", "klist -k")
	wantFix(t, o, "FAIL", "ad krb-spn bind", "ad.domains[3].kerberos.spn")
	wantFix(t, o, "FAIL", "ad krb-no-kdc kerberos ticket", "ad.domains[4].kerberos.kdcs", "port 88")
}

// TestKrbFix pins the fix doctor prints per cause of a failed Kerberos bind.
func TestKrbFix(t *testing.T) {
	k := ldapconn.Kerberos{Realm: "EX.COM", Principal: "svc", KeytabFile: "/etc/pwsync/svc.keytab"}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"stale", fmt.Errorf("login: %w", ldapconn.ErrKeyRejected), "samba-tool domain exportkeytab <file> --principal=svc@EX.COM"},
		{"not_in_keytab", ldapconn.ErrNotInKeytab, "klist -k /etc/pwsync/svc.keytab"},
		{"skew", ldapconn.ErrClockSkew, "NTP"},
		{"strong_auth", &ldap.Error{ResultCode: ldap.LDAPResultStrongAuthRequired, Err: errors.New("Strong(er) authentication required")},
			"allow_sasl_without_tls_channel_bindings"},
		{"windows_channel_binding", &ldap.Error{ResultCode: ldap.LDAPResultInvalidCredentials, Err: errors.New("80090346: LdapErr: DSID-0C0906B5")},
			"LdapEnforceChannelBinding"},
		{"other", errors.New("LDAP Result Code 49"), "key.spn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := krbFix("key", k, tt.err); !strings.Contains(got, tt.want) {
				t.Fatalf("fix %q lacks %q", got, tt.want)
			}
		})
	}
}
