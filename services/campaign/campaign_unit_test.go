package campaign

import (
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
