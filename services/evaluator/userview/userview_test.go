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

// TestQueuedAndDeadLetters: from the timeline, an action decided and not
// finished is queued (with its latest step), a finished one is not, and a
// dead-lettered one is listed with its reason.
func TestQueuedAndDeadLetters(t *testing.T) {
	at := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	rec := func(sec int, kind, id, step, outcome string, status int, detail string) events.AuditRecord {
		return events.AuditRecord{Time: at.Add(time.Duration(sec) * time.Second), Kind: kind, ActionID: id, Action: "force_change",
			Rule: "forced-change", Step: step, Outcome: outcome, HTTPStatus: status, Detail: detail}
	}
	for _, tc := range []struct {
		name      string
		timeline  []events.AuditRecord
		queued    []QueuedAction
		deadCount int
	}{
		{"nothing", nil, []QueuedAction{}, 0},
		{"decided, not started", []events.AuditRecord{rec(0, "decision", "a1", "", "act", 0, "")},
			[]QueuedAction{{ActionID: "a1", Action: "force_change", Rule: "forced-change", Since: at}}, 0},
		{"retrying after a 429", []events.AuditRecord{
			rec(0, "decision", "a1", "", "act", 0, ""), rec(1, "step", "a1", "must_change", "failed", 429, "throttled")},
			[]QueuedAction{{ActionID: "a1", Action: "force_change", Rule: "forced-change", Since: at, LastStep: "must_change failed (429)"}}, 0},
		{"done", []events.AuditRecord{
			rec(0, "decision", "a1", "", "act", 0, ""), rec(1, "step", "a1", "must_change", "ok", 204, ""), rec(2, "action", "a1", "", "ok", 0, "")},
			[]QueuedAction{}, 0},
		{"dead letter, and a decision without an action", []events.AuditRecord{
			rec(0, "decision", "", "", "skip", 0, "out of scope"),
			rec(1, "decision", "a1", "", "act", 0, ""), rec(2, "action", "a1", "", events.OutcomeDeadLetter, 403, "Authorization_RequestDenied")},
			[]QueuedAction{}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, d := queuedAndDead(tc.timeline)
			if len(q) != len(tc.queued) || len(d) != tc.deadCount {
				t.Fatalf("queued %+v, dead %+v", q, d)
			}
			for i := range q {
				if q[i] != tc.queued[i] {
					t.Fatalf("queued[%d] = %+v, want %+v", i, q[i], tc.queued[i])
				}
			}
			if tc.deadCount > 0 && (d[0].ActionID != "a1" || d[0].Reason != "Authorization_RequestDenied") {
				t.Fatalf("dead letter %+v", d[0])
			}
		})
	}
}
