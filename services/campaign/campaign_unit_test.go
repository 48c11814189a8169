package campaign

import (
	"slices"
	"testing"
)

func TestTransitions(t *testing.T) {
	tests := []struct {
		from, to State
		ok       bool
	}{
		{StateDraft, StatePreviewed, true},
		{StateDraft, StateRunning, false},
		{StatePreviewed, StateRunning, true},
		{StatePreviewed, StateApproved, true},
		{StateApproved, StateRunning, true},
		{StateRunning, StatePaused, true},
		{StatePaused, StateRunning, true},
		{StateRunning, StateDone, true},
		{StateDone, StateRunning, false},
		{StateCancelled, StateRunning, false},
		{StateRunning, StatePreviewed, false},
	}
	for _, tc := range tests {
		if got := CanMove(tc.from, tc.to); got != tc.ok {
			t.Errorf("CanMove(%s, %s) = %v, want %v", tc.from, tc.to, got, tc.ok)
		}
	}
}

func TestTargetSteps(t *testing.T) {
	all := Actions{RequireChange: true, RevokeSessions: true, Notify: true}
	if got := (Target{Kind: KindSynced}).Steps(all); len(got) != 1 || got[0] != StepADMustChange {
		t.Fatalf("synced: %v", got)
	}
	if got := (Target{Kind: KindCloud}).Steps(all); len(got) != 3 {
		t.Fatalf("cloud: %v", got)
	}
}

// TestConfirmCompromisedSteps: the mark is a step of every target with a
// cloud account, after its password steps; a user's outcome is judged by
// the password steps unless the mark is all it gets.
func TestConfirmCompromisedSteps(t *testing.T) {
	mark := Actions{RequireChange: true, RevokeSessions: true, ConfirmCompromised: true}
	tests := []struct {
		name    string
		t       Target
		a       Actions
		want    []Step
		judgeBy []Step
	}{
		{"cloud", Target{Kind: KindCloud, CloudID: "c1"}, mark,
			[]Step{StepCloudMustChange, StepRevoke, StepConfirmCompromised}, []Step{StepCloudMustChange, StepRevoke}},
		{"synced with a cloud account", Target{Kind: KindSynced, CloudID: "c2"}, mark,
			[]Step{StepADMustChange, StepConfirmCompromised}, []Step{StepADMustChange}},
		{"synced without a known cloud account", Target{Kind: KindSynced}, mark, []Step{StepADMustChange}, []Step{StepADMustChange}},
		{"synced, the mark its only step", Target{Kind: KindSynced, CloudID: "c3"}, Actions{RevokeSessions: true, ConfirmCompromised: true},
			[]Step{StepConfirmCompromised}, []Step{StepConfirmCompromised}},
		{"option off", Target{Kind: KindCloud, CloudID: "c4"}, Actions{RevokeSessions: true}, []Step{StepRevoke}, []Step{StepRevoke}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.t.Steps(tc.a)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("steps %v, want %v", got, tc.want)
			}
			if j := judged(got); !slices.Equal(j, tc.judgeBy) {
				t.Fatalf("judged by %v, want %v", j, tc.judgeBy)
			}
		})
	}
}
