package evaluator

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/natstest"
)

// replica is one evaluator, started and stopped by a test.
type replica struct {
	svc    *Service
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startEvaluator(t *testing.T, conn *natsx.Conn, p rules.Policy, threshold int) *replica {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := New(ctx, Deps{JS: conn.JS, Policy: p, Log: zerolog.Nop(), Holder: "test-replica",
		Backfill: GateConfig{Threshold: threshold, Settle: time.Minute}, Reevaluate: ReevaluateConfig{Enabled: true, Rate: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{svc: svc, cancel: cancel}
	r.wg.Go(func() {
		if err := svc.Run(ctx); err != nil && ctx.Err() == nil {
			t.Errorf("evaluator: %v", err)
		}
	})
	t.Cleanup(r.stop)
	return r
}

func (r *replica) stop() { r.cancel(); r.wg.Wait() }

func flaggedUser(i int, pwdLastSet int64) events.ADUser {
	guid := fmt.Sprintf("00000000-0000-0000-0000-%012d", i)
	return events.ADUser{Domain: "example.test", ObjectGUID: guid, DN: fmt.Sprintf("CN=u%d,OU=People,DC=example,DC=test", i),
		UPN: fmt.Sprintf("u%02d@example.test", i), PwdLastSet: pwdLastSet, UserAccountControl: 512, USNChanged: int64(1000 + i)}
}

func publishEvent(t *testing.T, conn *natsx.Conn, id, typ string, data any) {
	t.Helper()
	ev, err := events.NewEnvelope(id, events.SourceAD, typ, time.Now(), data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natsx.NewPublisher(conn.JS).PublishJSON(context.Background(), ev.Subject(), ev.ID, ev); err != nil {
		t.Fatal(err)
	}
}

// fullSync publishes a domain's full sync as ingest does: every user, then
// the end marker with their count.
func fullSync(t *testing.T, conn *natsx.Conn, users []events.ADUser) {
	t.Helper()
	for _, u := range users {
		u.FullSync = true
		publishEvent(t, conn, u.EventID(), events.TypeADUser, u)
	}
	f := events.ADFullSync{Domain: "example.test", Users: len(users), Started: time.Now()}
	publishEvent(t, conn, f.EventID(), events.TypeADFullSync, f)
}

// actions counts the ACTIONS stream's messages of one kind, and returns them.
func actions(t *testing.T, conn *natsx.Conn, kind events.ActionKind) []events.Action {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := conn.JS.OrderedConsumer(ctx, natsx.StreamActions, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"actions." + string(kind)}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []events.Action
	for n := info.NumPending; n > 0; n-- {
		m, err := c.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil {
			t.Fatalf("reading actions: %v", err)
		}
		var a events.Action
		if err := json.Unmarshal(m.Data(), &a); err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// auditDetails returns the audit records of one kind.
func auditRecords(t *testing.T, conn *natsx.Conn, kind string) []events.AuditRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := conn.JS.OrderedConsumer(ctx, natsx.StreamAudit, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"audit." + kind}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []events.AuditRecord
	for n := info.NumPending; n > 0; n-- {
		m, err := c.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil {
			t.Fatalf("reading audit: %v", err)
		}
		var r events.AuditRecord
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func batches(t *testing.T, r *replica) []Batch {
	t.Helper()
	bs, err := r.svc.gate.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

func backfillPolicy() rules.Policy {
	return rules.Policy{ForcedChange: true, IncludeNeverExpires: true, Backfill: true, PasswordChanged: true}
}

// TestBackfillAboveThresholdHeldUntilApproved: a first full sync finding more
// flagged users than the threshold writes nothing, alerts with the count and
// a sample, keeps holding across a restart, and releases every action once
// on approval.
func TestBackfillAboveThresholdHeldUntilApproved(t *testing.T) {
	_, conn := natstest.Run(t)
	r := startEvaluator(t, conn, backfillPolicy(), 3)
	var users []events.ADUser
	for i := range 5 {
		users = append(users, flaggedUser(i, 0))
	}
	users = append(users, flaggedUser(9, events.ToFileTime(time.Now()))) // not flagged
	fullSync(t, conn, users)

	waitFor(t, "the batch to be held", 20*time.Second, func() bool {
		bs := batches(t, r)
		return len(bs) == 1 && bs[0].Status == BatchHeld
	})
	b := batches(t, r)[0]
	if b.Users != 5 || len(b.Sample) != 5 || b.Sample[0] != "u00@example.test" {
		t.Errorf("held batch: %d users, sample %v; want 5 users sampled", b.Users, b.Sample)
	}
	if got := actions(t, conn, events.ActionRequireChange); len(got) != 0 {
		t.Fatalf("%d require actions published while held", len(got))
	}
	alerts := actions(t, conn, events.ActionAlert)
	if len(alerts) != 1 || !strings.Contains(alerts[0].Reason, "act on 5 users (threshold 3)") ||
		!strings.Contains(alerts[0].Reason, "u04@example.test") {
		t.Fatalf("alerts %+v; want one naming the count and a sample", alerts)
	}

	// a restart keeps the hold
	r.stop()
	r = startEvaluator(t, conn, backfillPolicy(), 3)
	time.Sleep(3 * time.Second)
	if bs := batches(t, r); len(bs) != 1 || bs[0].Status != BatchHeld {
		t.Fatalf("after a restart: %+v", bs)
	}
	if got := actions(t, conn, events.ActionRequireChange); len(got) != 0 {
		t.Fatalf("%d require actions published after a restart while held", len(got))
	}

	if _, err := r.svc.gate.Approve(context.Background(), b.ID, "alice"); err != nil {
		t.Fatal(err)
	}
	got := actions(t, conn, events.ActionRequireChange)
	seen := map[string]int{}
	for _, a := range got {
		seen[a.User.ObjectGUID]++
	}
	if len(got) != 5 || len(seen) != 5 {
		t.Fatalf("after approval: %d actions for %d users; want 5 for 5", len(got), len(seen))
	}
	if _, err := r.svc.gate.Approve(context.Background(), b.ID, "alice"); err == nil {
		t.Errorf("a second approval was accepted")
	}
	if n := len(actions(t, conn, events.ActionRequireChange)); n != 5 {
		t.Errorf("%d actions after a second approval; want 5", n)
	}
	var outcomes []string
	for _, rec := range auditRecords(t, conn, "backfill") {
		outcomes = append(outcomes, rec.Outcome)
		if rec.Outcome == "approved" && !strings.Contains(rec.Detail, "by alice") {
			t.Errorf("approval audit without the approver: %s", rec.Detail)
		}
	}
	if strings.Join(outcomes, ",") != "held,approved,published" {
		t.Errorf("audit outcomes %v; want held, approved, published", outcomes)
	}
}

// TestBackfillBelowThresholdRunsAsBefore: at most the threshold, the
// backfill is written without approval, and audited.
func TestBackfillBelowThresholdRunsAsBefore(t *testing.T) {
	_, conn := natstest.Run(t)
	r := startEvaluator(t, conn, backfillPolicy(), 5)
	var users []events.ADUser
	for i := range 5 {
		users = append(users, flaggedUser(i, 0))
	}
	fullSync(t, conn, users)
	waitFor(t, "5 require actions", 20*time.Second, func() bool {
		return len(actions(t, conn, events.ActionRequireChange)) == 5
	})
	if bs := batches(t, r); len(bs) != 1 || bs[0].Status != BatchReleased || bs[0].Released != 5 {
		t.Fatalf("batch %+v; want released with 5", bs)
	}
	if a := actions(t, conn, events.ActionAlert); len(a) != 0 {
		t.Errorf("alert below the threshold: %+v", a)
	}
	recs := auditRecords(t, conn, "backfill")
	if len(recs) != 2 || recs[0].Outcome != "released" || recs[1].Outcome != "published" ||
		!strings.Contains(recs[1].Detail, "5 actions published") {
		t.Errorf("audit %+v; want released, then published with the count", recs)
	}

	// a later full sync (a lost cookie) of the same, now known, users
	// backfills nothing and leaves no batch behind (a new USN: the same
	// event IDs within the duplicate window would not be delivered at all)
	for i := range users {
		users[i].USNChanged += 100
	}
	fullSync(t, conn, users)
	time.Sleep(3 * time.Second)
	if bs := batches(t, r); len(bs) != 1 {
		t.Errorf("after a second full sync: %d batches, want the first only", len(bs))
	}
	if n := len(actions(t, conn, events.ActionRequireChange)); n != 5 {
		t.Errorf("%d actions after a second full sync; want 5", n)
	}
}

// TestBackfillDryRunIsNotHeld: under dry run nothing is written either way:
// the batch is released as dry-run actions and audited as "would hold".
func TestBackfillDryRunIsNotHeld(t *testing.T) {
	_, conn := natstest.Run(t)
	p := backfillPolicy()
	p.DryRun = true
	r := startEvaluator(t, conn, p, 1)
	fullSync(t, conn, []events.ADUser{flaggedUser(1, 0), flaggedUser(2, 0)})
	waitFor(t, "2 dry-run actions", 20*time.Second, func() bool {
		return len(actions(t, conn, events.ActionRequireChange)) == 2
	})
	for _, a := range actions(t, conn, events.ActionRequireChange) {
		if !a.DryRun {
			t.Errorf("live action under dry run: %+v", a)
		}
	}
	if bs := batches(t, r); len(bs) != 1 || bs[0].Status != BatchReleased || !bs[0].DryRun {
		t.Errorf("batch %+v; want released, dry run", bs)
	}
	if recs := auditRecords(t, conn, "backfill"); len(recs) == 0 || recs[0].Outcome != "would_hold" {
		t.Errorf("audit %+v; want would_hold first", recs)
	}
	if a := actions(t, conn, events.ActionAlert); len(a) != 0 {
		t.Errorf("alert under dry run: %+v", a)
	}
}

// TestBackfillRejectWritesNothing: a rejected batch writes nothing, and the
// users' later password change undoes nothing.
func TestBackfillRejectWritesNothing(t *testing.T) {
	_, conn := natstest.Run(t)
	r := startEvaluator(t, conn, backfillPolicy(), 1)
	users := []events.ADUser{flaggedUser(1, 0), flaggedUser(2, 0)}
	fullSync(t, conn, users)
	waitFor(t, "the batch to be held", 20*time.Second, func() bool {
		bs := batches(t, r)
		return len(bs) == 1 && bs[0].Status == BatchHeld
	})
	if _, err := r.svc.gate.Reject(context.Background(), batches(t, r)[0].ID, "bob"); err != nil {
		t.Fatal(err)
	}
	u := flaggedUser(1, events.ToFileTime(time.Now()))
	u.USNChanged += 10
	publishEvent(t, conn, u.EventID(), events.TypeADUser, u)
	time.Sleep(2 * time.Second)
	if n := len(actions(t, conn, events.ActionRequireChange)) + len(actions(t, conn, events.ActionClearChange)); n != 0 {
		t.Fatalf("%d actions after a rejection; want none", n)
	}
}

// TestReevaluateAfterPolicyChange: users known while forced-change was off
// get their decisions once when it is turned on, through the brake, and a
// second restart does nothing more.
func TestReevaluateAfterPolicyChange(t *testing.T) {
	for _, tc := range []struct {
		name      string
		threshold int
		want      string
	}{{"below_threshold_released", 10, BatchReleased}, {"above_threshold_held", 2, BatchHeld}} {
		t.Run(tc.name, func(t *testing.T) {
			_, conn := natstest.Run(t)
			off := backfillPolicy()
			off.ForcedChange = false
			r := startEvaluator(t, conn, off, tc.threshold)
			for i := range 3 {
				u := flaggedUser(i, 0)
				publishEvent(t, conn, u.EventID(), events.TypeADUser, u)
			}
			waitFor(t, "3 users stored", 20*time.Second, func() bool {
				keys, _ := r.svc.userKeys(context.Background())
				return len(keys) == 3
			})
			time.Sleep(500 * time.Millisecond)
			r.stop()
			if n := len(actions(t, conn, events.ActionRequireChange)); n != 0 {
				t.Fatalf("%d actions with the rule off", n)
			}

			r = startEvaluator(t, conn, backfillPolicy(), tc.threshold)
			waitFor(t, "the re-evaluation batch", 20*time.Second, func() bool {
				bs := batches(t, r)
				return len(bs) == 1 && bs[0].Status == tc.want && !bs[0].Releasing
			})
			if tc.want == BatchHeld {
				if n := len(actions(t, conn, events.ActionRequireChange)); n != 0 {
					t.Fatalf("%d actions while the re-evaluation is held", n)
				}
				if a := actions(t, conn, events.ActionAlert); len(a) != 1 || !strings.Contains(a[0].Reason, "3 users") {
					t.Fatalf("alerts %+v", a)
				}
				if _, err := r.svc.gate.Approve(context.Background(), batches(t, r)[0].ID, "alice"); err != nil {
					t.Fatal(err)
				}
			}
			if n := len(actions(t, conn, events.ActionRequireChange)); n != 3 {
				t.Fatalf("%d require actions after the policy change; want 3", n)
			}
			recs := auditRecords(t, conn, "reevaluate")
			if len(recs) != 2 || recs[0].Outcome != "baseline" || !strings.Contains(recs[1].Detail, "3 users re-evaluated") {
				t.Fatalf("reevaluate audit %+v; want baseline then one run of 3 users", recs)
			}

			// a second restart with the same policy does nothing
			r.stop()
			r = startEvaluator(t, conn, backfillPolicy(), tc.threshold)
			time.Sleep(3 * time.Second)
			if n := len(actions(t, conn, events.ActionRequireChange)); n != 3 {
				t.Fatalf("%d require actions after a second restart; want still 3", n)
			}
			if n := len(auditRecords(t, conn, "reevaluate")); n != 2 {
				t.Errorf("%d reevaluate audit records after a second restart; want 2", n)
			}
		})
	}
}

// TestReevaluateNeverExpiresTurnedOn: the cloud never-expires rule turned on
// between two starts fixes the known users' passwordPolicies once; a third
// start with the same policy does nothing.
func TestReevaluateNeverExpiresTurnedOn(t *testing.T) {
	_, conn := natstest.Run(t)
	off := backfillPolicy()
	r := startEvaluator(t, conn, off, 10)
	for i := range 2 {
		u := flaggedUser(i, events.ToFileTime(time.Now()))
		u.UserAccountControl |= events.UACDontExpirePassword
		u.ImmutableID = fmt.Sprintf("imm%d", i)
		publishEvent(t, conn, u.EventID(), events.TypeADUser, u)
		c := events.CloudUser{ID: fmt.Sprintf("cloud-%d", i), UPN: u.UPN, ImmutableID: u.ImmutableID, SyncEnabled: true,
			AccountEnabled: true, PasswordPolicies: "None"}
		ev, err := events.NewEnvelope("graph.cloud-"+fmt.Sprint(i), events.SourceGraph, events.TypeGraphUser, time.Now(), c)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond) // the AD user is indexed before its cloud account arrives
		if _, err := natsx.NewPublisher(conn.JS).PublishJSON(context.Background(), ev.Subject(), ev.ID, ev); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "2 users joined to their cloud accounts", 20*time.Second, func() bool {
		keys, _ := r.svc.userKeys(context.Background())
		joined := 0
		for _, k := range keys {
			if st, _, err := r.svc.load(context.Background(), k); err == nil && st.Cloud != nil {
				joined++
			}
		}
		return joined == 2
	})
	r.stop()
	if n := len(actions(t, conn, events.ActionSetPasswordPolicies)); n != 0 {
		t.Fatalf("%d passwordPolicies writes with the rule off", n)
	}

	on := backfillPolicy()
	on.Cloud.NeverExpires, on.Cloud.PendingTimeout = true, 10*time.Minute
	r = startEvaluator(t, conn, on, 10)
	waitFor(t, "2 passwordPolicies writes", 20*time.Second, func() bool {
		return len(actions(t, conn, events.ActionSetPasswordPolicies)) == 2
	})
	for _, a := range actions(t, conn, events.ActionSetPasswordPolicies) {
		if a.Policies != "DisablePasswordExpiration" {
			t.Errorf("wrote %q, want DisablePasswordExpiration", a.Policies)
		}
	}
	r.stop()
	startEvaluator(t, conn, on, 10)
	time.Sleep(3 * time.Second)
	if n := len(actions(t, conn, events.ActionSetPasswordPolicies)); n != 2 {
		t.Fatalf("%d passwordPolicies writes after a third start; want still 2", n)
	}
}
