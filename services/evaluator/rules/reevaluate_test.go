package rules

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/events"
)

// TestReevaluate: a user known under one policy, judged again under another
// (the policy in force after a restart), then a second time under the same
// one (a second restart, or a rerun after a crash mid-pass).
func TestReevaluate(t *testing.T) {
	cloud := func(policies string) *events.CloudUser {
		return &events.CloudUser{ID: "cloud-alice", UPN: "alice@example.test", SyncEnabled: true, PasswordPolicies: policies}
	}
	tests := []struct {
		name   string
		before func(*Policy) // policy the user was first seen under
		after  func(*Policy) // policy in force for the pass
		ad     events.ADUser
		cloud  *events.CloudUser
		want   string // action kinds of the first pass ("-" = none)
		reason string // substring of the acting decision's reason
	}{
		{"forced_change_turned_on_acts_on_flagged_user",
			func(p *Policy) { p.ForcedChange = false }, nil,
			user(10, 0), nil, "require_password_change", "backfill"},
		{"forced_change_turned_on_respects_backfill_off",
			func(p *Policy) { p.ForcedChange = false }, func(p *Policy) { p.Backfill = false },
			user(10, 0), nil, "-", ""},
		{"same_policy_does_nothing",
			nil, nil, user(10, 0), nil, "-", ""},
		{"unflagged_user_gets_nothing",
			func(p *Policy) { p.ForcedChange = false }, nil,
			user(10, setTime), nil, "-", ""},
		// (a rerun within pending_timeout waits for the write it made)
		{"never_expires_turned_on_fixes_cloud",
			nil, func(p *Policy) { p.Cloud.NeverExpires = true; p.Cloud.PendingTimeout = time.Minute },
			user(10, setTime, neverExpires), cloud("None"), "set_password_policies", "never expires=yes"},
		{"never_expires_in_step_does_nothing",
			nil, func(p *Policy) { p.Cloud.NeverExpires = true },
			user(10, setTime, neverExpires), cloud("DisablePasswordExpiration"), "-", ""},
		{"scope_widened_acts_on_user_coming_in",
			nil, func(p *Policy) { p.IncludeOUs = nil },
			user(10, 0, outsideOU), nil, "require_password_change", "came into scope"},
		{"scope_widened_comes_in_even_without_backfill",
			func(p *Policy) { p.Backfill = false }, func(p *Policy) { p.IncludeOUs = nil; p.Backfill = false },
			user(10, 0, outsideOU), nil, "require_password_change", "came into scope"},
		{"scope_narrowed_undoes_nothing",
			nil, func(p *Policy) { p.IncludeOUs = []string{"OU=Other,DC=example,DC=test"} },
			user(10, 0), nil, "-", ""},
		{"break_glass_never_acted_on",
			func(p *Policy) { p.ForcedChange = false }, nil,
			user(10, 0, breakGlassUPN), nil, "-", ""},
		{"dry_run_pass_decides_dry_actions",
			func(p *Policy) { p.ForcedChange = false }, func(p *Policy) { p.DryRun = true },
			user(10, 0), nil, "dry:require_password_change", "backfill"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, after := policy(), policy()
			if tc.before != nil {
				tc.before(&before)
			}
			if tc.after != nil {
				tc.after(&after)
			}
			// the user as the evaluator stored it under the old policy
			first := EvaluateAD(before, State{}, events.Envelope{ID: "ad.1", Time: at}, tc.ad)
			st := first.State
			st.Cloud = tc.cloud
			ev := events.Envelope{ID: "reevaluate.fp1." + tc.ad.ObjectGUID, Source: "reevaluate", Time: at}

			res := Reevaluate(after, st, ev)
			if got := kinds(res.Actions); got != tc.want {
				t.Fatalf("first pass: actions %s, want %s (decisions %+v)", got, tc.want, res.Decisions)
			}
			if tc.reason != "" && !hasActReason(res.Decisions, tc.reason) {
				t.Errorf("no acting decision saying %q: %+v", tc.reason, res.Decisions)
			}
			if tc.want != "-" && !res.Changed {
				t.Errorf("acted but the state is not marked changed")
			}
			if !res.State.Seen || !reflect.DeepEqual(res.State.AD, st.AD) {
				t.Errorf("the pass changed the stored AD state: %+v", res.State.AD)
			}
			// a second pass over the saved result decides nothing more
			again := Reevaluate(after, res.State, ev)
			if got := kinds(again.Actions); got != "-" || again.Changed {
				t.Errorf("second pass: actions %s changed=%v, want none", got, again.Changed)
			}
		})
	}
}

func TestReevaluateUnseenUserIsLeftAlone(t *testing.T) {
	st := State{Cloud: &events.CloudUser{ID: "c1"}}
	res := Reevaluate(policy(), st, events.Envelope{ID: "x", Time: at})
	if len(res.Actions) != 0 || res.Changed {
		t.Fatalf("a user known only from the cloud was acted on: %+v", res)
	}
}

func kinds(as []events.Action) string {
	if len(as) == 0 {
		return "-"
	}
	var out []string
	for _, a := range as {
		k := string(a.Kind)
		if a.DryRun {
			k = "dry:" + k
		}
		out = append(out, k)
	}
	return strings.Join(out, ",")
}

func hasActReason(ds []Decision, sub string) bool {
	for _, d := range ds {
		if d.Outcome == "act" && strings.Contains(d.Reason, sub) {
			return true
		}
	}
	return false
}

// TestReevaluateKeepsTheDCMapping: a user last read from a second DC (its
// USNs mapped onto the user's sequence) is re-evaluated without mapping
// them twice or losing the mapping: the DC's next change still counts.
func TestReevaluateKeepsTheDCMapping(t *testing.T) {
	p := policy()
	var s State
	for _, u := range []events.ADUser{user(900, setTime, dc("dc1", 1)), user(40, setTime, dc("dc2", 1))} {
		s = EvaluateAD(p, s, events.Envelope{ID: u.EventID(), Time: at}, u).State
	}
	for _, inScope := range []bool{true, false} {
		st := s
		st.InScope = inScope
		res := Reevaluate(p, st, events.Envelope{ID: "reevaluate.x", Time: at})
		got := st
		if res.Changed {
			got = res.State
		}
		if got.USNOffset != s.USNOffset || got.AD.USNChanged != s.AD.USNChanged {
			t.Fatalf("in scope %v: offset %d usn %d after the pass, want %d and %d", inScope, got.USNOffset, got.AD.USNChanged, s.USNOffset, s.AD.USNChanged)
		}
		next := user(41, 0, dc("dc2", 2))
		if acts := EvaluateAD(p, got, events.Envelope{ID: next.EventID(), Time: at}, next).Actions; len(acts) == 0 {
			t.Fatalf("in scope %v: the second DC's next reset decided nothing after the pass", inScope)
		}
	}
}
