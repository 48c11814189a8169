package rules

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/events"
)

var at = time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)

const (
	ouCorp   = "OU=People,OU=Corp,DC=example,DC=test"
	bgGroup  = "CN=Break-Glass,OU=Groups,DC=example,DC=test"
	setTime  = int64(134000000000000000) // a FILETIME in 2025
	setTime2 = setTime + 1_000_000_000
)

func policy() Policy {
	return Policy{IncludeOUs: []string{"OU=Corp,DC=example,DC=test"}, BreakGlassUPNs: []string{"BG@example.test"},
		BreakGlassGroups: []string{bgGroup}, ForcedChange: true, IncludeNeverExpires: true, Backfill: true, PasswordChanged: true}
}

// user builds an AD state; mods tweak it.
func user(usn, pwdLastSet int64, mods ...func(*events.ADUser)) events.ADUser {
	u := events.ADUser{Domain: "example.test", ObjectGUID: "guid-alice", ImmutableID: "imm", DN: "CN=Alice," + ouCorp,
		UPN: "alice@example.test", PwdLastSet: pwdLastSet, UserAccountControl: 512, USNChanged: usn}
	for _, m := range mods {
		m(&u)
	}
	return u
}

// dc says which DC the state was read from and pwdLastSet's replication version there.
func dc(id string, pwdVersion uint32) func(*events.ADUser) {
	return func(u *events.ADUser) { u.DC, u.PwdVersion = id, pwdVersion }
}

func neverExpires(u *events.ADUser)  { u.UserAccountControl |= events.UACDontExpirePassword }
func disabled(u *events.ADUser)      { u.UserAccountControl |= events.UACAccountDisable }
func breakGlassUPN(u *events.ADUser) { u.UPN = "bg@EXAMPLE.test" }
func breakGlassMember(u *events.ADUser) {
	u.MemberOf = []string{"CN=Other,DC=example,DC=test", strings.ToLower(bgGroup)}
}
func outsideOU(u *events.ADUser) { u.DN = "CN=Alice,OU=Elsewhere,DC=example,DC=test" }
func deleted(u *events.ADUser)   { u.Deleted = true }

