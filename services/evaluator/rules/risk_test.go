package rules

import (
	"slices"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/userstate"
)

func TestEvaluateRisk(t *testing.T) {
	at := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	ad := events.ADUser{Domain: "example.test", ObjectGUID: "g1", UPN: "alice@example.test", DN: "CN=Alice,OU=Staff,DC=example,DC=test", PwdLastSet: 1, USNChanged: 7}
	on := RiskPolicy{Enabled: true, Levels: []string{"high"}, States: []string{"atRisk", "confirmedCompromised"}, DetectionTypes: []string{"leakedCredentials"}}
	det := func(id, typ, level string) events.RiskDetection {
		return events.RiskDetection{ID: id, EventType: typ, Level: level, State: "atRisk", Detected: at}
	}
	ev := func(synced bool, state string, ds ...events.RiskDetection) events.RiskEvent {
		return events.RiskEvent{User: events.RiskyUser{ID: "c1", UPN: "alice@example.test", Level: "high", State: state},
			Detections: ds, Cloud: &events.CloudUser{ID: "c1", SyncEnabled: synced}}
	}
	seen := State{AD: ad, Seen: true, InScope: true}
	handled := seen
	handled.Risk.Handled = []string{"d1"}
	tests := []struct {
		name    string
		p       Policy
		s       State
		r       events.RiskEvent
		kinds   []events.ActionKind
		outcome string // the risk decision, "" = none
		dry     bool
	}{
		{"synced: AD must change", Policy{Risk: on}, seen, ev(true, "atRisk", det("d1", "leakedCredentials", "high")),
			[]events.ActionKind{events.ActionADRequireChange, events.ActionAlert}, "act", false},
		{"cloud-managed: cloud must change", Policy{Risk: on}, seen, ev(false, "atRisk", det("d1", "leakedCredentials", "high")),
			[]events.ActionKind{events.ActionRequireChange, events.ActionAlert}, "act", false},
		{"notify", Policy{Risk: RiskPolicy{Enabled: true, Levels: on.Levels, States: on.States, Notify: true}}, seen, ev(true, "atRisk", det("d1", "anything", "high")),
			[]events.ActionKind{events.ActionADRequireChange, events.ActionAlert, events.ActionNotify}, "act", false},
		{"already handled: nothing", Policy{Risk: on}, handled, ev(true, "atRisk", det("d1", "leakedCredentials", "high")), nil, "", false},
		{"a second detection acts again", Policy{Risk: on}, handled, ev(true, "atRisk", det("d1", "leakedCredentials", "high"), det("d2", "leakedCredentials", "high")),
			[]events.ActionKind{events.ActionADRequireChange, events.ActionAlert}, "act", false},
		{"level below policy", Policy{Risk: on}, seen, ev(true, "atRisk", det("d1", "leakedCredentials", "medium")), nil, "", false},
		{"other detection type", Policy{Risk: on}, seen, ev(true, "atRisk", det("d1", "unfamiliarFeatures", "high")), nil, "", false},
		{"user remediated meanwhile", Policy{Risk: on}, seen, ev(true, "remediated", det("d1", "leakedCredentials", "high")), nil, "skip", false},
		{"disabled rule", Policy{}, seen, ev(true, "atRisk", det("d1", "leakedCredentials", "high")), nil, "", false},
		{"break-glass", Policy{Risk: on, BreakGlassUPNs: []string{"alice@example.test"}}, seen, ev(true, "atRisk", det("d1", "leakedCredentials", "high")), nil, "skip", false},
		{"outside include_ous", Policy{Risk: on, IncludeOUs: []string{"OU=Other,DC=example,DC=test"}}, seen, ev(true, "atRisk", det("d1", "leakedCredentials", "high")), nil, "skip", false},
		{"no AD user", Policy{Risk: on}, State{}, ev(true, "atRisk", det("d1", "leakedCredentials", "high")), nil, "skip", false},
		{"risk dry run", Policy{Risk: RiskPolicy{Enabled: true, Levels: on.Levels, States: on.States, DryRun: true}}, seen, ev(true, "atRisk", det("d1", "x", "high")),
			[]events.ActionKind{events.ActionADRequireChange, events.ActionAlert}, "act", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			envl := events.Envelope{ID: "risk.c1.abc", Time: at}
			res := EvaluateRisk(tc.p, tc.s, envl, tc.r)
			var kinds []events.ActionKind
			for _, a := range res.Actions {
				kinds = append(kinds, a.Kind)
				if a.DryRun != tc.dry {
					t.Errorf("%s: dry run %v, want %v", a.Kind, a.DryRun, tc.dry)
				}
			}
			if len(kinds) != len(tc.kinds) {
				t.Fatalf("actions %v, want %v", kinds, tc.kinds)
			}
			for i := range kinds {
				if kinds[i] != tc.kinds[i] {
					t.Fatalf("actions %v, want %v", kinds, tc.kinds)
				}
			}
			outcome := ""
			for _, d := range res.Decisions {
				if d.Rule == RuleRisk {
					outcome = d.Outcome
				}
			}
			if outcome != tc.outcome {
				t.Fatalf("decision %q, want %q (%+v)", outcome, tc.outcome, res.Decisions)
			}
			// Once per detection: the same event against the new state decides nothing.
			if again := EvaluateRisk(tc.p, res.State, envl, tc.r); len(again.Actions) != 0 {
				t.Fatalf("second evaluation acted again: %+v", again.Actions)
			}
		})
	}
	// The action ID names the detection, not the event that carried it.
	a := EvaluateRisk(Policy{Risk: on}, seen, events.Envelope{ID: "one"}, ev(true, "atRisk", det("d9", "leakedCredentials", "high")))
	b := EvaluateRisk(Policy{Risk: on}, seen, events.Envelope{ID: "two"}, ev(true, "atRisk", det("d9", "leakedCredentials", "high")))
	if a.Actions[0].ID != b.Actions[0].ID {
		t.Fatalf("action IDs differ: %s, %s", a.Actions[0].ID, b.Actions[0].ID)
	}
}

