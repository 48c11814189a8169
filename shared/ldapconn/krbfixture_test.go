package ldapconn

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

// KrbFixture is a test account with its keytab, exported from the test DC,
// and a krb5.conf naming the DC's KDC.
type KrbFixture struct {
	DC       *adtest.DC
	User     adtest.User
	Realm    string // EXAMPLE.TEST
	Keytab   string
	KRB5Conf string
	KDC      string // 127.0.0.1:88
	HostName string // the DC's dnsHostName, DC1.example.test
	smbConf  string
	dir      string
}

// NewKrbFixture creates a user in an OU of its own and exports its keytab
// with samba-tool, which needs root and the DC's smb.conf on this machine:
// without them the test is skipped (failed under PWSYNC_REQUIRE_AD=1). It
// registers ldap/<dnsHostName> on the DC's account when missing, as Windows
// DCs have it (the test DC runs without Samba's SPN update service).
func NewKrbFixture(t *testing.T) *KrbFixture {
	t.Helper()
	dc := adtest.Require(t)
	f := &KrbFixture{DC: dc, Realm: dc.Realm, dir: t.TempDir()}
	if err := f.checkTools(); err != nil {
		if os.Getenv(adtest.RequireEnv) == "1" {
			t.Fatalf("Kerberos fixture: %v", err)
		}
		t.Skipf("Kerberos fixture not possible here: %v", err)
	}
	u, err := url.Parse(dc.LDAPSURL)
	if err != nil {
		t.Fatal(err)
	}
	f.KDC = u.Hostname() + ":88"
	f.HostName = f.ensureLDAPSPN(t)
	f.KRB5Conf = f.WriteKRB5Conf(t, "krb5.conf", "")
	f.User = dc.CreateUser(t, dc.NewOU(t), "krb", adtest.UserOpts{})
	f.Keytab = f.Export(t, f.User.SAM, "user.keytab")
	return f
}

func (f *KrbFixture) checkTools() error {
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

// Export writes sam's current keys to a new keytab file named name.
func (f *KrbFixture) Export(t *testing.T, sam, name string) string {
	t.Helper()
	path := filepath.Join(f.dir, name)
	os.Remove(path) // exportkeytab adds to an existing file
	f.sambaTool(t, "domain", "exportkeytab", path, "--principal="+sam)
	return path
}

func (f *KrbFixture) sambaTool(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "samba-tool", append(args, "-s", f.smbConf)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("samba-tool %s: %v\n%s", strings.Join(args, " "), err, out.Bytes())
	}
}

// WriteKRB5Conf writes a krb5.conf for the realm with the DC as its KDC;
// extra goes into [libdefaults].
func (f *KrbFixture) WriteKRB5Conf(t *testing.T, name, extra string) string {
	t.Helper()
	path := filepath.Join(f.dir, name)
	conf := fmt.Sprintf("[libdefaults]\n\tdefault_realm = %s\n\tdns_lookup_kdc = false\n%s\n[realms]\n\t%s = {\n\t\tkdc = %s\n\t}\n",
		f.Realm, extra, f.Realm, f.KDC)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// WriteKeytab writes a keytab for principal (in the realm) with a key from
// password: one the KDC may not know.
func (f *KrbFixture) WriteKeytab(t *testing.T, principal, password, name string) string {
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

// Kerberos is the fixture's bind configuration.
func (f *KrbFixture) Kerberos() *Kerberos {
	return &Kerberos{Realm: f.Realm, Principal: f.User.SAM, KeytabFile: f.Keytab, KRB5Conf: f.KRB5Conf}
}

// ensureLDAPSPN returns the DC's dnsHostName after making sure its
// account has ldap/<dnsHostName>.
func (f *KrbFixture) ensureLDAPSPN(t *testing.T) string {
	t.Helper()
	c := f.DC.Conn(t)
	host, err := dnsHostName(c)
	if err != nil {
		t.Fatalf("reading the DC's dnsHostName: %v", err)
	}
	res, err := c.Search(ldap.NewSearchRequest(f.DC.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		fmt.Sprintf("(&(objectClass=computer)(dNSHostName=%s))", ldap.EscapeFilter(host)), []string{"servicePrincipalName"}, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("finding the DC's account (%s): %d entries, %v", host, len(res.Entries), err)
	}
	spn := "ldap/" + host
	for _, v := range res.Entries[0].GetAttributeValues("servicePrincipalName") {
		if strings.EqualFold(v, spn) {
			return host
		}
	}
	m := ldap.NewModifyRequest(res.Entries[0].DN, nil)
	m.Add("servicePrincipalName", []string{spn})
	if err := c.Modify(m); err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultAttributeOrValueExists) {
		t.Fatalf("adding %s to %s: %v", spn, res.Entries[0].DN, err)
	}
	return host
}

// KerberosLogins is how many logins (AS exchanges) new clients made.
func KerberosLogins() int64 { return krbLogins.Load() }

// DestroyKerberosClient tears down k's cached client as an expired,
// unrenewable TGT would leave it: no ticket, no credentials.
func DestroyKerberosClient(t *testing.T, k Kerberos) {
	t.Helper()
	v, ok := krbSlots.Load(k.cacheKey())
	if !ok {
		t.Fatal("no cached Kerberos client")
	}
	slot := v.(*krbSlot)
	slot.mu.Lock()
	defer slot.mu.Unlock()
	slot.cur.cl.Destroy()
}
