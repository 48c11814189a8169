package userview

import (
	"testing"
	"time"

	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/shared/events"
)

// TestNextNoticeCountsWhatDryRunPretended: under dry-run the user page
// shows the next notice the scheduler will fire, not the one dry-run
// already "sent" (recorded apart from the live state); live again, the
// notices dry-run only pretended are due for real.
func TestNextNoticeCountsWhatDryRunPretended(t *testing.T) {
	set := time.Date(2026, 3, 2, 8, 30, 0, 0, time.UTC)
	exp := set.Add(42 * 24 * time.Hour)
	p := rules.Policy{IncludeOUs: []string{"OU=Corp,DC=example,DC=test"}, DryRun: true,
		Expiry: rules.ExpiryPolicy{Enabled: true, LeadDays: []int{14, 7}, Notify: true, MaxLate: 36 * time.Hour}}
	u := events.ADUser{Domain: "example.test", ObjectGUID: "guid-alice", ImmutableID: "imm", DN: "CN=Alice,OU=Corp,DC=example,DC=test",
		UPN: "alice@example.test", PwdLastSet: events.ToFileTime(set), UserAccountControl: 512, USNChanged: 10,
		ExpiryComputed: events.ToFileTime(exp), Expiry: events.ToFileTime(exp), ExpirySource: events.ExpirySourceComputed}
	res := rules.EvaluateAD(p, rules.State{}, events.Envelope{ID: u.EventID(), Time: set}, u)
	s := res.State
	at := exp.Add(-14 * 24 * time.Hour)
	tm, ok := rules.NextDue(p, s)
	if !ok || tm.LeadDays != 14 {
		t.Fatalf("scheduler's next: %+v %v, want lead 14", tm, ok)
	}
	fired := rules.EvaluateExpiry(p, s, events.Envelope{ID: tm.EventID(), Source: events.SourceTimer, Type: events.TypeExpiry, Time: at}, tm, at)
	if !fired.Changed || len(fired.Actions) != 1 || !fired.Actions[0].DryRun {
		t.Fatalf("dry-run fire of lead 14: %+v", fired)
	}
	s = fired.State

	for _, tc := range []struct {
		name     string
		dryRun   bool
		wantLead int
	}{
		{"dry_run", true, 7},      // lead 14 pretended: the next is 7
		{"live_again", false, 14}, // pretended is not sent: 14 is still due
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := p
			p.DryRun = tc.dryRun
			v := View{State: s}
			v.derive(p, at)
			if v.NextNotice == nil || v.NextNotice.LeadDays != tc.wantLead {
				t.Errorf("next notice %+v, want lead %d", v.NextNotice, tc.wantLead)
			}
		})
	}
}
