package ldapconn

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/keytab"

	"github.com/pwsync/pwsync/testrig/krbtest"
)

func TestKerberosSplit(t *testing.T) {
	tests := []struct {
		name, principal, realm, defRealm string
		wantUser, wantRealm              string
		wantErr                          bool
	}{
		{name: "realm_field", principal: "svc", realm: "EX.COM", wantUser: "svc", wantRealm: "EX.COM"},
		{name: "principal_realm", principal: "svc@EX.COM", wantUser: "svc", wantRealm: "EX.COM"},
		{name: "both_agree", principal: "svc@EX.COM", realm: "EX.COM", wantUser: "svc", wantRealm: "EX.COM"},
		{name: "both_differ", principal: "svc@EX.COM", realm: "OTHER.COM", wantErr: true},
		{name: "krb5conf_default", principal: "svc", defRealm: "DEF.COM", wantUser: "svc", wantRealm: "DEF.COM"},
		{name: "no_realm", principal: "svc", wantErr: true},
		{name: "empty", principal: "", realm: "EX.COM", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf, _ := Kerberos{}.krb5Config("")
			conf.LibDefaults.DefaultRealm = tt.defRealm
			u, r, err := Kerberos{Principal: tt.principal, Realm: tt.realm}.split(conf)
			if tt.wantErr {
				if !errors.Is(err, ErrKerberosConfig) {
					t.Fatalf("err = %v, want a %v", err, ErrKerberosConfig)
				}
				return
			}
			if err != nil || u != tt.wantUser || r != tt.wantRealm {
				t.Fatalf("split = %q, %q, %v; want %q, %q", u, r, err, tt.wantUser, tt.wantRealm)
			}
		})
	}
}

// TestKerberosKDCs pins where the KDCs come from: the explicit list (port
// 88 added), else the krb5.conf, else DNS SRV records.
func TestKerberosKDCs(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "krb5.conf")
	if err := os.WriteFile(conf, []byte("[libdefaults]\n default_realm = EX.COM\n[realms]\n EX.COM = {\n  kdc = kdc1.ex.com\n }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		k        Kerberos
		realm    string
		wantKDCs []string
		wantDNS  bool
	}{
		{name: "explicit", k: Kerberos{KDCs: []string{"10.0.0.1", "kdc2.ex.com:8888", "[::1]"}}, realm: "EX.COM",
			wantKDCs: []string{"10.0.0.1:88", "kdc2.ex.com:8888", "[::1]:88"}},
		{name: "explicit_overrides_krb5conf", k: Kerberos{KRB5Conf: conf, KDCs: []string{"kdc9.ex.com"}}, realm: "EX.COM",
			wantKDCs: []string{"kdc9.ex.com:88"}},
		{name: "krb5conf", k: Kerberos{KRB5Conf: conf}, realm: "EX.COM", wantKDCs: []string{"kdc1.ex.com:88"}},
		{name: "krb5conf_other_realm_dns", k: Kerberos{KRB5Conf: conf}, realm: "OTHER.COM", wantDNS: true},
		{name: "dns", k: Kerberos{}, realm: "EX.COM", wantDNS: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.k.krb5Config(tt.realm)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range c.Realms {
				if r.Realm == tt.realm {
					got = r.KDC
				}
			}
			if !slices.Equal(got, tt.wantKDCs) || c.LibDefaults.DNSLookupKDC != tt.wantDNS {
				t.Fatalf("KDCs %v, DNS lookup %v; want %v, %v", got, c.LibDefaults.DNSLookupKDC, tt.wantKDCs, tt.wantDNS)
			}
		})
	}
	if _, err := (Kerberos{KRB5Conf: conf + ".absent"}).krb5Config("EX.COM"); !errors.Is(err, ErrKerberosConfig) {
		t.Fatalf("a missing krb5.conf: err = %v, want %v", err, ErrKerberosConfig)
	}
}

