package campaign_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/campaign"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// alerts returns the alert actions published on ACTIONS.
func (w *world) alerts() []events.Action {
	w.t.Helper()
	ctx := ctxT(w.t)
	c, err := w.conn.JS.OrderedConsumer(ctx, natsx.StreamActions, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"actions.alert"}})
	if err != nil {
		w.t.Fatal(err)
	}
	var out []events.Action
	for {
		batch, err := c.FetchNoWait(100)
		if err != nil {
			w.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			var a events.Action
			if err := json.Unmarshal(m.Data(), &a); err != nil {
				w.t.Fatal(err)
			}
			out, n = append(out, a), n+1
		}
		if n == 0 {
			return out
		}
	}
}

// startCampaign creates, previews and starts spec as alice, with bob's
// approval when the preview asks for one.
func (w *world) startCampaign(spec campaign.Spec) campaign.Campaign {
	w.t.Helper()
	ctx := ctxT(w.t)
	c, err := w.svc.Create(ctx, spec, "alice")
	if err == nil {
		c, err = w.svc.Preview(ctx, c.ID, "alice")
	}
	if err == nil && c.NeedsApproval {
		c, err = w.svc.Approve(ctx, c.ID, "bob")
	}
	if err == nil {
		c, err = w.svc.Start(ctx, c.ID, "alice")
	}
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

// TestCampaignFinishedWithFailuresAlertsAdmins: a campaign that finishes
// with users it could not reset publishes one ActionAlert (the notifier
// posts it to the Workflows webhook); a clean campaign publishes none.
func TestCampaignFinishedWithFailuresAlertsAdmins(t *testing.T) {
	w := newWorld(t, false, graphsim.Options{})
	users := w.putCloudUsers("", "al", 3)
	var upns []string
	for _, u := range users {
		upns = append(upns, u.UserPrincipalName)
	}
	clean := w.startCampaign(campaign.Spec{Name: "clean", Include: campaign.Selector{UPNs: upns[:1]},
		Actions: campaign.Actions{RevokeSessions: true}})
	w.runInProcess(clean.ID, campaign.NewPacer(100, time.Second, 1), time.Minute)
	if got := w.alerts(); len(got) != 0 {
		t.Fatalf("alerts after a clean campaign: %+v", got)
	}

	partial := w.startCampaign(campaign.Spec{Name: "partial", Reason: "INC-7", Include: campaign.Selector{UPNs: upns},
		Actions: campaign.Actions{RevokeSessions: true}})
	w.sim.DeleteUser(users[1].ID) // gone between preview and run: its revoke fails
	w.runInProcess(partial.ID, campaign.NewPacer(100, time.Second, 1), time.Minute)
	st, err := w.svc.Status(ctxT(t), partial.ID)
	if err != nil || st.Campaign.State != campaign.StateDone || st.Stats.Failed != 1 {
		t.Fatalf("partial campaign: %+v %v", st, err)
	}
	got := w.alerts()
	if len(got) != 1 || got[0].Campaign != partial.ID || got[0].Kind != events.ActionAlert ||
		!strings.Contains(got[0].Reason, "1 of 3 users could not be reset") || !strings.Contains(got[0].Reason, "INC-7") {
		t.Fatalf("alerts %+v", got)
	}

}

// TestCampaignFailedAlertsAdmins: a campaign that fails outright (synced
// users, but this runner has no AD to write pwdLastSet with) publishes one
// alert naming it and the cause.
func TestCampaignFailedAlertsAdmins(t *testing.T) {
	w := newWorld(t, true, graphsim.Options{})
	w.adUsers(1)
	w.scope.IncludeDisabled = true // adtest's fast users are disabled
	c := w.startCampaign(campaign.Spec{Name: "no-ad", Include: campaign.Selector{OUs: []string{w.ou}},
		Actions: campaign.Actions{RequireChange: true}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := w.runner(&campaign.RunnerDeps{Batch: w.client, Pacer: campaign.NewPacer(100, time.Second, 1),
		Cfg: campaign.RunConfig{PollEvery: 50 * time.Millisecond, GraphBaseURL: w.graphBase}}, zerolog.New(zerolog.NewTestWriter(t)))
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	for ctx.Err() == nil {
		if got, _, err := w.store.Get(ctx, c.ID); err == nil && got.State.Terminal() {
			if got.State != campaign.StateFailed {
				t.Fatalf("campaign state %s, want failed", got.State)
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-done
	got := w.alerts()
	if len(got) != 1 || got[0].Campaign != c.ID || !strings.Contains(got[0].Reason, `campaign "no-ad" failed: synced users selected but no AD domain`) {
		t.Fatalf("alerts %+v", got)
	}
}
