package ldapconn_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/pwsync/pwsync/shared/ldapconn"
	"github.com/pwsync/pwsync/testrig/krbtest"
)

// TestKerberosBind binds with GSSAPI against the test DC's KDC: the bound
// connection reads what an anonymous one may not, and each wrong setting
// fails with its cause.
func TestKerberosBind(t *testing.T) {
	f := krbtest.Require(t)
	dc := f.DC
	user, userKT := f.NewUser(t, "krb")
	garbage := filepath.Join(t.TempDir(), "garbage.keytab")
	if err := os.WriteFile(garbage, []byte("not a keytab"), 0o600); err != nil {
		t.Fatal(err)
	}
	// another account's keytab, and one whose password changed since
	_, otherKT := f.NewUser(t, "krbother")
	stale, staleKT := f.NewUser(t, "krbstale")
	dc.ResetPassword(t, stale.DN, "Stale.Passw0rd-2", false)
	unknownKT := f.WriteKeytab(t, "svc-nobody-here", "Some.Passw0rd-1", "unknown.keytab")

	base := ldapconn.Kerberos{Realm: f.Realm, Principal: user.SAM, KeytabFile: userKT, KRB5Conf: f.KRB5Conf}
	with := func(mod func(k *ldapconn.Kerberos)) *ldapconn.Kerberos {
		k := base
		mod(&k)
		return &k
	}
	tests := []struct {
		name        string
		url         string
		startTLS    bool
		krb         *ldapconn.Kerberos
		wantErr     error
		wantNetwork bool
	}{
		{name: "ldaps_spn_from_rootdse", url: dc.LDAPSURL, krb: &base},
		{name: "start_tls", url: dc.LDAPURL, startTLS: true, krb: &base},
		{name: "spn_explicit", url: dc.LDAPSURL, krb: with(func(k *ldapconn.Kerberos) { k.SPN = "host/" + f.HostName })},
		{name: "principal_at_realm_no_krb5conf", url: dc.LDAPSURL, krb: with(func(k *ldapconn.Kerberos) {
			k.Principal, k.Realm, k.KRB5Conf, k.KDCs = user.SAM+"@"+f.Realm, "", "", []string{strings.TrimSuffix(f.KDC, ":88")}
		})},
		{name: "keytab_missing", url: dc.LDAPSURL, krb: with(func(k *ldapconn.Kerberos) { k.KeytabFile = garbage + ".absent" }),
			wantErr: ldapconn.ErrKeytab},
		{name: "keytab_garbage", url: dc.LDAPSURL, krb: with(func(k *ldapconn.Kerberos) { k.KeytabFile = garbage }),
			wantErr: ldapconn.ErrKeytab},
		{name: "keytab_of_another_account", url: dc.LDAPSURL, krb: with(func(k *ldapconn.Kerberos) { k.KeytabFile = otherKT }),
			wantErr: ldapconn.ErrNotInKeytab},
		{name: "keytab_stale", url: dc.LDAPSURL, krb: with(func(k *ldapconn.Kerberos) { k.Principal, k.KeytabFile = stale.SAM, staleKT }),
			wantErr: ldapconn.ErrKeyRejected},
		{name: "principal_unknown", url: dc.LDAPSURL, krb: with(func(k *ldapconn.Kerberos) {
			k.Principal, k.KeytabFile = "svc-nobody-here", unknownKT
		}), wantErr: ldapconn.ErrPrincipalUnknown},
		{name: "realm_mismatch", url: dc.LDAPSURL, krb: with(func(k *ldapconn.Kerberos) { k.Principal = user.SAM + "@OTHER.TEST" }),
			wantErr: ldapconn.ErrKerberosConfig},
		{name: "kdc_unreachable", url: dc.LDAPSURL, krb: with(func(k *ldapconn.Kerberos) {
			k.KRB5Conf, k.KDCs = "", []string{closedPort(t)}
		}), wantErr: ldapconn.ErrKDCUnreachable, wantNetwork: true},
		{name: "spn_unknown", url: dc.LDAPSURL, krb: with(func(k *ldapconn.Kerberos) { k.SPN = "ldap/nohost." + strings.ToLower(f.Realm) }),
			wantErr: ldapconn.ErrSPNUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc, err := ldapconn.TLSConfig(tt.url, dc.CAFile, false)
			if err != nil {
				t.Fatal(err)
			}
			c, err := ldapconn.Dial(ldapconn.Config{URL: tt.url, StartTLS: tt.startTLS, Kerberos: tt.krb,
				DialTimeout: 5 * time.Second, RequestTimeout: 30 * time.Second}, tc)
			if tt.wantErr != nil {
				if err == nil {
					c.Close()
					t.Fatalf("dial succeeded, want %v", tt.wantErr)
				}
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v\nwant one that is %q", err, tt.wantErr)
				}
				t.Logf("error, as logged: %v", err)
				if got := ldapconn.IsNetwork(err); got != tt.wantNetwork {
					t.Fatalf("IsNetwork(%v) = %v, want %v", err, got, tt.wantNetwork)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if dn := findAccount(t, c, dc.BaseDN, user.SAM); !strings.EqualFold(dn, user.DN) {
				t.Fatalf("the bound connection found %q for %s, want %q", dn, user.SAM, user.DN)
			}
		})
	}
	t.Run("anonymous_cannot", func(t *testing.T) {
		// without this, a bind that silently stayed anonymous would pass above
		tc, err := ldapconn.TLSConfig(dc.LDAPSURL, dc.CAFile, false)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ldapconn.Connect(ldapconn.Config{URL: dc.LDAPSURL}, tc)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		res, err := c.Search(accountSearch(dc.BaseDN, user.SAM))
		if err == nil && len(res.Entries) > 0 {
			t.Fatalf("an anonymous search found %s: the Kerberos cases prove nothing", user.SAM)
		}
	})
}

func accountSearch(base, sam string) *ldap.SearchRequest {
	return ldap.NewSearchRequest(base, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(sAMAccountName="+ldap.EscapeFilter(sam)+")", []string{"distinguishedName"}, nil)
}

func findAccount(t *testing.T, c *ldap.Conn, base, sam string) string {
	t.Helper()
	res, err := c.Search(accountSearch(base, sam))
	if err != nil {
		t.Fatalf("searching for %s on the Kerberos-bound connection: %v", sam, err)
	}
	if len(res.Entries) != 1 {
		t.Fatalf("searching for %s: %d entries", sam, len(res.Entries))
	}
	return res.Entries[0].DN
}