func TestKerberosClassify(t *testing.T) {
	tests := []struct {
		msg  string
		want error
	}{
		{"KRB Error: (6) KDC_ERR_C_PRINCIPAL_UNKNOWN Client not found", ErrPrincipalUnknown},
		{"KRB Error: (24) KDC_ERR_PREAUTH_FAILED Pre-authentication information was invalid", ErrKeyRejected},
		{"KRB Error: (7) KDC_ERR_S_PRINCIPAL_UNKNOWN Server not found", ErrSPNUnknown},
		{"KRB Error: (37) KRB_AP_ERR_SKEW Clock skew too great", ErrClockSkew},
		{"KRB Error: (18) KDC_ERR_CLIENT_REVOKED Clients credentials have been revoked", ErrAccountDisabled},
		{"[Root cause: Networking_Error] failed to communicate with KDC", ErrKDCUnreachable},
		{"LDAP Result Code 49 \"Invalid Credentials\"", nil},
	}
	for _, tt := range tests {
		t.Run(tt.msg, func(t *testing.T) {
			cause := errors.New(tt.msg)
			err := classify("doing", cause)
			if !errors.Is(err, cause) {
				t.Fatalf("%v does not wrap the cause", err)
			}
			for _, e := range []error{ErrPrincipalUnknown, ErrKeyRejected, ErrSPNUnknown, ErrClockSkew, ErrAccountDisabled, ErrKDCUnreachable} {
				if errors.Is(err, e) != (e == tt.want) {
					t.Fatalf("errors.Is(%v, %v) = %v", err, e, !(e == tt.want))
				}
			}
		})
	}
	if retryable(errors.New("KDC_ERR_S_PRINCIPAL_UNKNOWN")) || !retryable(errors.New("KRB_AP_ERR_TKT_EXPIRED")) {
		t.Fatal("an unknown SPN must not be retried with a new login, an expired ticket must")
	}
}

func TestKerberosSPN(t *testing.T) {
	tests := []struct{ spn, url, want string }{
		{spn: "ldap/dc9.ex.com", url: "ldaps://10.0.0.1:636", want: "ldap/dc9.ex.com"},
		{url: "ldaps://dc1.ex.com:636", want: "ldap/dc1.ex.com"},
		{url: "ldap://DC2.ex.com", want: "ldap/DC2.ex.com"},
	}
	for _, tt := range tests {
		got, err := Kerberos{SPN: tt.spn}.spnFor(nil, tt.url) // no rootDSE read for these
		if err != nil || got != tt.want {
			t.Errorf("spnFor(%q, %q) = %q, %v; want %q", tt.spn, tt.url, got, err, tt.want)
		}
	}
}

// TestKerberosRenewal pins that one client serves every dial, that a
// client whose TGT is gone (expired past renewal, torn down) is replaced by
// a new login on the next dial, and that a keytab exported anew (the
// account's password changed) is read without a restart.
func TestKerberosRenewal(t *testing.T) {
	f := krbtest.Require(t)
	user, kt := f.NewUser(t, "krbrenew")
	k := Kerberos{Realm: f.Realm, Principal: user.SAM, KeytabFile: kt, KRB5Conf: f.KRB5Conf}
	dial := func(t *testing.T) {
		t.Helper()
		tc, err := TLSConfig(f.DC.LDAPSURL, f.DC.CAFile, false)
		if err != nil {
			t.Fatal(err)
		}
		c, err := Dial(Config{URL: f.DC.LDAPSURL, Kerberos: &k, DialTimeout: 5 * time.Second}, tc)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	steps := []struct {
		name       string
		before     func(t *testing.T)
		wantLogins int64
	}{
		{name: "first_dial_logs_in", wantLogins: 1},
		{name: "second_dial_reuses", wantLogins: 0},
		{name: "tgt_destroyed_logs_in_again", before: func(t *testing.T) { DestroyKerberosClient(t, k) }, wantLogins: 1},
		{name: "keytab_reexported", before: func(t *testing.T) {
			f.DC.ResetPassword(t, user.DN, "Renewed.Passw0rd-3", false)
			time.Sleep(10 * time.Millisecond) // a new mtime even on coarse clocks
			f.Export(t, user.SAM, filepath.Base(kt))
		}, wantLogins: 1},
		{name: "then_reused", wantLogins: 0},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.before != nil {
				s.before(t)
			}
			n := KerberosLogins()
			dial(t)
			if got := KerberosLogins() - n; got != s.wantLogins {
				t.Fatalf("%d logins, want %d", got, s.wantLogins)
			}
		})
	}
}

