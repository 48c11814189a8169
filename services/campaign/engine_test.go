package campaign_test

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pwsync/pwsync/services/campaign"
	"github.com/pwsync/pwsync/testrig/adtest"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

const tenantSuffix = "@contoso.example"

// putCloudUsers adds n cloud-managed users to the simulator and to group gid.
func (w *world) putCloudUsers(gid, prefix string, n int) []graphsim.User {
	w.t.Helper()
	out := make([]graphsim.User, n)
	for i := range out {
		u := graphsim.User{ID: fmt.Sprintf("%s-%05d-0000-4000-8000-000000000000", prefix, i),
			UserPrincipalName: fmt.Sprintf("%s%05d%s", prefix, i, tenantSuffix), AccountEnabled: true}
		w.sim.PutUser(u)
		if gid != "" {
			if err := w.sim.AddGroupMember(gid, u.ID); err != nil {
				w.t.Fatal(err)
			}
		}
		out[i] = u
	}
	return out
}

// TestCampaignExactlyOnceThroughKillAndFaults: 5,000 users, 1,000 synced
// in Samba AD (a persistent bulk OU, created once per DC) and 4,000
// cloud-managed in the simulator; faults on the way (item 503s, item 429s,
// whole-batch 500s), and the engine killed with SIGKILL in the middle of a
// run, then started again; and faults after the write (Graph applies an item
// or a whole batch and answers 5xx, or drops the connection). Every user's
// writes happen exactly once: in Graph by the simulator's effects (what
// took effect, whatever was answered), in AD by the DC's own count of
// pwdLastSet writes (its version in replPropertyMetaData went up by exactly
// one); break-glass and excluded users are never written, and the report
// is complete.
func TestCampaignExactlyOnceThroughKillAndFaults(t *testing.T) {
	const budget, window = 3000, 3 * time.Second
	// The kinder world where the flag-only PATCH takes: exactly once for the
	// flag means reading it back after a lost answer, which a flag that
	// never takes does not allow (verify_test.go covers that world).
	w := newWorld(t, true, graphsim.Options{Latency: 15 * time.Millisecond, WriteBudget: budget, ForceChangeApplies: true}.TimeScaled(window))
	// 5,000 users: 1,000 synced in Samba AD, 4,000 cloud-managed. The
	// suite shares one DC with the other packages' AD tests, so the AD part
	// is sized for that; PWSYNC_CAMPAIGN_AD_USERS=5000 runs 5,000 Samba
	// users (98 s alone, 43 s of it creating them once per DC).
	nSynced, nCloud := 1000, 4000
	if v, err := strconv.Atoi(os.Getenv("PWSYNC_CAMPAIGN_AD_USERS")); err == nil && v >= 100 {
		nSynced = v
	}
	start := time.Now()
	bulkOU, adUsers := w.dc.BulkUsers(t, fmt.Sprintf("cmp%d", nSynced), nSynced, 10*time.Minute)
	w.dc.StampPwdLastSet(t, adUsers) // so that pwdLastSet=0 is a change the DC counts
	versions := w.dc.AttrVersions(t, bulkOU, adtest.AttidPwdLastSet)
	t.Logf("%d AD users ready in %s", nSynced, time.Since(start).Round(time.Millisecond))

	// Break-glass by nested AD group: bgOuter > bgInner > two users.
	bgOuter := w.dc.CreateGroup(t, w.ou, "bgout")
	bgInner := w.dc.CreateGroup(t, w.ou, "bgin")
	w.dc.AddMember(t, bgOuter, bgInner)
	w.dc.AddMember(t, bgInner, adUsers[0].DN)
	w.dc.AddMember(t, bgInner, adUsers[1].DN)
	w.scope.BreakGlassGroups = []string{bgOuter}

	// Cloud: 4,800 members of an Entra group (nested), plus synced mirrors
	// of 50 AD users in it (they resolve to their AD objects: no double).
	const gid, sub = "aaaaaaaa-0000-4000-8000-00000000000a", "aaaaaaaa-0000-4000-8000-00000000000b"
	w.sim.PutGroup(gid, "Finance")
	w.sim.PutGroup(sub, "Finance EMEA")
	if err := w.sim.AddNestedGroup(gid, sub); err != nil {
		t.Fatal(err)
	}
	cloud := w.putCloudUsers(sub, "cc", nCloud)
	for i, u := range adUsers[:50] {
		m := graphsim.User{ID: fmt.Sprintf("5e000000-%04d-4000-8000-000000000000", i), UserPrincipalName: u.UPN,
			OnPremisesImmutableId: u.ImmutableID, OnPremisesSyncEnabled: true, AccountEnabled: true}
		w.sim.PutUser(m)
		if err := w.sim.AddGroupMember(gid, m.ID); err != nil {
			t.Fatal(err)
		}
	}
	breakGlass, excluded := cloud[7].UserPrincipalName, []string{cloud[8].UserPrincipalName, cloud[9].UserPrincipalName}
	w.scope.BreakGlassUPNs = []string{strings.ToUpper(breakGlass)}
	ghosts := []string{"ghost1" + tenantSuffix, "ghost2" + tenantSuffix}

	c, err := w.svc.Create(ctxT(t), campaign.Spec{Name: "breach 42", Reason: "INC-42",
		Include: campaign.Selector{OUs: []string{bulkOU}, EntraGroups: []string{gid}, UPNs: append([]string{cloud[10].UserPrincipalName}, ghosts...)},
		Exclude: campaign.Selector{UPNs: excluded},
		Actions: campaign.Actions{RequireChange: true, RevokeSessions: true, Notify: true}}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	c, err = w.svc.Preview(ctxT(t), c.ID, "alice")
	if err != nil {
		t.Fatal(err)
	}
	p := c.Preview
	wantSynced, wantCloud := nSynced-2, nCloud-3
	if p.Total != wantSynced+wantCloud || p.ByWrite[campaign.WriteAD] != wantSynced || p.ByWrite[campaign.WriteCloud] != wantCloud ||
		p.ByKind[campaign.KindSynced] != wantSynced || p.ByKind[campaign.KindCloud] != wantCloud ||
		p.Unmatched != 2 || p.Excluded[campaign.ReasonBreakGlassUPN] != 1 || p.Excluded[campaign.ReasonBreakGlassGroup] != 2 ||
		p.Excluded[campaign.ReasonExcluded] != 2 || p.ByStep[campaign.StepRevoke] != wantCloud || len(p.Sample) != 20 || !p.NeedsApproval {
		t.Fatalf("preview: %+v", p)
	}
	if w.sim.Stats().Writes != 0 {
		t.Fatal("preview wrote to Graph")
	}
	if _, err := w.svc.Start(ctxT(t), c.ID, "alice"); !errors.Is(err, campaign.ErrConflict) {
		t.Fatalf("start without approval above the threshold: %v", err)
	}
	if _, err := w.svc.Approve(ctxT(t), c.ID, "alice"); !errors.Is(err, campaign.ErrForbidden) {
		t.Fatalf("creator approving: %v", err)
	}
	if _, err := w.svc.Approve(ctxT(t), c.ID, "bob"); err != nil {
		t.Fatal(err)
	}
	if c, err = w.svc.Start(ctxT(t), c.ID, "alice"); err != nil {
		t.Fatal(err)
	}

	// Faults: item 503s on PATCH (not applied: read back, then rewritten),
	// item 429s on revoke (only those items retried), whole-batch 500s;
	// then the same after the write: PATCH items applied and answered 503,
	// revoke items applied and their answers lost, whole batches applied
	// and answered 500 (read back, found done, not written again).
	w.sim.InjectFault(graphsim.Fault{Method: "POST", PathPrefix: "/v1.0/$batch", Status: 500, Count: 3})
	w.sim.InjectFault(graphsim.Fault{Method: "PATCH", PathPrefix: "/v1.0/users/", Status: 503, Count: 40})
	w.sim.InjectFault(graphsim.Fault{Method: "POST", PathPrefix: "/v1.0/users/", Status: 429, RetryAfter: time.Second, Count: 40})
	w.sim.InjectFault(graphsim.Fault{Method: "POST", PathPrefix: "/v1.0/$batch", Status: 500, After: true, Count: 2})
	w.sim.InjectFault(graphsim.Fault{Method: "PATCH", PathPrefix: "/v1.0/users/", Status: 503, After: true, Count: 40})
	w.sim.InjectFault(graphsim.Fault{Method: "POST", PathPrefix: "/v1.0/users/", Reset: true, After: true, Count: 40})

	// Kill -9 when about 40% of the writes are answered: batches are in
	// flight then (15 ms latency, 4 in flight), applied by the simulator
	// but never recorded by the dead engine.
	first := w.startChild(c.ID, budget, window, 1)
	var answered atomic.Int64
	killed := make(chan struct{})
	w.sim.OnRequest(func(r graphsim.Request) {
		if r.ItemID != "" && r.Method != http.MethodGet && r.Status/100 == 2 && answered.Add(1) == 4000 {
			close(killed)                // before the kill: the child's exit must not race it
			_ = first.cmd.Process.Kill() // SIGKILL
		}
	})
	select {
	case <-killed:
	case err := <-first.done:
		select {
		case <-killed: // our kill; both were ready
		default:
			t.Fatalf("child exited before the kill: %v", err)
		}
		first.done <- err
	case <-time.After(60 * time.Second):
		t.Fatal("no kill after 60s")
	}
	<-first.done
	stats, _ := w.store.GetStats(ctxT(t), c.ID)
	t.Logf("killed after %d answered writes (recorded: %d users done)", answered.Load(), stats.Done)
	w.purgeLease()
	second := w.startChild(c.ID, budget, window, 2)
	c = w.waitState(c.ID, campaign.StateDone, 5*time.Minute)
	if err := <-second.done; err != nil {
		t.Fatalf("second child: %v", err)
	}
	w.sim.OnRequest(nil)

	// Exactly once, by the simulator's effects: one PATCH and one revoke
	// took effect per cloud target (whatever they were answered), nothing
	// for anyone else.
	patches, revokes := map[string]int{}, map[string]int{}
	lostAnswers := 0
	answer := map[string]int{}
	for _, r := range w.sim.Requests() {
		answer[r.BatchID+"/"+r.ItemID] = r.Status
	}
	for _, r := range w.sim.Effects() {
		if st := answer[r.BatchID+"/"+r.ItemID]; st == 0 || st >= 500 || answer[r.BatchID+"/"] >= 500 { // the item's or its batch's
			lostAnswers++
		}
		id, rest, _ := strings.Cut(strings.TrimPrefix(r.Path, "/v1.0/users/"), "/")
		switch {
		case r.Method == http.MethodPatch && rest == "":
			patches[id]++
		case r.Method == http.MethodPost && rest == "revokeSignInSessions":
			revokes[id]++
		}
	}
	skip := map[string]bool{}
	for _, u := range append(excluded, breakGlass) {
		skip[u] = true
	}
	for _, u := range cloud {
		want := 1
		if skip[u.UserPrincipalName] {
			want = 0
		}
		if patches[u.ID] != want || revokes[u.ID] != want {
			t.Fatalf("%s: %d PATCHes, %d revokes applied, want %d each", u.UserPrincipalName, patches[u.ID], revokes[u.ID], want)
		}
	}
	if len(patches) != wantCloud || len(revokes) != wantCloud {
		t.Fatalf("writes to %d/%d users, want %d", len(patches), len(revokes), wantCloud)
	}
	if lostAnswers < 80 {
		t.Fatalf("only %d writes took effect with their answer lost; the faults after the write were not met", lostAnswers)
	}
	for _, u := range cloud[:50] {
		if got, _ := w.sim.User(u.ID); got.UserPrincipalName != breakGlass && !skip[got.UserPrincipalName] && !got.ForceChangePasswordNextSignIn {
			t.Fatalf("%s: flag not set", u.UserPrincipalName)
		}
	}

	// AD, by the DC's own record: every synced target's pwdLastSet was
	// written once (version +1) and is 0; break-glass ones were not written.
	after := w.dc.AttrVersions(t, bulkOU, adtest.AttidPwdLastSet)
	values := w.pwdLastSets(bulkOU)
	for i, u := range adUsers {
		dn := strings.ToLower(u.DN)
		want := versions[dn] + 1
		if i < 2 {
			want = versions[dn]
		}
		if after[dn] != want || (i < 2) != (values[dn] != 0) {
			t.Fatalf("%s (break-glass=%v): pwdLastSet version %d -> %d, value %d", u.SAM, i < 2, versions[dn], after[dn], values[dn])
		}
	}

	// One notice per cloud target.
	notices := w.notices(c.ID)
	if len(notices) != wantCloud {
		t.Fatalf("notices for %d users, want %d", len(notices), wantCloud)
	}
	for id, n := range notices {
		if n != 1 {
			t.Fatalf("user %s noticed %d times", id, n)
		}
	}

	// The report: every user done, each step with its answer and time.
	rep, err := w.svc.Report(ctxT(t), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Users) != wantSynced+wantCloud || rep.Stats.Done != len(rep.Users) || rep.Stats.Failed != 0 {
		t.Fatalf("report: %d users, stats %+v", len(rep.Users), rep.Stats)
	}
	for _, u := range rep.Users {
		if u.Outcome != campaign.StatusDone {
			t.Fatalf("%s: outcome %s: %+v", u.UPN, u.Outcome, u.Steps)
		}
		for step, r := range u.Steps {
			if r.At.IsZero() || (step == campaign.StepADMustChange && r.LDAP == "") || (step.Graph() && r.HTTP == 0) {
				t.Fatalf("%s %s: incomplete result %+v", u.UPN, step, r)
			}
		}
	}
	var buf bytes.Buffer
	if err := rep.WriteCSV(&buf); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil || len(rows) != 1+wantSynced+4*wantCloud { // must_change, its read-back, revoke, notify
		t.Fatalf("CSV: %d rows, %v", len(rows), err)
	}
	t.Logf("done in %s: stats %+v; simulator %+v", time.Since(start).Round(time.Millisecond), rep.Stats, w.sim.Stats())
	if rep.Stats.Verified == 0 || rep.Stats.Throttled == 0 {
		t.Fatalf("the faults did not exercise read-back (%d) and 429s (%d)", rep.Stats.Verified, rep.Stats.Throttled)
	}
}
