package graphwatch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/services/ingest/graphwatch"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// riskEvents reads every events.graph.risk message stored so far.
func riskEvents(t *testing.T, js jetstream.JetStream) []events.RiskEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out []events.RiskEvent
	for seq := uint64(1); ; seq++ {
		stream, err := js.Stream(ctx, natsx.StreamEvents)
		if err != nil {
			t.Fatal(err)
		}
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			return out // past the last message
		}
		if m.Subject != "events.graph."+events.TypeGraphRisk {
			continue
		}
		var env events.Envelope
		var ev events.RiskEvent
		if err := json.Unmarshal(m.Data, &env); err != nil || env.Decode(&ev) != nil {
			t.Fatalf("undecodable risk event %d", seq)
		}
		out = append(out, ev)
	}
}

func TestRiskPollerPublishesOncePerChange(t *testing.T) {
	e := newEnvWith(t, graphsim.Options{Roles: append(append([]string{}, graphsim.DefaultRoles...), graphsim.RiskRoles...)})
	// 505 risky users: more than one page of 500.
	const n = 505
	for i := range n {
		e.sim.PutUser(graphsim.User{ID: userID(i), UserPrincipalName: fmt.Sprintf("user%d@example.test", i), AccountEnabled: true,
			OnPremisesSyncEnabled: i%2 == 0, OnPremisesImmutableId: fmt.Sprintf("imm%d", i)})
		if _, err := e.sim.RaiseRisk(userID(i), "leakedCredentials", graphsim.RiskLevelHigh); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	p, err := graphwatch.NewRiskPoller(ctx, graphwatch.RiskConfig{Holder: "t1", EventTypes: []string{"leakedCredentials"}},
		e.client, e.client, e.conn.JS, e.log)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p.Round(ctx); err != nil || got != n {
		t.Fatalf("first round: %d events, %v; want %d", got, err, n)
	}
	evs := riskEvents(t, e.conn.JS)
	if len(evs) != n {
		t.Fatalf("stored %d risk events, want %d", len(evs), n)
	}
	byID := map[string]events.RiskEvent{}
	for _, ev := range evs {
		byID[ev.User.ID] = ev
	}
	ev0 := byID[userID(0)]
	if ev0.Cloud == nil || !ev0.Cloud.SyncEnabled || ev0.Cloud.ImmutableID != "imm0" || ev0.User.Level != "high" ||
		ev0.User.State != "atRisk" || len(ev0.Detections) != 1 || ev0.Detections[0].EventType != "leakedCredentials" {
		t.Fatalf("event of user 0: %+v (cloud %+v)", ev0, ev0.Cloud)
	}
	if c := byID[userID(1)].Cloud; c == nil || c.SyncEnabled {
		t.Fatalf("user 1 is cloud-managed: %+v", c)
	}

	// Nothing changed: the next round stores nothing new (it may re-read
	// the newest user, whose event ID is the same).
	if _, err := p.Round(ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(riskEvents(t, e.conn.JS)); got != n {
		t.Fatalf("after an idle round: %d events, want %d", got, n)
	}
	// A new detection of one user: exactly one more event.
	time.Sleep(1100 * time.Millisecond) // the filter's literal has whole seconds
	if _, err := e.sim.RaiseRisk(userID(3), "leakedCredentials", graphsim.RiskLevelHigh); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Round(ctx); err != nil {
		t.Fatal(err)
	}
	evs = riskEvents(t, e.conn.JS)
	if len(evs) != n+1 || evs[n].User.ID != userID(3) || len(evs[n].Detections) != 2 {
		t.Fatalf("after a new detection: %d events, last %+v", len(evs), evs[len(evs)-1].User)
	}

	// Without Entra ID P2: Graph's 403, reported as such.
	e.sim.SetRiskLicensed(false)
	if _, err := p.Round(ctx); !graph.IsUnlicensed(err) {
		t.Fatalf("unlicensed round: %v", err)
	}
}
