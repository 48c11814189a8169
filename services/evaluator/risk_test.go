package evaluator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/natstest"
)

func riskEvent(t *testing.T, conn *natsx.Conn, u events.ADUser, detectionID, envID string) {
	t.Helper()
	r := events.RiskEvent{
		User:       events.RiskyUser{ID: "cloud-" + u.ObjectGUID, UPN: u.UPN, Level: "high", State: "atRisk"},
		Detections: []events.RiskDetection{{ID: detectionID, EventType: "leakedCredentials", Level: "high", State: "atRisk", Detected: time.Now()}},
		Cloud:      &events.CloudUser{ID: "cloud-" + u.ObjectGUID, UPN: u.UPN, SyncEnabled: true},
	}
	ev, err := events.NewEnvelope(envID, events.SourceGraph, events.TypeGraphRisk, time.Now(), r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natsx.NewPublisher(conn.JS).PublishJSON(context.Background(), ev.Subject(), ev.ID, ev); err != nil {
		t.Fatal(err)
	}
}

// TestRiskHourlyCapHoldsForApproval: five detections in an hour with a cap
// of two: two AD writes are decided, three wait in a held batch until an
// approver releases them; the same detections read again decide nothing.
func TestRiskHourlyCapHoldsForApproval(t *testing.T) {
	if time.Now().Minute() == 59 {
		time.Sleep(70 * time.Second) // the cap counts per clock hour
	}
	_, conn := natstest.Run(t)
	p := rules.Policy{ForcedChange: true, PasswordChanged: true,
		Risk: rules.RiskPolicy{Enabled: true, Levels: []string{"high"}, States: []string{"atRisk"}, DetectionTypes: []string{"leakedCredentials"}}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc, err := New(ctx, Deps{JS: conn.JS, Policy: p, Log: zerolog.Nop(), Holder: "test-replica", RiskHourlyCap: 2,
		Backfill: GateConfig{Threshold: 100, Settle: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = svc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	var users []events.ADUser
	for i := range 5 {
		u := flaggedUser(i, events.ToFileTime(time.Now().Add(-time.Hour)))
		users = append(users, u)
		publishEvent(t, conn, u.EventID(), events.TypeADUser, u)
	}
	time.Sleep(time.Second) // the AD users indexed first
	for i, u := range users {
		riskEvent(t, conn, u, fmt.Sprintf("det-%d", i), fmt.Sprintf("risk.%d.a", i))
	}
	waitForCount(t, "2 AD writes", func() int { return len(actions(t, conn, events.ActionADRequireChange)) }, 2)

	id := "risk-" + time.Now().UTC().Format("2006010215")
	var b Batch
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err = svc.gate.Get(ctx, id)
		if err == nil && b.Users == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("held batch %s: %+v, %v; want 3 users held", id, b, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if b.Status != BatchHeld || b.Kind != BatchRisk {
		t.Fatalf("batch %+v, want held risk", b)
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(actions(t, conn, events.ActionADRequireChange)); n != 2 {
		t.Fatalf("%d AD writes decided while held, want 2", n)
	}
	// The same detections in new events (a later poll): nothing new, not even staged.
	for i, u := range users {
		riskEvent(t, conn, u, fmt.Sprintf("det-%d", i), fmt.Sprintf("risk.%d.b", i))
	}
	time.Sleep(time.Second)
	if b, _ := svc.gate.Get(ctx, id); b.Users != 3 {
		t.Fatalf("re-read detections changed the held batch: %+v", b)
	}
	if _, err := svc.gate.Approve(ctx, id, "approver-1"); err != nil {
		t.Fatal(err)
	}
	waitForCount(t, "5 AD writes after approval", func() int { return len(actions(t, conn, events.ActionADRequireChange)) }, 5)
	seen := map[string]bool{}
	for _, a := range actions(t, conn, events.ActionADRequireChange) {
		if seen[a.User.ObjectGUID] {
			t.Fatalf("user %s acted on twice", a.User.UPN)
		}
		seen[a.User.ObjectGUID] = true
	}
}

func waitForCount(t *testing.T, what string, count func() int, want int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		n := count()
		if n == want {
			return
		}
		if n > want || time.Now().After(deadline) {
			t.Fatalf("%s: got %d", what, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
