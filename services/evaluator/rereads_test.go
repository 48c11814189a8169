package evaluator

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/shared/userstate"
	"github.com/pwsync/pwsync/testrig/natstest"
)

// TestOneWriteOneActionWhateverReadsIt: a reset is evaluated and its
// action published, and the process dies before it stores the user's
// state (simulated: the state deleted). Meanwhile the same pwdLastSet write
// is read again under a new event ID: after a password-policy change
// (policy revision 3, a later uSNChanged), or from the other DC. Each read
// evaluated against the old state publishes the forced change under the
// same ID, so ACTIONS holds it once (CI once saw it carried out twice).
func TestOneWriteOneActionWhateverReadsIt(t *testing.T) {
	_, conn := natstest.Run(t)
	natstest.EnsureTopology(t, conn.JS, 1)
	ctx := context.Background()
	svc, err := New(ctx, Deps{JS: conn.JS, Policy: backfillPolicy(), Log: zerolog.Nop(), Holder: "test"})
	if err != nil {
		t.Fatal(err)
	}
	u := flaggedUser(1, 133_000_000_000_000_000)
	u.PolicyRev, u.DC, u.PwdVersion = 2, "aaaaaaaa-0000", 4
	handle := func(u events.ADUser) {
		t.Helper()
		ev, err := events.NewEnvelope(u.EventID(), events.SourceAD, events.TypeADUser, time.Now(), u)
		if err != nil {
			t.Fatal(err)
		}
		if err := svc.Handle(ctx, ev, natsx.Meta{}); err != nil {
			t.Fatalf("evaluating %s: %v", ev.ID, err)
		}
	}
	handle(u) // seen, password set: no action
	reset := u
	reset.PwdLastSet, reset.USNChanged, reset.PwdVersion = 0, u.USNChanged+1, 5
	forget := func() {
		t.Helper()
		if err := svc.users.Delete(ctx, userstate.UserKey(u.ObjectGUID)); err != nil {
			t.Fatal(err)
		}
		handle(u) // the state before the reset again, as if the reset's read never stored it
	}
	handle(reset)
	for _, again := range []func(*events.ADUser){
		func(x *events.ADUser) { x.PolicyRev = 3 },                                   // re-read after a policy change
		func(x *events.ADUser) { x.PolicyRev, x.USNChanged = 3, reset.USNChanged+2 }, // a later state of the same write
		func(x *events.ADUser) { x.DC, x.USNChanged = "bbbbbbbb-0000", 77 },          // the write seen on the other DC
	} {
		forget()
		r := reset
		again(&r)
		handle(r)
	}
	got := actions(t, conn, events.ActionRequireChange)
	if len(got) != 1 {
		ids := make([]string, len(got))
		for i, a := range got {
			ids[i] = a.ID
		}
		t.Fatalf("one pwdLastSet write published %d forced changes %v, want 1", len(got), ids)
	}
}
