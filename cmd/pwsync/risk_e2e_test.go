package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pwsync/pwsync/testrig/adtest"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// riskYAML: Identity Protection polled every second, high leaked
// credentials act, at most riskCap actions an hour before approval.
const (
	riskPoll  = time.Second
	riskCap   = 3
	riskYAML  = "risk: {enabled: true, poll_interval: 1s, levels: [high], detection_types: [leakedCredentials], hourly_cap: 3, notify: false, dismiss_after_change: true}"
	riskGrace = time.Second // the bound: one poll interval plus a second
)

// TestRiskySyncedUserMustChangeInAD runs issue 17 end to end on Samba and
// the simulator: a leaked-credentials detection on a synced user makes AD
// demand a new password (pwdLastSet 0) exactly once, and the forced-change
// chain follows; a break-glass user is untouched; a storm above the hourly
// cap is held for approval.
func TestRiskySyncedUserMustChangeInAD(t *testing.T) {
	if time.Now().Minute() == 59 {
		time.Sleep(70 * time.Second) // the cap counts per clock hour: do not straddle one
	}
	s := newStack(t, stackOpts{ExtraYAML: riskYAML, Undo: undoAtADChange})
	const pw = "Start.Passw0rd-1"
	alice := s.dc.CreateUser(t, s.ou, "risk-alice", adtest.UserOpts{Password: pw})
	dave := s.dc.CreateUser(t, s.ou, "risk-dave", adtest.UserOpts{Password: pw})
	bob := s.dc.CreateUser(t, s.ou, "risk-bob", adtest.UserOpts{Password: pw})
	var storm []adtest.User
	for _, n := range []string{"risk-s1", "risk-s2", "risk-s3"} {
		storm = append(storm, s.dc.CreateUser(t, s.ou, n, adtest.UserOpts{Password: pw}))
	}
	aliceID := s.cloudUser(alice, true)
	daveID := s.cloudUser(dave, true)
	bobID := s.cloudUser(bob, false) // cloud-managed: joined by UPN
	for _, u := range storm {
		s.cloudUser(u, true)
	}
	s.opts.BreakGlassUPNs = []string{dave.UPN}
	s.startInProcess(t)
	time.Sleep(2 * riskPoll) // the poller's first round, with nothing at risk

	t.Run("a_leaked_credentials_detection_makes_AD_demand_a_change", func(t *testing.T) {
		if _, err := s.sim.RaiseRisk(aliceID, "leakedCredentials", graphsim.RiskLevelHigh); err != nil {
			t.Fatal(err)
		}
		raised := time.Now()
		took := waitPwdLastSetZero(t, s, alice.DN, 30*time.Second)
		// The target is the poll interval plus a second; a loaded
		// shared DC takes longer to bind and write, so it is reported, and
		// the bound above is what fails.
		d := took.Sub(raised)
		t.Logf("detection -> AD pwdLastSet 0: %v (poll interval %v, target %v)", d, riskPoll, riskPoll+riskGrace)
		// The forced-change rule carries it to the cloud: sessions, pending group.
		s.waitWrites(t, aliceID, []string{"POST revoke 200", "POST members 204"}, 1500*time.Millisecond)
	})
	t.Run("a2_a_cloud_managed_user_must_change_in_the_cloud", func(t *testing.T) {
		if _, err := s.sim.RaiseRisk(bobID, "leakedCredentials", graphsim.RiskLevelHigh); err != nil {
			t.Fatal(err)
		}
		// as a helpdesk reset: the flag (Graph's no-op), then the chain
		s.waitWrites(t, bobID, cloudResetWrites, 1500*time.Millisecond)
		if v := s.dc.Read(t, bob.DN, "pwdLastSet").GetAttributeValue("pwdLastSet"); v == "0" {
			t.Fatal("a cloud-managed user's AD password was reset")
		}
	})
	t.Run("b_exactly_once_across_rounds", func(t *testing.T) {
		time.Sleep(4 * riskPoll) // rounds that read the same detection again
		if n := adWrites(t, s, alice.UPN); n != 1 {
			t.Fatalf("AD writer wrote %d times for alice, want 1", n)
		}
		// A detection below the policy's level does nothing.
		if _, err := s.sim.RaiseRisk(aliceID, "unfamiliarFeatures", graphsim.RiskLevelMedium); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * riskPoll)
		if n := adWrites(t, s, alice.UPN); n != 1 {
			t.Fatalf("after a medium detection: %d AD writes, want 1", n)
		}
	})
	t.Run("b2_the_new_password_undoes_and_dismisses_the_risk", func(t *testing.T) {
		s.dc.ResetPassword(t, alice.DN, "Changed.Passw0rd-2", false)
		// the undo (out of the pending group) and the dismissal, in either order, once each
		want := []string{"POST revoke 200", "POST members 204", "DELETE members 204", "POST /v1.0/identityProtection/riskyUsers/dismiss 204"}
		deadline := time.Now().Add(30 * time.Second)
		for {
			got := s.writes(aliceID)
			ru, _ := s.sim.RiskyUser(aliceID)
			if len(got) == len(want) && ru.RiskState == graphsim.RiskStateDismissed {
				slices.Sort(got)
				sorted := slices.Clone(want)
				slices.Sort(sorted)
				if !slices.Equal(got, sorted) {
					t.Fatalf("alice's writes %v, want %v in any order", got, want)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("alice: writes %v, risk %+v; want %v and the risk dismissed", got, ru, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
		time.Sleep(2 * riskPoll)
		if got := s.writes(aliceID); len(got) != len(want) {
			t.Fatalf("more writes after the loop closed: %v", got)
		}
	})
	t.Run("c_break_glass_is_untouched", func(t *testing.T) {
		if _, err := s.sim.RaiseRisk(daveID, "leakedCredentials", graphsim.RiskLevelHigh); err != nil {
			t.Fatal(err)
		}
		time.Sleep(4 * riskPoll)
		if v := s.dc.Read(t, dave.DN, "pwdLastSet").GetAttributeValue("pwdLastSet"); v == "0" {
			t.Fatal("break-glass user's AD password was reset")
		}
		if w := s.writes(daveID); len(w) != 0 {
			t.Fatalf("break-glass user written in Graph: %v", w) // its reads (the risk poller's) are fine
		}
	})
	t.Run("d_a_storm_above_the_hourly_cap_waits_for_approval", func(t *testing.T) {
		// alice and bob used two of the hour's 3: one storm user is acted on, two are held.
		for _, u := range storm {
			if _, err := s.sim.RaiseRisk("cloud-"+u.SAM, "leakedCredentials", graphsim.RiskLevelHigh); err != nil {
				t.Fatal(err)
			}
		}
		// Which one gets the hour's last place is up to the evaluator's
		// concurrent workers: exactly one does.
		reset := func() int {
			n := 0
			for _, u := range storm {
				if s.dc.Read(t, u.DN, "pwdLastSet").GetAttributeValue("pwdLastSet") == "0" {
					n++
				}
			}
			return n
		}
		deadline := time.Now().Add(30 * time.Second)
		for reset() == 0 && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		time.Sleep(4 * riskPoll)
		if n := reset(); n != 1 {
			t.Errorf("%d storm users reset in AD, want 1 (the cap's last place)", n)
		}
		if held := logCount(t, s, func(m map[string]any) bool {
			return m["message"] == "risk action held: the hour is over its cap"
		}); held != 2 {
			t.Fatalf("%d risk actions held, want 2", held)
		}
	})
}

// waitPwdLastSetZero polls the DC until dn's pwdLastSet is 0 and returns
// when it saw it.
func waitPwdLastSetZero(t *testing.T, s *stack, dn string, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if s.dc.Read(t, dn, "pwdLastSet").GetAttributeValue("pwdLastSet") == "0" {
			return time.Now()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: pwdLastSet not 0 within %v", dn, within)
	return time.Time{}
}

// adWrites counts the AD writer's completed pwdLastSet writes for upn.
func adWrites(t *testing.T, s *stack, upn string) int {
	return logCount(t, s, func(m map[string]any) bool {
		return m["message"] == "AD writer: done" && m["upn"] == upn && m["step"] == "ad_pwdlastset_0"
	})
}

// logCount counts pwsync's JSON log lines matching.
func logCount(t *testing.T, s *stack, match func(map[string]any) bool) int {
	t.Helper()
	f, err := os.Open(filepath.Join(s.dir, "pwsync.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && match(m) {
			n++
		}
	}
	return n
}

var _ = riskCap // the cap is in riskYAML; named for the reader
