package campaign_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/services/campaign"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/mustchange"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// applied counts the simulator's 2xx write items per user: flag-only
// PATCHes, password PATCHes, revokes, and group adds (by member).
type applied struct{ flag, password, revoke, group map[string]int }

func (w *world) applied() applied {
	a := applied{flag: map[string]int{}, password: map[string]int{}, revoke: map[string]int{}, group: map[string]int{}}
	// What took effect, whatever was answered; a group add answered
	// "already exist" is the same add again and counts too.
	for _, r := range w.sim.Effects() {
		switch {
		case r.Method == http.MethodPatch && strings.HasPrefix(r.Path, "/v1.0/users/"):
			id := strings.TrimPrefix(r.Path, "/v1.0/users/")
			if bytes.Contains(r.Body, []byte(`"password"`)) {
				a.password[id]++
			} else {
				a.flag[id]++
			}
		case r.Method == http.MethodPost && strings.HasSuffix(r.Path, "/revokeSignInSessions"):
			a.revoke[strings.TrimSuffix(strings.TrimPrefix(r.Path, "/v1.0/users/"), "/revokeSignInSessions")]++
		case r.Method == http.MethodPost && strings.HasSuffix(r.Path, "/members/$ref"):
			var ref map[string]string
			_ = json.Unmarshal(r.Body, &ref)
			a.group[ref["@odata.id"][strings.LastIndex(ref["@odata.id"], "/")+1:]]++
		}
	}
	return a
}

// auditSteps returns the campaign's audit step records for one step.
func (w *world) auditSteps(step campaign.Step) []events.AuditRecord {
	w.t.Helper()
	ctx := ctxT(w.t)
	cons, err := w.conn.JS.OrderedConsumer(ctx, natsx.StreamAudit, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"audit.step"}})
	if err != nil {
		w.t.Fatal(err)
	}
	var out []events.AuditRecord
	for {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			w.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var rec events.AuditRecord
			if err := json.Unmarshal(m.Data(), &rec); err != nil {
				w.t.Fatal(err)
			}
			if rec.Step == string(step) {
				out = append(out, rec)
			}
		}
		if n == 0 {
			return out
		}
	}
}

