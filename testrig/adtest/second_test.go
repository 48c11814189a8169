package adtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReplicationBothWays: a user created on the first DC is on the second,
// one created on the second is on the first, and a password reset on the
// second reaches the first (pwdLastSet), each within ReplicationTimeout.
func TestReplicationBothWays(t *testing.T) {
	dc1 := Require(t)
	dc2 := RequireSecond(t)
	dc2.Hold(t)
	if dc1.IP == dc2.IP || dc1.LDAPSURL == dc2.LDAPSURL {
		t.Fatalf("both DCs at %s", dc1.LDAPSURL)
	}
	ou := dc1.NewOU(t)
	d := dc2.WaitReplicated(t, ou, "", "")
	t.Logf("OU created on %s: on %s after %v", dc1.IP, dc2.IP, d)

	u1 := dc1.CreateUser(t, ou, "repl-a", UserOpts{})
	d12 := dc2.WaitReplicated(t, u1.DN, "sAMAccountName", u1.SAM)

	u2 := dc2.CreateUser(t, ou, "repl-b", UserOpts{})
	d21 := dc1.WaitReplicated(t, u2.DN, "sAMAccountName", u2.SAM)

	// a helpdesk reset on the second DC: the first DC sees the new pwdLastSet
	dc2.ResetPassword(t, u1.DN, "Other.Passw0rd-2", false)
	pls := dc2.Read(t, u1.DN, "pwdLastSet").GetAttributeValue("pwdLastSet")
	dReset := dc1.WaitReplicated(t, u1.DN, "pwdLastSet", pls)
	t.Logf("user: %s -> %s %v, %s -> %s %v; reset on %s seen on %s after %v",
		dc1.IP, dc2.IP, d12, dc2.IP, dc1.IP, d21, dc2.IP, dc1.IP, dReset)
}

// TestKillAndStartSecond: the second DC killed refuses connections; started
// again, it serves and pulls a change made on the first while it was down.
func TestKillAndStartSecond(t *testing.T) {
	dc1 := Require(t)
	dc2 := RequireSecond(t)
	ou := dc1.NewOU(t)
	dc2.WaitReplicated(t, ou, "", "")

	killed := time.Now()
	dc2.Kill(t)
	t.Logf("second DC killed in %v", time.Since(killed))
	if dc2.listening() {
		t.Fatal("the second DC still accepts LDAPS after Kill")
	}
	u := dc1.CreateUser(t, ou, "while-down", UserOpts{})

	start := time.Now()
	dc2.Start(t)
	up := time.Since(start)
	d := dc2.WaitReplicated(t, u.DN, "sAMAccountName", u.SAM)
	t.Logf("second DC: LDAP up %v after Start; a user created while it was down there %v later", up, d)
}

// TestKerberosKeytab: the exported keytab gets a ticket from each DC's KDC on
// its own (kinit -k, MIT's client), and service tickets for both DCs' LDAP SPNs.
func TestKerberosKeytab(t *testing.T) {
	k := RequireKerberos(t)
	if _, err := exec.LookPath("kinit"); err != nil {
		t.Skip("kinit not installed (krb5-user)")
	}
	conf, err := os.ReadFile(k.KRB5Conf)
	if err != nil {
		t.Fatal(err)
	}
	for _, kdc := range k.KDCs {
		if !strings.Contains(string(conf), "kdc = "+kdc) {
			t.Errorf("%s does not name the KDC %s", k.KRB5Conf, kdc)
		}
	}
	spns := []string{k.LDAPSPN}
	if k.LDAPSPN2 != "" {
		spns = append(spns, k.LDAPSPN2)
	}
	for _, kdc := range k.KDCs {
		dir := t.TempDir()
		one := filepath.Join(dir, "krb5.conf")
		// the same file with this KDC only
		var b strings.Builder
		for _, line := range strings.Split(string(conf), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == "kdc" && f[2] != kdc {
				continue
			}
			b.WriteString(line + "\n")
		}
		if err := os.WriteFile(one, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		env := append(os.Environ(), "KRB5_CONFIG="+one, "KRB5CCNAME=FILE:"+filepath.Join(dir, "ccache"))
		run := func(name string, args ...string) {
			cmd := exec.Command(name, args...)
			cmd.Env = env
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("KDC %s: %s %s: %v\n%s", kdc, name, strings.Join(args, " "), err, out)
			}
		}
		run("kinit", "-k", "-t", k.Keytab, k.Principal)
		for _, spn := range spns {
			run("kvno", spn)
		}
	}
}
