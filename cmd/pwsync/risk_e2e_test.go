package main

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pwsync/pwsync/testrig/adtest"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// riskYAML: Identity Protection polled every second, high leaked
// credentials act, at most riskCap actions an hour before approval.
const (
	riskPoll  = time.Second
	riskCap   = 4
	riskYAML  = "risk: {enabled: true, poll_interval: 1s, levels: [high], detection_types: [leakedCredentials], hourly_cap: 4, notify: false, dismiss_after_change: true, still_at_risk_after: 2s}"
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
	erin := s.dc.CreateUser(t, s.ou, "risk-erin", adtest.UserOpts{Password: pw})
	var storm []adtest.User
	for _, n := range []string{"risk-s1", "risk-s2", "risk-s3"} {
		storm = append(storm, s.dc.CreateUser(t, s.ou, n, adtest.UserOpts{Password: pw}))
	}
	aliceID := s.cloudUser(alice, true)
	daveID := s.cloudUser(dave, true)
	bobID := s.cloudUser(bob, false) // cloud-managed: joined by UPN
	erinID := s.cloudUser(erin, true)
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
	t.Run("b3_still_at_risk_after_the_change_is_an_alert", func(t *testing.T) {
		// alice's risk was dismissed: her check found nothing to say.
		time.Sleep(3 * time.Second) // her check's time (still_at_risk_after 2s) has come
		if n := stillAtRiskAlerts(t, s, alice.UPN); n != 0 {
			t.Fatalf("%d still-at-risk alerts for alice, whose risk was dismissed", n)
		}
		// erin's dismissal is refused, so her risk stays after her new password.
		if _, err := s.sim.RaiseRisk(erinID, "leakedCredentials", graphsim.RiskLevelHigh); err != nil {
			t.Fatal(err)
		}
		waitPwdLastSetZero(t, s, erin.DN, 30*time.Second)
		s.sim.InjectFault(graphsim.Fault{Method: http.MethodPost, PathSuffix: "/riskyUsers/dismiss", Status: http.StatusForbidden, Count: -1})
		defer s.sim.ClearFaults()
		s.dc.ResetPassword(t, erin.DN, "Changed.Passw0rd-2", false)
		deadline := time.Now().Add(30 * time.Second)
		for stillAtRiskAlerts(t, s, erin.UPN) == 0 {
			if time.Now().After(deadline) {
				ru, _ := s.sim.RiskyUser(erinID)
				t.Fatalf("no still-at-risk alert for erin within 30 s (her risk: %+v)", ru)
			}
			time.Sleep(200 * time.Millisecond)
		}
		time.Sleep(time.Second)
		if n := stillAtRiskAlerts(t, s, erin.UPN); n != 1 {
			t.Fatalf("%d still-at-risk alerts for erin, want 1", n)
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
		// alice, bob and erin used three of the hour's 4: one storm user is acted on, two are held.
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

// TestRiskActsOnceThroughRestart kills pwsync (SIGKILL) mid-way through the
// risk loop and checks that each detection acts exactly once: killed while
// the poller reads Identity Protection, the detection acts after the
// restart; killed right after the AD write, the detection read again after
// the restart does not force the user, who has set a new password since,
// a second time.
func TestRiskActsOnceThroughRestart(t *testing.T) {
	s := newStack(t, stackOpts{ExtraYAML: riskYAML})
	const pw = "Start.Passw0rd-1"
	amy := s.dc.CreateUser(t, s.ou, "riskr-amy", adtest.UserOpts{Password: pw})
	ben := s.dc.CreateUser(t, s.ou, "riskr-ben", adtest.UserOpts{Password: pw})
	amyID, benID := s.cloudUser(amy, true), s.cloudUser(ben, true)
	p := s.startProcess(t)

	// 1. Killed while the poller reads the detections.
	held := make(chan struct{}, 1)
	s.sim.OnRequest(func(r graphsim.Request) {
		if r.Status == 0 && strings.Contains(r.Path, "/identityProtection/riskDetections") {
			select {
			case held <- struct{}{}:
			default:
			}
		}
	})
	s.sim.InjectFault(graphsim.Fault{Method: http.MethodGet, PathPrefix: "/v1.0/identityProtection/riskDetections", Hang: time.Minute, Reset: true, Count: -1})
	select {
	case <-held:
	case <-time.After(20 * time.Second):
		t.Fatal("the risk poller never read the detections")
	}
	if _, err := s.sim.RaiseRisk(amyID, "leakedCredentials", graphsim.RiskLevelHigh); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	s.sim.ClearFaults()
	s.sim.OnRequest(nil)
	p = s.startProcess(t)
	waitPwdLastSetZero(t, s, amy.DN, 30*time.Second)

	// 2. Killed right after the AD write; the user sets a new password
	// before pwsync is back.
	if _, err := s.sim.RaiseRisk(benID, "leakedCredentials", graphsim.RiskLevelHigh); err != nil {
		t.Fatal(err)
	}
	waitPwdLastSetZero(t, s, ben.DN, 30*time.Second)
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	s.dc.ResetPassword(t, ben.DN, "Changed.Passw0rd-2", false)
	p = s.startProcess(t)
	time.Sleep(5 * riskPoll) // rounds that read both detections again
	if v := s.dc.Read(t, ben.DN, "pwdLastSet").GetAttributeValue("pwdLastSet"); v == "0" {
		t.Fatal("ben was forced to change again after the restart: the detection acted twice")
	}
	if v := s.dc.Read(t, amy.DN, "pwdLastSet").GetAttributeValue("pwdLastSet"); v != "0" {
		t.Fatalf("amy's pwdLastSet %s after the restarts, want still 0", v)
	}
	if n := adWrites(t, s, amy.UPN); n != 1 {
		t.Fatalf("AD writer wrote %d times for amy, want 1", n)
	}
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

// stillAtRiskAlerts counts the admin alerts that upn is still at risk
// after the password change (the actuator logs alerts when the notifier is
// off).
func stillAtRiskAlerts(t *testing.T, s *stack, upn string) int {
	return logCount(t, s, func(m map[string]any) bool {
		a, _ := m["alert"].(string)
		return m["message"] == "alert" && m["upn"] == upn && strings.Contains(a, "still at risk")
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