// TestMustChangeReadBack: after a must-change PATCH Graph accepted, the
// campaign reads passwordProfile back in $batch; with the simulator's
// microsoft-graph-docs#4267 switch on (204, nothing changed) it takes the
// configured fallback, once per user, and says so in the report and the
// audit stream; with the switch off no fallback write is made.
func TestMustChangeReadBack(t *testing.T) {
	const pending = "cccccccc-0000-4000-8000-0000000000ff"
	tests := []struct {
		name     string
		noop     bool
		strategy mustchange.Strategy
		actions  campaign.Actions
		// wanted writes per user
		password, revoke, group int
		failed                  bool
		fallbackDone            []mustchange.Write
		faults                  []graphsim.Fault // injected before the run
	}{
		{name: "flag takes", strategy: mustchange.Strategy{Fallback: mustchange.FallbackTemporaryPassword},
			actions: campaign.Actions{RequireChange: true, RevokeSessions: true, Notify: true}, revoke: 1},
		{name: "204 without effect, temporary password", noop: true, strategy: mustchange.Strategy{Fallback: mustchange.FallbackTemporaryPassword},
			actions: campaign.Actions{RequireChange: true, RevokeSessions: true, Notify: true}, password: 1, revoke: 1,
			fallbackDone: []mustchange.Write{mustchange.WriteTemporaryPassword}},
		{name: "204 without effect, chain", noop: true,
			strategy: mustchange.Strategy{Fallback: mustchange.FallbackChain, RevokeSessions: true, PendingGroupID: pending},
			actions:  campaign.Actions{RequireChange: true}, revoke: 1, group: 1,
			fallbackDone: []mustchange.Write{mustchange.WriteRevoke, mustchange.WritePendingGroup}},
		{name: "204 without effect, chain, answers lost after the write", noop: true,
			strategy: mustchange.Strategy{Fallback: mustchange.FallbackChain, RevokeSessions: true, PendingGroupID: pending},
			actions:  campaign.Actions{RequireChange: true}, revoke: 1, group: 1,
			fallbackDone: []mustchange.Write{mustchange.WriteRevoke, mustchange.WritePendingGroup},
			faults: []graphsim.Fault{ // Graph applies the write, then the answer is lost
				{Method: "POST", PathPrefix: "/v1.0/groups/" + pending + "/members", Status: 503, After: true, Count: 10},
				{Method: "POST", PathPrefix: "/v1.0/groups/" + pending + "/members", Reset: true, After: true, Count: 5},
				{Method: "POST", PathPrefix: "/v1.0/users/", Status: 500, After: true, Count: 10},
			}},
		{name: "204 without effect, chain, the campaign revokes itself", noop: true,
			strategy: mustchange.Strategy{Fallback: mustchange.FallbackChain, RevokeSessions: true, PendingGroupID: pending},
			actions:  campaign.Actions{RequireChange: true, RevokeSessions: true}, revoke: 1, group: 1,
			fallbackDone: []mustchange.Write{mustchange.WritePendingGroup}},
		{name: "204 without effect, no fallback", noop: true, strategy: mustchange.Strategy{Fallback: mustchange.FallbackNone},
			actions: campaign.Actions{RequireChange: true}, failed: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// "flag takes" is the kinder world on purpose: it pins that no
			// fallback runs when the read-back sees the flag.
			w := newWorld(t, false, graphsim.Options{ForceChangeApplies: !tc.noop})
			w.svcWith(func(d *campaign.Deps) { d.Verify = &tc.strategy })
			const gid = "cccccccc-0000-4000-8000-00000000000a"
			w.sim.PutGroup(gid, "Ops")
			w.sim.PutGroup(pending, "Password change pending")
			users := w.putCloudUsers(gid, "vf", 30)
			c, err := w.svc.Create(ctxT(t), campaign.Spec{Name: tc.name, Include: campaign.Selector{EntraGroups: []string{gid}},
				Actions: tc.actions}, "alice")
			if err != nil {
				t.Fatal(err)
			}
			if c, err = w.svc.Preview(ctxT(t), c.ID, "alice"); err != nil {
				t.Fatal(err)
			}
			if c.Verify == nil || c.Verify.Fallback != tc.strategy.Fallback || c.Preview.ByStep[campaign.StepVerifyMustChange] != len(users) {
				t.Fatalf("preview does not show the read-back: %+v %+v", c.Verify, c.Preview.ByStep)
			}
			if _, err := w.svc.Start(ctxT(t), c.ID, "alice"); err != nil {
				t.Fatal(err)
			}
			for _, f := range tc.faults {
				w.sim.InjectFault(f)
			}
			w.runInProcess(c.ID, campaign.NewPacer(1000, time.Second, 1), time.Minute)
			for _, f := range tc.faults { // all met: the read-backs had something to settle
				for _, left := range w.sim.Faults() {
					if left.PathPrefix == f.PathPrefix && left.Method == f.Method && left.After {
						t.Fatalf("fault %+v not all met: %+v left", f, left)
					}
				}
			}

			a := w.applied()
			for _, u := range users {
				if a.flag[u.ID] != 1 || a.password[u.ID] != tc.password || a.revoke[u.ID] != tc.revoke || a.group[u.ID] != tc.group {
					t.Fatalf("%s: applied flag %d, password %d, revoke %d, group %d; want 1, %d, %d, %d", u.UserPrincipalName,
						a.flag[u.ID], a.password[u.ID], a.revoke[u.ID], a.group[u.ID], tc.password, tc.revoke, tc.group)
				}
				got, _ := w.sim.User(u.ID)
				if want := !tc.noop || tc.password > 0; got.ForceChangePasswordNextSignIn != want {
					t.Fatalf("%s: flag %v, want %v", u.UserPrincipalName, got.ForceChangePasswordNextSignIn, want)
				}
			}
			if tc.group > 0 {
				members := w.sim.GroupMembers(pending)
				if len(members) != len(users) {
					t.Fatalf("pending group has %d members, want %d", len(members), len(users))
				}
			}

			rep, err := w.svc.Report(ctxT(t), c.ID)
			if err != nil {
				t.Fatal(err)
			}
			var raw bytes.Buffer
			if err := rep.WriteJSON(&raw); err != nil {
				t.Fatal(err)
			}
			wantStatus := campaign.StatusDone
			if tc.failed {
				wantStatus = campaign.StatusFailed
			}
			for _, row := range rep.Users {
				v := row.Steps[campaign.StepVerifyMustChange]
				if v == nil || v.Status != wantStatus || !slices.Equal(v.FallbackDone, tc.fallbackDone) || row.Outcome != wantStatus {
					t.Fatalf("%s: outcome %s, verify %+v", row.UPN, row.Outcome, v)
				}
				if tc.noop != strings.Contains(v.Detail, "flag is not set") {
					t.Fatalf("%s: detail %q", row.UPN, v.Detail)
				}
				if u, _ := w.sim.User(row.CloudID); u.Password != "" && strings.Contains(raw.String(), u.Password) {
					t.Fatal("the temporary password is in the report")
				}
			}
			if tc.noop && !tc.failed && rep.Stats.Fallbacks != len(users) || !tc.noop && rep.Stats.Fallbacks != 0 {
				t.Fatalf("stats %+v", rep.Stats)
			}
			if tc.failed && (rep.Stats.Failed != len(users) || rep.Campaign.State != campaign.StateDone) {
				t.Fatalf("stats %+v, state %s", rep.Stats, rep.Campaign.State)
			}

			// Audit: the missing flag (failed) and the outcome, per user.
			recs := w.auditSteps(campaign.StepVerifyMustChange)
			byOutcome := map[string]int{}
			for _, r := range recs {
				byOutcome[r.Outcome]++
				if u, _ := w.sim.User(r.CloudID); u.Password != "" && strings.Contains(r.Detail, u.Password) {
					t.Fatal("the temporary password is in the audit stream")
				}
			}
			want := map[string]int{events.OutcomeOK: len(users)}
			switch {
			case tc.failed:
				want = map[string]int{events.OutcomeFailed: 2 * len(users)}
			case tc.noop:
				want[events.OutcomeFailed] = len(users)
			}
			if len(byOutcome) != len(want) || byOutcome[events.OutcomeOK] != want[events.OutcomeOK] || byOutcome[events.OutcomeFailed] != want[events.OutcomeFailed] {
				t.Fatalf("audit verify_must_change records by outcome %v, want %v", byOutcome, want)
			}
			if tc.actions.Notify && len(w.notices(c.ID)) != len(users) {
				t.Fatalf("notices %v", w.notices(c.ID))
			}
		})
	}
}

