package main

import (
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/testrig/adtest"
)

// TestUndoWaitsForTheCloud: after a forced change, a new AD password ends
// pwsync's block only when the cloud has a new password (issue 19). Synced
// bob leaves the pending group once password hash sync shows in Entra, not
// before; synced eve, whose hash never arrives, leaves it at the bound with
// an alert; cloud-managed alice keeps the must-change flag (pwsync never
// clears it) until she changes the cloud password, which pwsync records.
func TestUndoWaitsForTheCloud(t *testing.T) {
	const bound = 25 * time.Second
	// alice's flag may not take (the flag-only PATCH): the chain then blocks her too
	s := newStack(t, stackOpts{Webhook: true, Fallback: "chain", Undo: &undoOpts{AwaitCloud: bound},
		DedupWindow: time.Second})
	s.opts.NATSListen = freeAddr(t)
	const pw = "Start.Passw0rd-1"
	bob := s.dc.CreateUser(t, s.ou, "undo-bob", adtest.UserOpts{Password: pw})
	eve := s.dc.CreateUser(t, s.ou, "undo-eve", adtest.UserOpts{Password: pw})
	alice := s.dc.CreateUser(t, s.ou, "undo-alice", adtest.UserOpts{Password: pw})
	bobID, eveID, aliceID := s.cloudUser(bob, true), s.cloudUser(eve, true), s.cloudUser(alice, false)
	s.startInProcess(t)
	waitFor(t, 20*time.Second, "a subscription to pwsync's webhook", func() bool { return len(s.sim.Subscriptions()) == 1 })
	time.Sleep(time.Second) // the first delta round joined the cloud side

	reset := time.Now()
	for _, u := range []adtest.User{bob, eve, alice} {
		s.dc.ForceChange(t, u.DN)
	}
	inGroup := func(id string) bool { return contains(s.sim.GroupMembers(pendingGroup), id) }
	flagged := func(id string) bool {
		u, _ := s.sim.User(id)
		return u.ForceChangePasswordNextSignIn
	}
	blocked := func(id string) bool { return flagged(id) || inGroup(id) }
	waitFor(t, 20*time.Second, "bob and eve in the pending group, alice flagged or blocked", func() bool {
		return inGroup(bobID) && inGroup(eveID) && blocked(aliceID)
	})
	aliceFlagged := flagged(aliceID)

	changed := time.Now()
	for _, u := range []adtest.User{bob, eve, alice} {
		s.dc.ResetPassword(t, u.DN, "Changed.Passw0rd-2", false)
	}
	time.Sleep(5 * time.Second) // far longer than the 15-30 ms the undo used to take
	if !inGroup(bobID) || !inGroup(eveID) {
		t.Fatalf("the block was lifted at AD's change, before Entra had the new password: %v", s.sim.GroupMembers(pendingGroup))
	}
	if flagged(aliceID) != aliceFlagged || !blocked(aliceID) {
		t.Fatal("alice's cloud must-change was undone at AD's change")
	}

	// password hash sync carries bob's new password to Entra
	gu, _ := s.sim.User(bobID)
	gu.LastPasswordChangeDateTime = time.Now().UTC()
	s.sim.PutUser(gu)
	t.Cleanup(func() {
		if t.Failed() {
			js := natsConn(t, "nats://"+s.opts.NATSListen).JS
			for _, m := range streamMsgs(t, js, "EVENTS") {
				if strings.Contains(string(m.Data), "cloud-undo-") && strings.Contains(string(m.Data), `"type":"user"`) {
					t.Logf("event: %s", m.Data)
				}
			}
			for _, r := range auditRecords(t, js) {
				if strings.HasPrefix(r.User.UPN, "undo-") {
					t.Logf("audit: %s %s %s %s %s %s", r.User.UPN, r.Kind, r.Rule, r.Step, r.Outcome, r.Detail)
				}
			}
		}
	})
	waitFor(t, 15*time.Second, "bob out of the pending group after hash sync", func() bool { return !inGroup(bobID) })
	if time.Since(changed) >= bound {
		t.Fatalf("bob left the group only at the bound (%v after AD's change)", time.Since(changed))
	}
	if !inGroup(eveID) {
		t.Fatal("eve left the group although Entra does not have her new password")
	}

	waitFor(t, bound+20*time.Second, "eve out of the pending group at the bound", func() bool { return !inGroup(eveID) })
	if took := time.Since(changed); took < bound-time.Second {
		t.Fatalf("eve left the group %v after AD's change, before the %v bound", took, bound)
	}

	// alice changes her cloud password (later than pwsync's own writes
	// could be): Entra clears the flag itself
	if !blocked(aliceID) {
		t.Fatal("alice's block was lifted before she changed the cloud password")
	}
	time.Sleep(time.Until(reset.Add(45 * time.Second))) // past the 30 s taken for pwsync's own write
	gu, _ = s.sim.User(aliceID)
	gu.LastPasswordChangeDateTime, gu.ForceChangePasswordNextSignIn = time.Now().UTC(), false
	s.sim.PutUser(gu)
	waitFor(t, 15*time.Second, "alice's block lifted after her cloud change", func() bool { return !blocked(aliceID) })

	js := natsConn(t, "nats://"+s.opts.NATSListen).JS
	var aliceDone, eveAlert, bobWait bool
	waitFor(t, 10*time.Second, "the audit of the waits, the cloud change and the alert", func() bool {
		for _, r := range auditRecords(t, js) {
			switch {
			case r.User.UPN == bob.UPN && r.Kind == "decision" && r.Outcome == "wait" && strings.Contains(r.Detail, "password hash sync"):
				bobWait = true
			case r.User.UPN == alice.UPN && r.Kind == "decision" && r.Outcome == "act" && strings.Contains(r.Detail, "changed the cloud password"):
				aliceDone = true
			case r.User.UPN == eve.UPN && r.Rule == "password-hash-sync" && r.Kind == "decision":
				eveAlert = true
			}
		}
		return bobWait && aliceDone && eveAlert
	})
	for _, id := range []string{bobID, eveID} {
		if n := s.countRequests(id, "DELETE"); n != 1 {
			t.Errorf("%s: %d group removals, want 1", id, n)
		}
	}
	for _, r := range s.requestsFor(aliceID) {
		if r.Method == "PATCH" && strings.Contains(string(r.Body), `"forceChangePasswordNextSignIn":false`) {
			t.Errorf("pwsync cleared alice's flag: %s", r.Body)
		}
	}
}

// countRequests counts a cloud user's requests of one method.
func (s *stack) countRequests(cloudID, method string) int {
	n := 0
	for _, r := range s.requestsFor(cloudID) {
		if r.Method == method {
			n++
		}
	}
	return n
}
