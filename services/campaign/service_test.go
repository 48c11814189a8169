package campaign_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/campaign"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// runInProcess runs the runner in this process until the campaign ends.
func (w *world) runInProcess(id string, pacer *campaign.Pacer, timeout time.Duration) {
	w.t.Helper()
	var ad campaign.ADWriter
	if w.ldap != nil {
		ad = w.ldap
	}
	w.runInProcessWith(id, w.client, ad, pacer, timeout)
}

// runInProcessWith is runInProcess through the given Graph batcher and AD
// writer (nil: no AD), e.g. wrappers that lose answers.
func (w *world) runInProcessWith(id string, batch graph.Batcher, ad campaign.ADWriter, pacer *campaign.Pacer, timeout time.Duration) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	rd := &campaign.RunnerDeps{Batch: batch, Pacer: pacer, BreakGlass: w.breakGlass, Risk: w.client,
		Cfg: campaign.RunConfig{RetryBase: 50 * time.Millisecond, PollEvery: 50 * time.Millisecond, VerifyDelay: 50 * time.Millisecond,
			BreakGlassEvery: 100 * time.Millisecond, GraphBaseURL: w.graphBase}}
	if w.runCfg != nil {
		w.runCfg(&rd.Cfg)
	}
	if ad != nil {
		rd.AD = func(string) (campaign.ADWriter, error) { return ad, nil }
	}
	r := w.runner(rd, zerolog.New(zerolog.NewTestWriter(w.t)).Level(zerolog.InfoLevel))
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	for ctx.Err() == nil {
		if c, _, err := w.store.Get(ctx, id); err == nil && c.State.Terminal() {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-done
}

func TestCloudCampaignInProcess(t *testing.T) {
	w := newWorld(t, false, graphsim.Options{})
	const gid = "bbbbbbbb-0000-4000-8000-00000000000a"
	w.sim.PutGroup(gid, "Sales")
	users := w.putCloudUsers(gid, "sa", 150)
	c := w.startCampaign(campaign.Spec{Name: "small", Include: campaign.Selector{EntraGroups: []string{gid}},
		Actions: campaign.Actions{RequireChange: true, RevokeSessions: true}})
	w.runInProcess(c.ID, campaign.NewPacer(100, time.Second, 1), time.Minute)
	st, _ := w.svc.Status(ctxT(t), c.ID)
	// The flag-only PATCH changes nothing (Graph, microsoft-graph-docs#4267):
	// every read-back misses the flag, and with the default fallback (chain,
	// no pending group) the campaign's own revoke is what remains.
	if st.Campaign.State != campaign.StateDone || st.Stats.Done != len(users) || st.Stats.Fallbacks != len(users) {
		t.Fatalf("status %+v", st)
	}
	// Every step's outcome is in the audit trail too.
	stream, err := w.conn.JS.Stream(ctxT(t), natsx.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctxT(t), jetstream.WithSubjectFilter("audit.step"))
	// must_change, verify_must_change's read-back that missed the flag and
	// its outcome (sessions revoked by the campaign), revoke
	if err != nil || info.State.Subjects["audit.step"] != uint64(4*len(users)) {
		t.Fatalf("audit.step records: %v, %v", info.State.Subjects, err)
	}
}

func TestApprovalAndInjection(t *testing.T) {
	w := newWorld(t, false, graphsim.Options{})
	ctx := ctxT(t)
	_, err := w.svc.Create(ctx, campaign.Spec{Name: "x", Include: campaign.Selector{LDAPFilter: "(department=Finance))(|(objectClass=*)"},
		Actions: campaign.Actions{RequireChange: true}}, "alice")
	if !errors.Is(err, campaign.ErrInvalid) || !errors.Is(err, campaign.ErrInvalidFilter) {
		t.Fatalf("filter injection: %v", err)
	}
	w.putCloudUsers("", "ap", 3)
	c, err := w.svc.Create(ctx, campaign.Spec{Name: "x", Include: campaign.Selector{UPNs: []string{"ap00000" + tenantSuffix}},
		Actions: campaign.Actions{RevokeSessions: true}}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	w.svcWith(func(d *campaign.Deps) { d.Limits.ApprovalThreshold = 0 }) // every campaign needs a second person
	if _, err := w.svc.Approve(ctx, c.ID, "bob"); !errors.Is(err, campaign.ErrConflict) {
		t.Fatalf("approve before preview: %v", err)
	}
	if _, err := w.svc.Preview(ctx, c.ID, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.svc.Start(ctx, c.ID, "alice"); !errors.Is(err, campaign.ErrConflict) {
		t.Fatalf("start unapproved: %v", err)
	}
	if _, err := w.svc.Approve(ctx, c.ID, "ALICE"); !errors.Is(err, campaign.ErrForbidden) {
		t.Fatalf("creator approving: %v", err)
	}

	// The hard cap refuses a larger selection at preview, naming the key;
	// nothing is recorded as previewed.
	big, err := w.svc.Create(ctx, campaign.Spec{Name: "too many", Include: campaign.Selector{UPNs: []string{
		"ap00000" + tenantSuffix, "ap00001" + tenantSuffix, "ap00002" + tenantSuffix}}, Actions: campaign.Actions{RevokeSessions: true}}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	w.svcWith(func(d *campaign.Deps) { d.Limits.HardCap = 2 })
	if _, err := w.svc.Preview(ctx, big.ID, "alice"); !errors.Is(err, campaign.ErrTooLarge) || !strings.Contains(err.Error(), "campaigns.hard_cap") {
		t.Fatalf("3 users under a hard cap of 2: %v", err)
	}
	if got, err := w.svc.Status(ctx, big.ID); err != nil || got.Campaign.Preview != nil || got.Campaign.State != campaign.StateDraft {
		t.Fatalf("after a refused preview: %+v, %v", got.Campaign, err)
	}
	if _, err := w.svc.Approve(ctx, big.ID, "bob"); !errors.Is(err, campaign.ErrConflict) {
		t.Fatalf("approving a campaign refused at preview: %v", err)
	}
	w.svcWith(func(d *campaign.Deps) { d.Limits.HardCap = 3 }) // at the cap is allowed
	if _, err := w.svc.Preview(ctx, big.ID, "alice"); err != nil {
		t.Fatalf("3 users under a hard cap of 3: %v", err)
	}
}

// Pause stops the writes (those in flight finish), resume continues from
// the records, cancel leaves the rest alone; nothing is written twice.
func TestPauseResumeCancel(t *testing.T) {
	w := newWorld(t, false, graphsim.Options{WriteBudget: 200}.TimeScaled(time.Second))
	const gid = "dddddddd-0000-4000-8000-00000000000a"
	w.sim.PutGroup(gid, "Ops")
	users := w.putCloudUsers(gid, "pr", 400)
	ctx := ctxT(t)
	newCampaign := func() string {
		c, err := w.svc.Create(ctx, campaign.Spec{Name: "p", Include: campaign.Selector{EntraGroups: []string{gid}},
			Actions: campaign.Actions{RevokeSessions: true}}, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if _, err = w.svc.Preview(ctx, c.ID, "alice"); err == nil {
			_, err = w.svc.Approve(ctx, c.ID, "bob")
		}
		if err == nil {
			_, err = w.svc.Start(ctx, c.ID, "alice")
		}
		if err != nil {
			t.Fatal(err)
		}
		return c.ID
	}
	writes := func() int { return w.sim.Stats().Writes }
	runner := w.runner(&campaign.RunnerDeps{Batch: w.client, Pacer: campaign.NewPacer(200, time.Second, 1),
		Cfg: campaign.RunConfig{PollEvery: 20 * time.Millisecond, GraphBaseURL: w.graphBase}},
		zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runner.Run(rctx) }()
	defer func() { cancel(); <-done }()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (writes %d)", what, writes())
			}
		}
	}

	id := newCampaign()
	waitFor("the first writes", func() bool { return writes() >= 100 })
	if _, err := w.svc.Pause(ctx, id, "alice"); err != nil {
		t.Fatal(err)
	}
	stable := func() int { // in-flight batches finish
		for n := writes(); ; {
			time.Sleep(300 * time.Millisecond)
			if m := writes(); m == n {
				return n
			} else {
				n = m
			}
		}
	}
	paused := stable()
	time.Sleep(1200 * time.Millisecond)
	if writes() != paused || paused >= len(users) {
		t.Fatalf("writes went on while paused: %d -> %d", paused, writes())
	}
	if _, err := w.svc.Resume(ctx, id, "alice"); err != nil {
		t.Fatal(err)
	}
	w.waitState(id, campaign.StateDone, 20*time.Second)
	if writes() != len(users) {
		t.Fatalf("%d writes for %d users", writes(), len(users))
	}

	id = newCampaign()
	waitFor("the second campaign's writes", func() bool { return writes() >= len(users)+50 })
	if _, err := w.svc.Cancel(ctx, id, "alice"); err != nil {
		t.Fatal(err)
	}
	stable()
	rep, err := w.svc.Report(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	pending := 0
	for _, u := range rep.Users {
		if u.Outcome == "pending" {
			pending++
		}
	}
	if rep.Campaign.State != campaign.StateCancelled || pending == 0 || writes() != 2*len(users)-pending {
		t.Fatalf("cancelled: state %s, %d pending, %d writes", rep.Campaign.State, pending, writes())
	}
}
