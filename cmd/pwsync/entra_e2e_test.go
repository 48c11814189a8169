package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/testrig/adtest"
)

// TestEntraGroupScopeEndToEnd: scope by Entra group only (the test OU is
// not included). alice is in a group nested in the included one, bob in
// none: a helpdesk reset reaches alice's cloud account and sends her the
// "your password was reset" notice; bob's is never touched nor mailed.
// `pwsync policy explain` shows each one's Entra group membership.
func TestEntraGroupScopeEndToEnd(t *testing.T) {
	const parent, child = "e17a0000-0000-4000-8000-000000000001", "e17a0000-0000-4000-8000-000000000002"
	s := newStack(t, stackOpts{Webhook: true, NoOUScope: true, EntraGroups: []string{parent}, Notify: true, NATSListen: freeAddr(t)})
	const pw = "Start.Passw0rd-1"
	alice := s.dc.CreateUser(t, s.ou, "ent-alice", adtest.UserOpts{Password: pw})
	bob := s.dc.CreateUser(t, s.ou, "ent-bob", adtest.UserOpts{Password: pw})
	// synced: joined by onPremisesImmutableId from the first delta round
	aliceID, bobID := s.cloudUser(alice, true), s.cloudUser(bob, true)
	for _, id := range []string{aliceID, bobID} {
		s.mailbox(id, "")
		u, _ := s.sim.User(id)
		u.PasswordPolicies = "None" // in step with AD: the never-expires rule has nothing to do
		s.sim.PutUser(u)
	}
	s.sim.PutGroup(parent, "Password pilot")
	s.sim.PutGroup(child, "Password pilot EMEA")
	if err := s.sim.AddNestedGroup(parent, child); err != nil {
		t.Fatal(err)
	}
	if err := s.sim.AddGroupMember(child, aliceID); err != nil {
		t.Fatal(err)
	}
	s.startInProcess(t)

	explain := func(upn string) string {
		var b bytes.Buffer
		if err := dispatch(context.Background(), []string{"policy", "explain", "--config", s.cfgPath, upn}, &b, &b); err != nil {
			t.Fatalf("policy explain %s: %v\n%s", upn, err, b.String())
		}
		return b.String()
	}
	var ea, eb string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		ea, eb = explain(alice.UPN), explain(bob.UPN)
		if strings.Contains(ea, "Entra account "+aliceID) && strings.Contains(eb, "Entra account "+bobID) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cloud accounts not joined:\n%s\n%s", ea, eb)
		}
	}
	for _, c := range []struct{ out, want string }{
		{ea, "Scope: in scope (member of an included Entra group)"},
		{ea, "member of included Entra groups (transitive): " + parent},
		{eb, "Scope: OUT of scope"},
		{eb, "not a member of included Entra groups: " + parent},
	} {
		if !strings.Contains(c.out, c.want) {
			t.Errorf("policy explain lacks %q:\n%s", c.want, c.out)
		}
	}

	s.dc.ForceChange(t, alice.DN)
	s.dc.ForceChange(t, bob.DN)
	s.waitWrites(t, aliceID, []string{"POST revoke 200", "POST members 204"}, 1500*time.Millisecond)
	s.waitMails(t, []string{alice.UPN + ": Your password was reset"})
	if w := s.writes(bobID); len(w) != 0 {
		t.Errorf("bob (in no included group) written: %v", w)
	}
}