func TestRiskAfterChange(t *testing.T) {
	acted := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	ad := events.ADUser{Domain: "example.test", ObjectGUID: "g1", UPN: "alice@example.test", DN: "CN=Alice,DC=example,DC=test", USNChanged: 9}
	afterAct := State{AD: ad, Seen: true, InScope: true}
	afterAct.AD.PwdLastSet = 0
	afterAct.Risk = riskStateOf("risk.g1.risk.d1", "c1", acted)
	check := []events.ActionKind{events.ActionCheckRisk}
	tests := []struct {
		name    string
		dismiss bool
		after   time.Duration // risk.still_at_risk_after
		s       State
		pwd     time.Time // the new pwdLastSet; zero = 0 (must change)
		kinds   []events.ActionKind
		changed bool // ChangedAt recorded
	}{
		{"new password, dismissal on", true, 0, afterAct, acted.Add(time.Minute), []events.ActionKind{events.ActionDismissRisk}, true},
		{"new password, dismissal off", false, 0, afterAct, acted.Add(time.Minute), nil, true},
		{"new password, dismissal and check on", true, time.Hour, afterAct, acted.Add(time.Minute), append(check, events.ActionDismissRisk), true},
		{"new password, check on", false, time.Hour, afterAct, acted.Add(time.Minute), check, true},
		{"still must change", true, time.Hour, afterAct, time.Time{}, nil, false},
		{"a password older than the act", true, time.Hour, afterAct, acted.Add(-time.Hour), nil, false},
		{"no risk act", true, time.Hour, State{AD: ad, Seen: true, InScope: true}, acted.Add(time.Minute), nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := ad
			u.USNChanged = 10
			if !tc.pwd.IsZero() {
				u.PwdLastSet = events.ToFileTime(tc.pwd)
			}
			p := Policy{PasswordChanged: true, ForcedChange: true, Risk: RiskPolicy{Enabled: true, DismissAfterChange: tc.dismiss, StillAtRiskAfter: tc.after}}
			seen := acted.Add(2 * time.Minute)
			res := EvaluateAD(p, tc.s, events.Envelope{ID: "ad.g1.10", Time: seen}, u)
			var kinds []events.ActionKind
			for _, a := range res.Actions {
				if a.Rule == RuleRiskDismiss {
					kinds = append(kinds, a.Kind)
					if a.User.CloudID != "c1" {
						t.Errorf("%s names cloud ID %q", a.Kind, a.User.CloudID)
					}
					if a.Kind == events.ActionCheckRisk && !a.NotBefore.Equal(seen.Add(tc.after)) {
						t.Errorf("check not before %v, want %v (the change seen + still_at_risk_after)", a.NotBefore, seen.Add(tc.after))
					}
				}
			}
			if !slices.Equal(kinds, tc.kinds) {
				t.Fatalf("loop-closing actions %v, want %v", kinds, tc.kinds)
			}
			if got := !res.State.Risk.ChangedAt.IsZero(); got != tc.changed {
				t.Fatalf("ChangedAt recorded %v, want %v", got, tc.changed)
			}
			// Once: the next AD state decides no second dismissal.
			u.USNChanged = 11
			if again := EvaluateAD(p, res.State, events.Envelope{ID: "ad.g1.11"}, u); len(again.Actions) != 0 {
				for _, a := range again.Actions {
					if a.Rule == RuleRiskDismiss {
						t.Fatalf("%s decided twice", a.Kind)
					}
				}
			}
		})
	}
}

// riskStateOf is the risk state right after an act.
func riskStateOf(actionID, cloudID string, at time.Time) (r userstateRisk) {
	r.ActionID, r.CloudID, r.ActedAt = actionID, cloudID, at
	return r
}

type userstateRisk = userstate.RiskState