// TestKerberosTicketExpiry dials every 30s for 8 minutes with a 6-minute,
// unrenewable TGT: the dials past its end bind only if gokrb5 logged in
// anew from the keytab. Samba's KDC refuses lifetimes under 5 minutes, so
// it is opt-in: PWSYNC_KRB_EXPIRY_TEST=1.
func TestKerberosTicketExpiry(t *testing.T) {
	if os.Getenv("PWSYNC_KRB_EXPIRY_TEST") != "1" {
		t.Skip("set PWSYNC_KRB_EXPIRY_TEST=1 to wait for a ticket to expire (over 5 minutes)")
	}
	f := krbtest.Require(t)
	user, kt := f.NewUser(t, "krbexpiry")
	k := Kerberos{Realm: f.Realm, Principal: user.SAM, KeytabFile: kt}
	k.KRB5Conf = f.WriteKRB5Conf(t, "short.krb5.conf", "\tticket_lifetime = 6m\n\trenew_lifetime = 0")
	tc, err := TLSConfig(f.DC.LDAPSURL, f.DC.CAFile, false)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(8 * time.Minute)
	for i := 0; time.Now().Before(deadline); i++ {
		c, err := Dial(Config{URL: f.DC.LDAPSURL, Kerberos: &k, DialTimeout: 5 * time.Second}, tc)
		if err != nil {
			t.Fatalf("dial %d at %s: %v", i, time.Now().Format(time.TimeOnly), err)
		}
		c.Close()
		t.Logf("dial %d bound at %s", i, time.Now().Format(time.TimeOnly))
		time.Sleep(30 * time.Second)
	}
}

func TestInspectKeytab(t *testing.T) {
	type key struct {
		principal string
		kvno      uint8
		etype     int32
	}
	tests := []struct {
		name      string
		keys      []key
		wantKVNO  uint32
		wantTypes []string
		wantWeak  bool
		wantErr   error
	}{
		{name: "aes", keys: []key{{"svc", 2, 18}, {"svc", 2, 17}}, wantKVNO: 2,
			wantTypes: []string{"aes256-cts-hmac-sha1-96", "aes128-cts-hmac-sha1-96"}},
		{name: "rc4_only_is_weak", keys: []key{{"svc", 1, 23}}, wantKVNO: 1, wantTypes: []string{"rc4-hmac"}, wantWeak: true},
		{name: "newest_version", keys: []key{{"svc", 1, 23}, {"svc", 3, 18}, {"other", 9, 18}}, wantKVNO: 3,
			wantTypes: []string{"aes256-cts-hmac-sha1-96"}},
		{name: "principal_missing", keys: []key{{"other", 1, 18}}, wantErr: ErrNotInKeytab},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kt := keytab.New()
			for _, k := range tt.keys {
				if err := kt.AddEntry(k.principal, "EX.COM", "Some.Passw0rd-1", time.Now(), k.kvno, k.etype); err != nil {
					t.Fatal(err)
				}
			}
			b, err := kt.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "k.keytab")
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			info, err := InspectKeytab(Kerberos{Realm: "EX.COM", Principal: "svc", KeytabFile: path})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || info.KVNO != tt.wantKVNO || !slices.Equal(info.EncTypes, tt.wantTypes) || info.Weak != tt.wantWeak {
				t.Fatalf("info = %+v, %v; want kvno %d, %v, weak %v", info, err, tt.wantKVNO, tt.wantTypes, tt.wantWeak)
			}
		})
	}
}