// TestMustChangeFallbackExactlyOnceThroughKill: the simulator answers 204
// to every flag-only PATCH and changes nothing; the engine, in a child
// process, reads back, sets temporary passwords, and is killed with SIGKILL
// while fallback writes are in flight (with item 503s on PATCH on the way);
// after a restart, every user got exactly one applied flag PATCH, one
// applied password PATCH and one revoke, and the report is complete.
func TestMustChangeFallbackExactlyOnceThroughKill(t *testing.T) {
	const budget, window = 3000, 3 * time.Second
	w := newWorld(t, false, graphsim.Options{Latency: 15 * time.Millisecond, WriteBudget: budget}.TimeScaled(window))
	w.svcWith(func(d *campaign.Deps) {
		d.Verify = &mustchange.Strategy{Fallback: mustchange.FallbackTemporaryPassword}
	})
	const gid = "dddddddd-0000-4000-8000-00000000000a"
	w.sim.PutGroup(gid, "Everyone")
	const n = 1500
	users := w.putCloudUsers(gid, "kf", n)
	c := w.startCampaign(campaign.Spec{Name: "noop breach", Include: campaign.Selector{EntraGroups: []string{gid}},
		Actions: campaign.Actions{RequireChange: true, RevokeSessions: true}})
	w.sim.InjectFault(graphsim.Fault{Method: "PATCH", PathPrefix: "/v1.0/users/", Status: 503, Count: 30})

	first := w.startChild(c.ID, budget, window, 1)
	var passwords, atKill atomic.Int64
	killed := make(chan struct{})
	w.sim.OnRequest(func(r graphsim.Request) {
		if r.ItemID != "" && r.Method == http.MethodPatch && r.Status/100 == 2 && bytes.Contains(r.Body, []byte(`"password"`)) &&
			passwords.Add(1) == n/3 {
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
	atKill.Store(passwords.Load())
	w.purgeLease()
	second := w.startChild(c.ID, budget, window, 2)
	w.waitState(c.ID, campaign.StateDone, 60*time.Second)
	if err := <-second.done; err != nil {
		t.Fatalf("second child: %v", err)
	}
	w.sim.OnRequest(nil)

	a := w.applied()
	for _, u := range users {
		if a.flag[u.ID] != 1 || a.password[u.ID] != 1 || a.revoke[u.ID] != 1 {
			t.Fatalf("%s: applied flag %d, password %d, revoke %d; want 1 each", u.UserPrincipalName, a.flag[u.ID], a.password[u.ID], a.revoke[u.ID])
		}
		if got, _ := w.sim.User(u.ID); !got.ForceChangePasswordNextSignIn {
			t.Fatalf("%s: flag not set", u.UserPrincipalName)
		}
	}
	rep, err := w.svc.Report(ctxT(t), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Stats.Done != n || rep.Stats.Failed != 0 || rep.Stats.Fallbacks != n {
		t.Fatalf("stats %+v", rep.Stats)
	}
	for _, row := range rep.Users {
		v := row.Steps[campaign.StepVerifyMustChange]
		if v == nil || v.Status != campaign.StatusDone || !slices.Equal(v.FallbackDone, []mustchange.Write{mustchange.WriteTemporaryPassword}) {
			t.Fatalf("%s: verify %+v", row.UPN, v)
		}
	}
	t.Logf("killed after %d of %d password PATCHes; stats %+v; simulator %+v", atKill.Load(), n, rep.Stats, w.sim.Stats())
}
