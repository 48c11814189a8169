// Package krbtest gives tests Kerberos material for the Samba DC of
// testrig/adtest: keytabs exported from the DC, a krb5.conf naming its KDC,
// and the DC's ldap/ SPN. Import it from _test.go files only.
package krbtest

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/jcmturner/gokrb5/v8/keytab"

	"github.com/pwsync/pwsync/testrig/adtest"
)

// Fixture is the DC's realm and KDC, ready for keytabs.
type Fixture struct {
	DC       *adtest.DC
	Realm    string // EXAMPLE.TEST
	KDC      string // 127.0.0.1:88
	HostName string // the DC's dnsHostName, DC1.example.test
	KRB5Conf string // a krb5.conf for Realm with KDC, no DNS
	smbConf  string
	dir      string
}

// Require returns the fixture of the adtest DC. Exporting keytabs takes
// root and samba-tool with the DC's smb.conf on this machine: without them
// the test is skipped (failed under PWSYNC_REQUIRE_AD=1). It registers
// ldap/<dnsHostName> on the DC's account when missing, as Windows DCs have
// it (scripts/samba-ad runs Samba without its SPN update service).
func Require(t testing.TB) *Fixture {
	t.Helper()
	dc := adtest.Require(t)
	f := &Fixture{DC: dc, Realm: dc.Realm, dir: t.TempDir()}
	if err := f.checkTools(); err != nil {
		if os.Getenv(adtest.RequireEnv) == "1" {
			t.Fatalf("krbtest: %v", err)
		}
		t.Skipf("krbtest: no keytabs here: %v", err)
	}
	u, err := url.Parse(dc.LDAPSURL)
	if err != nil {
		t.Fatal(err)
	}
	f.KDC = u.Hostname() + ":88"
	f.HostName = f.ensureLDAPSPN(t)
	f.KRB5Conf = f.WriteKRB5Conf(t, "krb5.conf", "")
	return f
}

func (f *Fixture) checkTools() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("samba-tool domain exportkeytab needs root")
	}
	if _, err := exec.LookPath("samba-tool"); err != nil {
		return err
	}
	f.smbConf = os.Getenv("SAMBA_AD_SMB_CONF")
	if f.smbConf == "" {
		f.smbConf = filepath.Join(f.DC.Dir, "etc", "smb.conf")
	}
	_, err := os.Stat(f.smbConf)
	return err
}

// NewUser creates an enabled user in an OU of its own and exports its keytab.
func (f *Fixture) NewUser(t testing.TB, sam string) (adtest.User, string) {
	t.Helper()
	u := f.DC.CreateUser(t, f.DC.NewOU(t), sam, adtest.UserOpts{})
	return u, f.Export(t, u.SAM, u.SAM+".keytab")
}

// Export writes sam's current keys (mode 600) to the keytab file name in
// the fixture's directory, replacing it.
func (f *Fixture) Export(t testing.TB, sam, name string) string {
	t.Helper()
	path := filepath.Join(f.dir, name)
	os.Remove(path) // exportkeytab adds to an existing file
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "samba-tool", "domain", "exportkeytab", path, "--principal="+sam, "-s", f.smbConf)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("krbtest: exporting the keytab of %s: %v\n%s", sam, err, out.Bytes())
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// WriteKRB5Conf writes a krb5.conf for the realm with the DC as its KDC;
// extra goes into [libdefaults].
func (f *Fixture) WriteKRB5Conf(t testing.TB, name, extra string) string {
	t.Helper()
	path := filepath.Join(f.dir, name)
	conf := fmt.Sprintf("[libdefaults]\n\tdefault_realm = %s\n\tdns_lookup_kdc = false\n%s\n[realms]\n\t%s = {\n\t\tkdc = %s\n\t}\n",
		f.Realm, extra, f.Realm, f.KDC)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// WriteKeytab writes a keytab for principal in the realm with an AES key
// from password: one the KDC does not know.
func (f *Fixture) WriteKeytab(t testing.TB, principal, password, name string) string {
	t.Helper()
	kt := keytab.New()
	if err := kt.AddEntry(principal, f.Realm, password, time.Now(), 1, 18); err != nil {
		t.Fatal(err)
	}
	b, err := kt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(f.dir, name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ensureLDAPSPN returns the DC's dnsHostName after making sure every DC's
// account (a second DC's too) has ldap/<its dnsHostName>.
func (f *Fixture) ensureLDAPSPN(t testing.TB) string {
	t.Helper()
	c := f.DC.Conn(t)
	root, err := c.Search(ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"dnsHostName"}, nil))
	if err != nil || len(root.Entries) != 1 || root.Entries[0].GetAttributeValue("dnsHostName") == "" {
		t.Fatalf("krbtest: reading the DC's dnsHostName: %v", err)
	}
	// userAccountControl SERVER_TRUST_ACCOUNT (8192): the DCs' accounts
	res, err := c.Search(ldap.NewSearchRequest(f.DC.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(&(objectClass=computer)(userAccountControl:1.2.840.113556.1.4.803:=8192))", []string{"dNSHostName", "servicePrincipalName"}, nil))
	if err != nil || len(res.Entries) == 0 {
		t.Fatalf("krbtest: finding the DCs' accounts: %d, %v", len(res.Entries), err)
	}
	for _, e := range res.Entries {
		if host := e.GetAttributeValue("dNSHostName"); host != "" {
			addSPN(t, c, e, "ldap/"+host)
		}
	}
	return root.Entries[0].GetAttributeValue("dnsHostName")
}

func addSPN(t testing.TB, c *ldap.Conn, e *ldap.Entry, spn string) {
	t.Helper()
	for _, v := range e.GetAttributeValues("servicePrincipalName") {
		if strings.EqualFold(v, spn) {
			return
		}
	}
	m := ldap.NewModifyRequest(e.DN, nil)
	m.Add("servicePrincipalName", []string{spn})
	if err := c.Modify(m); err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultAttributeOrValueExists) {
		t.Fatalf("krbtest: adding %s to %s: %v", spn, e.DN, err)
	}
}