// TestEvaluateSequences feeds a user's AD states in order and checks the
// action kinds emitted at each step ("-" = none).
func TestEvaluateSequences(t *testing.T) {
	tests := []struct {
		name   string
		policy func(*Policy)
		steps  []events.ADUser
		want   []string
	}{
		{"helpdesk_reset_requires_change", nil,
			[]events.ADUser{user(10, setTime), user(11, 0)}, []string{"-", "require_password_change"}},
		{"two_modify_reset_lands_on_final_state", nil,
			[]events.ADUser{user(10, setTime), user(11, setTime2), user(12, 0)}, []string{"-", "-", "require_password_change"}},
		{"password_changed_undoes_once", nil,
			[]events.ADUser{user(10, setTime), user(11, 0), user(12, setTime2), user(13, setTime2, func(u *events.ADUser) { u.Mail = "x" })},
			[]string{"-", "require_password_change", "clear_password_change", "-"}},
		{"password_set_without_prior_force_does_nothing", nil,
			[]events.ADUser{user(10, setTime), user(11, setTime2)}, []string{"-", "-"}},
		{"backfill_acts_on_first_sighting", nil,
			[]events.ADUser{user(10, 0)}, []string{"require_password_change"}},
		{"backfill_off_skips_first_sighting_and_later_unrelated_changes", func(p *Policy) { p.Backfill = false },
			[]events.ADUser{user(10, 0), user(11, 0, func(u *events.ADUser) { u.Mail = "new@x" })}, []string{"-", "-"}},
		{"never_expires_included_by_policy", nil,
			[]events.ADUser{user(10, setTime, neverExpires), user(11, 0, neverExpires)}, []string{"-", "require_password_change"}},
		{"never_expires_excluded_by_policy", func(p *Policy) { p.IncludeNeverExpires = false },
			[]events.ADUser{user(10, setTime, neverExpires), user(11, 0, neverExpires)}, []string{"-", "-"}},
		{"break_glass_upn_never_acted_on", nil,
			[]events.ADUser{user(10, setTime, breakGlassUPN), user(11, 0, breakGlassUPN)}, []string{"-", "-"}},
		{"break_glass_group_never_acted_on", nil,
			[]events.ADUser{user(10, setTime, breakGlassMember), user(11, 0, breakGlassMember)}, []string{"-", "-"}},
		{"outside_included_ou_ignored", nil,
			[]events.ADUser{user(10, setTime, outsideOU), user(11, 0, outsideOU)}, []string{"-", "-"}},
		{"moved_into_scope_while_flagged_acts", nil,
			[]events.ADUser{user(10, 0, outsideOU), user(11, 0)}, []string{"-", "require_password_change"}},
		{"disabled_ignored", nil,
			[]events.ADUser{user(10, setTime, disabled), user(11, 0, disabled)}, []string{"-", "-"}},
		{"stale_event_ignored", nil,
			[]events.ADUser{user(12, setTime), user(11, 0)}, []string{"-", "-"}},
		{"redelivered_event_decides_nothing_new", nil,
			[]events.ADUser{user(10, setTime), user(11, 0), user(11, 0)}, []string{"-", "require_password_change", "-"}},
		{"full_resync_of_unchanged_users_is_quiet", nil,
			[]events.ADUser{user(10, 0), user(10, 0, func(u *events.ADUser) { u.FullSync = true })}, []string{"require_password_change", "-"}},
		{"rule_disabled", func(p *Policy) { p.ForcedChange = false },
			[]events.ADUser{user(10, setTime), user(11, 0)}, []string{"-", "-"}},
		{"password_changed_disabled_clears_pending_state", func(p *Policy) { p.PasswordChanged = false },
			[]events.ADUser{user(10, setTime), user(11, 0), user(12, setTime2), user(13, 0)},
			[]string{"-", "require_password_change", "-", "require_password_change"}},
		{"deleted_user_forgets_pending_state", nil,
			[]events.ADUser{user(10, 0), user(11, 0, deleted)}, []string{"require_password_change", "-"}},
		{"no_include_ous_means_everyone", func(p *Policy) { p.IncludeOUs = nil },
			[]events.ADUser{user(10, setTime, outsideOU), user(11, 0, outsideOU)}, []string{"-", "require_password_change"}},
		// Two DCs (the watcher moved): USNs are each DC's own.
		{"other_dc_lower_usn_reset_acts", nil,
			[]events.ADUser{user(900, setTime, dc("dc1", 1)), user(40, 0, dc("dc2", 2))}, []string{"-", "require_password_change"}},
		{"other_dc_same_state_is_quiet", nil,
			[]events.ADUser{user(900, 0, dc("dc1", 2)), user(40, 0, dc("dc2", 2), func(u *events.ADUser) { u.FullSync = true })},
			[]string{"require_password_change", "-"}},
		{"other_dc_not_yet_replicated_does_not_undo", nil,
			[]events.ADUser{user(900, setTime, dc("dc1", 1)), user(901, 0, dc("dc1", 2)), user(40, setTime, dc("dc2", 1))},
			[]string{"-", "require_password_change", "-"}},
		{"other_dc_then_its_own_next_change", nil,
			[]events.ADUser{user(900, setTime, dc("dc1", 1)), user(40, setTime, dc("dc2", 1)), user(41, 0, dc("dc2", 2)), user(42, setTime2, dc("dc2", 3))},
			[]string{"-", "-", "require_password_change", "clear_password_change"}},
		{"other_dc_older_than_its_own_last_is_stale", nil,
			[]events.ADUser{user(900, setTime, dc("dc1", 1)), user(41, setTime, dc("dc2", 1)), user(40, 0, dc("dc2", 2))},
			[]string{"-", "-", "-"}},
		{"back_on_the_first_dc_after_the_second", nil,
			[]events.ADUser{user(900, setTime, dc("dc1", 1)), user(40, 0, dc("dc2", 2)), user(905, setTime2, dc("dc1", 3))},
			[]string{"-", "require_password_change", "clear_password_change"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := policy()
			if tt.policy != nil {
				tt.policy(&p)
			}
			var s State
			var got []string
			lastSeq := int64(0)
			for i, u := range tt.steps {
				ev := events.Envelope{ID: u.EventID(), Time: at.Add(time.Duration(i) * time.Second)}
				res := EvaluateAD(p, s, ev, u)
				if res.Changed {
					s = res.State
				}
				for _, a := range res.Actions {
					// The actuator drops an action whose Seq is below one applied.
					if a.Seq < lastSeq {
						t.Fatalf("step %d: %s has Seq %d below an earlier action's %d", i, a.Kind, a.Seq, lastSeq)
					}
					lastSeq = a.Seq
				}
				kinds := "-"
				if len(res.Actions) > 0 {
					var ks []string
					for _, a := range res.Actions {
						ks = append(ks, string(a.Kind))
					}
					kinds = strings.Join(ks, ",")
				}
				got = append(got, kinds)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("actions per step = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestActionsAreDeterministic(t *testing.T) {
	p := policy()
	prev := EvaluateAD(p, State{}, events.Envelope{ID: "e1", Time: at}, user(10, setTime)).State
	ev := events.Envelope{ID: "ad.guid-alice.11", Time: at}
	a := EvaluateAD(p, prev, ev, user(11, 0))
	b := EvaluateAD(p, prev, ev, user(11, 0))
	if len(a.Actions) != 1 || len(b.Actions) != 1 {
		t.Fatalf("want one action each, got %d and %d", len(a.Actions), len(b.Actions))
	}
	if a.Actions[0] != b.Actions[0] {
		t.Fatalf("same input, different actions:\n%+v\n%+v", a.Actions[0], b.Actions[0])
	}
	got := a.Actions[0]
	if got.ID != "forced-change.guid-alice.ad.guid-alice.11" || got.Seq != 11 || !got.EventTime.Equal(at) || got.User.UPN != "alice@example.test" {
		t.Fatalf("action = %+v", got)
	}
	if a.State.RequiredByAction != got.ID || !a.State.ChangeRequired {
		t.Fatalf("state does not record the action: %+v", a.State)
	}
}

// TestActionIDIgnoresPolicyRev: the same AD state read again after a
// password-policy change (its event ID ends in a new ".p<rev>") decides the
// forced change under the same action ID, so that two evaluations made
// before either stored the state publish one action, not two (CI: a reset
// carried out twice in TestFaultKilledRepeatedly while other tests changed
// PSOs on the shared DC). Another state still gets another ID.
func TestActionIDIgnoresPolicyRev(t *testing.T) {
	p := policy()
	prev := EvaluateAD(p, State{}, events.Envelope{ID: "e1", Time: at}, user(10, setTime)).State
	decide := func(u events.ADUser) events.Action {
		t.Helper()
		res := EvaluateAD(p, prev, events.Envelope{ID: u.EventID(), Time: at}, u)
		if len(res.Actions) != 1 {
			t.Fatalf("want one action for %s, got %+v", u.EventID(), res.Actions)
		}
		return res.Actions[0]
	}
	rev := func(r int64) func(*events.ADUser) { return func(u *events.ADUser) { u.PolicyRev = r } }
	first, again := decide(user(11, 0, rev(2))), decide(user(11, 0, rev(3)))
	if first.ID != again.ID {
		t.Fatalf("the same state at policy revisions 2 and 3 decided %s and %s", first.ID, again.ID)
	}
	if other := decide(user(12, 0, rev(2))); other.ID == first.ID {
		t.Fatalf("another state (uSNChanged 12) decided the same ID %s", other.ID)
	}
	// With pwdLastSet's replication version known, the write names the
	// action: a later state of the same write (another attribute changed,
	// another DC) decides the same ID; the next reset another.
	write := func(v uint32) func(*events.ADUser) { return func(u *events.ADUser) { u.PwdVersion = v } }
	a, b := decide(user(11, 0, write(5))), decide(user(14, 0, write(5), dc("dc-2", 5)))
	if a.ID != b.ID {
		t.Fatalf("one pwdLastSet write (version 5) read at uSNChanged 11 and 14 decided %s and %s", a.ID, b.ID)
	}
	if c := decide(user(15, 0, write(6))); c.ID == a.ID {
		t.Fatalf("the next reset (version 6) decided the same ID %s", c.ID)
	}
}

func TestDryRunMarksActions(t *testing.T) {
	p := policy()
	p.DryRun = true
	res := EvaluateAD(p, State{}, events.Envelope{ID: "e"}, user(10, 0))
	if len(res.Actions) != 1 || !res.Actions[0].DryRun {
		t.Fatalf("dry run actions = %+v", res.Actions)
	}
}

func TestOutOfScopeIsExplained(t *testing.T) {
	res := EvaluateAD(policy(), State{}, events.Envelope{ID: "e"}, user(10, 0, breakGlassUPN))
	if len(res.Decisions) != 1 || res.Decisions[0].Outcome != "skip" || !strings.Contains(res.Decisions[0].Reason, "break-glass") {
		t.Fatalf("decisions = %+v", res.Decisions)
	}
}

func TestClearNamesTheActionItUndoes(t *testing.T) {
	p := policy()
	s := EvaluateAD(p, State{}, events.Envelope{ID: "e1"}, user(10, setTime)).State
	req := EvaluateAD(p, s, events.Envelope{ID: "e2"}, user(11, 0))
	clr := EvaluateAD(p, req.State, events.Envelope{ID: "e3"}, user(12, setTime2))
	if len(req.Actions) != 1 || len(clr.Actions) != 1 || clr.Actions[0].Undoes != req.Actions[0].ID {
		t.Fatalf("clear %+v does not name require %+v", clr.Actions, req.Actions)
	}
}

// TestDryRunRecordsNothingDone: what dry-run decides is kept apart from
// what was done, so the state never claims a write or a notice that did
// not happen; each dry decision is still taken once (no loop).
func TestDryRunRecordsNothingDone(t *testing.T) {
	p := expiryPolicy()
	p.DryRun = true
	s := EvaluateAD(p, State{}, events.Envelope{ID: "e1", Time: t0}, aged(10, t0, exp0)).State
	var dry []string
	for _, now := range []time.Time{exp0.Add(-7 * Day), exp0.Add(time.Hour)} {
		for range 10 {
			tm, ok := NextDue(p, s)
			if !ok || tm.Due.After(now) {
				break
			}
			res := EvaluateExpiry(p, s, events.Envelope{ID: tm.EventID(), Time: now}, tm, now)
			if !res.Changed {
				break
			}
			for _, a := range res.Actions {
				dry = append(dry, string(a.Kind))
			}
			s = res.State
		}
	}
	if fmt.Sprint(dry) != "[notify require_password_change notify]" {
		t.Fatalf("dry-run decided %v", dry)
	}
	if s.ChangeRequired || s.RequiredByAction != "" || s.Expiry.Enforced || len(s.Expiry.Fired) > 0 {
		t.Errorf("dry-run recorded as done: change_required=%v by %q, expiry %+v", s.ChangeRequired, s.RequiredByAction, s.Expiry)
	}
	if !s.DryRun.Active || !s.DryRun.ChangeRequired || !s.DryRun.Expiry.Enforced || len(s.DryRun.Expiry.Fired) == 0 {
		t.Errorf("dry-run state = %+v, want the pretended enforcement and notices", s.DryRun)
	}
	// forced-change in dry-run: a reset, then the user's own change
	p.Expiry.Enabled = false
	s = EvaluateAD(p, State{}, events.Envelope{ID: "e1", Time: at}, user(10, setTime)).State
	s = EvaluateAD(p, s, events.Envelope{ID: "e2", Time: at}, user(11, 0)).State
	if s.ChangeRequired || s.RequiredByAction != "" || !s.DryRun.ChangeRequired {
		t.Errorf("dry-run forced-change recorded as done: %+v", s)
	}
	live := p
	live.DryRun = false
	res := EvaluateAD(live, s, events.Envelope{ID: "e3", Time: at}, user(12, setTime2))
	if len(res.Actions) != 0 {
		t.Errorf("live password change after a dry-run reset undid %+v, which was never done", res.Actions)
	}
}

// TestNeverExpiresZeroIsNotMustChange: pwdLastSet 0 with "password never
// expires" is no must-change in AD (MS-ADA3), so a first sync leaves such an
// account alone unless the policy opts in.
func TestNeverExpiresZeroIsNotMustChange(t *testing.T) {
	u := user(10, 0, neverExpires)
	if u.MustChange() {
		t.Fatal("MustChange() = true for a never-expires account with pwdLastSet 0")
	}
	for _, optIn := range []bool{false, true} {
		p := policy()
		p.IncludeNeverExpires = optIn
		res := EvaluateAD(p, State{}, events.Envelope{ID: "ev", Time: at}, u)
		if acted := len(res.Actions) > 0; acted != optIn {
			t.Errorf("include_never_expires=%v: acted=%v, decisions %+v", optIn, acted, res.Decisions)
		}
		if !optIn && (len(res.Decisions) == 0 || !strings.Contains(res.Decisions[len(res.Decisions)-1].Reason, "MS-ADA3")) {
			t.Errorf("the skip does not say why: %+v", res.Decisions)
		}
	}
}
