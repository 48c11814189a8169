package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/natstest"
)

func TestShowUserJoinsBothSidesAndTimeline(t *testing.T) {
	_, conn := natstest.Run(t)
	ctx := context.Background()
	identity, _ := conn.JS.KeyValue(ctx, natsx.BucketIdentity)
	users, _ := conn.JS.KeyValue(ctx, natsx.BucketUsers)
	st := rules.State{Seen: true, InScope: true, ChangeRequired: true, RequiredByAction: "forced-change.g1.ev1",
		AD:    events.ADUser{ObjectGUID: "g1", DN: "CN=Alice,OU=Corp,DC=example,DC=test", UPN: "alice@example.test"},
		Cloud: &events.CloudUser{ID: "c1", UPN: "alice@example.test", SyncEnabled: true, PasswordPolicies: "None"}}
	data, _ := json.Marshal(st)
	if _, err := users.Put(ctx, "g1", data); err != nil {
		t.Fatal(err)
	}
	if _, err := identity.Put(ctx, "upn.alice_example.test", []byte("g1")); err != nil {
		t.Fatal(err)
	}
	w := audit.NewWriter(natsx.NewPublisher(conn.JS), nil)
	for i, step := range []string{"revoke_sessions", "add_pending_group"} {
		rec := events.AuditRecord{Time: time.Date(2026, 11, 2, 9, 0, i, 0, time.UTC), Kind: "step", Action: "require_password_change",
			Step: step, User: events.UserRef{ObjectGUID: "g1"}, Outcome: "ok", HTTPStatus: 204}
		if err := w.Write(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	_ = w.Write(ctx, events.AuditRecord{Kind: "step", Step: "other user", User: events.UserRef{ObjectGUID: "g2"}, Outcome: "ok"})
	// One action queued (a 429 on the way), one dead-lettered.
	g1 := events.UserRef{ObjectGUID: "g1"}
	for _, rec := range []events.AuditRecord{
		{Time: time.Date(2026, 11, 2, 9, 1, 0, 0, time.UTC), Kind: "decision", Rule: "forced-change", ActionID: "forced-change.g1.ev2", Action: "require_password_change", User: g1, Outcome: "act"},
		{Time: time.Date(2026, 11, 2, 9, 1, 1, 0, time.UTC), Kind: "step", ActionID: "forced-change.g1.ev2", Action: "require_password_change", Step: "set_force_change", User: g1, Outcome: "failed", HTTPStatus: 429},
		{Time: time.Date(2026, 11, 2, 9, 2, 0, 0, time.UTC), Kind: "decision", Rule: "password-changed", ActionID: "password-changed.g1.ev3", Action: "clear_force_change", User: g1, Outcome: "act"},
		{Time: time.Date(2026, 11, 2, 9, 2, 1, 0, time.UTC), Kind: "action", ActionID: "password-changed.g1.ev3", Action: "clear_force_change", User: g1, Outcome: events.OutcomeDeadLetter, Detail: "403 Authorization_RequestDenied"},
	} {
		if err := w.Write(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}

	var out bytes.Buffer
	if err := showUser(ctx, conn.JS, "Alice@Example.test", rules.Policy{}, 10, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CN=Alice,OU=Corp", "Entra", "c1", "synced", "cloud password change required by forced-change.g1.ev1",
		"require_password_change / revoke_sessions", "add_pending_group", "Timeline (last 6)",
		"Queued actions", "require_password_change (forced-change, decided 2026-11-02T09:01:00Z; last: set_force_change failed (429))",
		"Dead letters", "clear_force_change at 2026-11-02T09:02:01Z: 403 Authorization_RequestDenied"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "other user") {
		t.Errorf("another user's audit shown:\n%s", out.String())
	}

	out.Reset()
	if err := showUser(ctx, conn.JS, "nobody@example.test", rules.Policy{}, 10, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "no AD user") {
		t.Errorf("unknown user: %s", out.String())
	}
}
