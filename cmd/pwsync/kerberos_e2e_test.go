package main

import (
	"os"
	"strings"
	"testing"

	"github.com/pwsync/pwsync/testrig/adtest"
	"github.com/pwsync/pwsync/testrig/krbtest"
)

// TestKerberosOnlyEndToEnd runs a helpdesk reset end to end with a config
// that holds no bind password anywhere: the watcher binds with the
// administrator's keytab (Kerberos over LDAPS) and the reset reaches Graph.
func TestKerberosOnlyEndToEnd(t *testing.T) {
	f := krbtest.Require(t)
	keytab := f.Export(t, "Administrator", "administrator.keytab")
	s := newStack(t, stackOpts{Undo: undoAtADChange,
		Kerberos: &krbOpts{Principal: "Administrator", KeytabFile: keytab, KRB5Conf: f.KRB5Conf}})
	t.Setenv("PWSYNC_TEST_AD_PASSWORD", "") // nothing to fall back on
	const pw = "Start.Passw0rd-1"
	alice := s.dc.CreateUser(t, s.ou, "e2e-krb-alice", adtest.UserOpts{Password: pw})
	aliceID := s.cloudUser(alice, false)
	s.startInProcess(t)
	cfg, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, forbidden := range []string{"bind_password", "bind_dn", s.dc.BindPassword} {
		if strings.Contains(string(cfg), forbidden) {
			t.Fatalf("the Kerberos-only config holds %q", forbidden)
		}
	}
	s.dc.ForceChange(t, alice.DN)
	s.waitWrites(t, aliceID, cloudResetWrites, 0)
}
