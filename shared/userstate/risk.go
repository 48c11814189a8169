package userstate

import "time"

// RiskState is what the risk rule (issue 17) recorded of a user: the
// detections already handled, so each acts at most once, and the last act.
type RiskState struct {
	Handled  []string  `json:"handled,omitempty"`   // riskDetection IDs, newest last
	ActedAt  time.Time `json:"acted_at,omitzero"`   // when the last detection was acted on
	ActionID string    `json:"action_id,omitempty"` // the action it decided
	CloudID  string    `json:"cloud_id,omitempty"`  // the risky user in Entra
	// ChangedAt: AD's new password after the act (the loop closed).
	ChangedAt time.Time `json:"changed_at,omitzero"`
}

// MaxHandled bounds RiskState.Handled; the oldest IDs are forgotten first
// (Identity Protection keeps detections 90 days; a user with more than
// this many is acted on again at worst).
const MaxHandled = 200
