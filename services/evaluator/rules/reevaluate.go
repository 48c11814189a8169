package rules

import (
	"bytes"
	"encoding/json"

	"github.com/pwsync/pwsync/shared/events"
)

// RuleReevaluate names the re-evaluation pass in the audit trail.
const RuleReevaluate = "reevaluate"

// Reevaluate reruns the AD and cloud rules on a user's stored state, as
// though the policy p had been in force when that state was last seen. It is
// what a changed policy means for users already known: EvaluateAD alone
// decides nothing for them (the same AD state again returns early, and its
// triggers only see what changed in AD).
//
// A user who was in scope is judged as at first sight: a must-change flag is
// then a backfill (so forced_change.backfill decides), and the cloud rules
// look at the account afresh. A user who was out of scope is judged as
// coming into scope. What pwsync already required stays required, so a rerun
// (a restart during the pass, a second replica) decides nothing twice. ev
// names the pass and the user: its ID goes into the action IDs.
func Reevaluate(p Policy, s State, ev events.Envelope) Result {
	if !s.Seen {
		// only the cloud side is known: nothing to judge until AD is seen
		return Result{State: s}
	}
	prior := s
	if s.InScope {
		prior.Seen = false
	} else {
		// an older USN than the stored one: EvaluateAD must not take the
		// stored state for a repeat of itself
		prior.AD.USNChanged = s.AD.USNChanged - 1
	}
	// s.AD is on the user's sequence already (dcorder.go): not mapped again.
	prior.USNOffset = 0
	res := EvaluateAD(p, prior, ev, s.AD)
	res.State.USNOffset = s.USNOffset
	if !res.Changed {
		return Result{State: s}
	}
	// Only what the rules decided counts as a change: the state is s with the
	// rules' verdicts, never a "first seen" of the prior pretended.
	res.State.Seen = true
	res.Changed = stateDiffers(s, res.State)
	return res
}

// stateDiffers reports whether the pass changed anything worth saving.
func stateDiffers(a, b State) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA != nil || errB != nil || !bytes.Equal(ja, jb)
}
