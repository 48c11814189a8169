// Package userstate holds what pwsync remembers per user: the evaluator's
// State (bucket users) and the identity bucket's keys and records (the
// joins of AD users to cloud accounts). It is pure, so the rules can use it;
// KV access through it lives in shared/userstore.
package userstate

import (
	"time"

	"github.com/pwsync/pwsync/shared/events"
)

// State is what the evaluator remembers per user (bucket users, key UserKey(objectGUID)).
type State struct {
	AD      events.ADUser `json:"ad"`
	Seen    bool          `json:"seen"`
	InScope bool          `json:"in_scope"`
	// ChangeRequired: pwsync asked the cloud for a password change and has not
	// undone it yet. It is what makes password-changed undo only our own work.
	ChangeRequired   bool   `json:"change_required"`
	RequiredByAction string `json:"required_by_action,omitempty"`
	// RequiredAt is when pwsync (live) required the change.
	RequiredAt time.Time `json:"required_at,omitzero"`
	// UndoAwait: AD has the new password, and the undo waits for the cloud.
	UndoAwait *UndoAwait `json:"undo_await,omitempty"`

	// Cloud side, from delta query.
	Cloud *events.CloudUser `json:"cloud,omitempty"`
	// PoliciesPending is a passwordPolicies value pwsync wrote and has not
	// yet seen come back: its own write must not count as drift.
	PoliciesPending   string    `json:"policies_pending,omitempty"`
	PoliciesPendingAt time.Time `json:"policies_pending_at,omitzero"`
	LastDriftFix      time.Time `json:"last_drift_fix,omitzero"`
	// WritebackAwait is a cloud password change AD has not followed yet.
	WritebackAwait time.Time `json:"writeback_await,omitzero"`
	// WritebackFollowed is the pwdLastSet with which AD followed the last
	// cloud change: it cannot also follow a later one.
	WritebackFollowed int64 `json:"writeback_followed,omitempty"`
	// Expiry: the due points of the current password's schedule already handled.
	Expiry ExpiryState `json:"expiry,omitzero"`
	// DryRun: what dry-run decided as though done, apart from what was done.
	DryRun DryRunState `json:"dry_run,omitzero"`
	// USNOffset maps the uSNChanged of the DC the user was last read from
	// (AD.DC) onto the sequence of the states already evaluated: after a
	// move to another DC, whose USNs are its own, the user's sequence (and
	// the actions' Seq) keeps growing. 0 on a domain read from one DC.
	USNOffset int64 `json:"usn_offset,omitempty"`
	// Risk: Identity Protection detections handled (risk.go).
	Risk RiskState `json:"risk,omitzero"`
}

// What an undo waits for.
const (
	// AwaitHashSync: a synced user's cloud password is AD's, carried by
	// password hash sync about two minutes after the AD change. Until it
	// arrives Entra still accepts the previous (helpdesk's temporary)
	// password, so the block stays.
	AwaitHashSync = "password_hash_sync"
	// AwaitCloudChange: a cloud-managed user's cloud password is not AD's;
	// a new AD password leaves it as it was. The must-change flag stays
	// until the user changes the cloud password (Entra clears it then).
	AwaitCloudChange = "cloud_password_change"
)

// UndoAwait is an undo that waits for the cloud to have a new password.
type UndoAwait struct {
	For        string    `json:"for"`          // AwaitHashSync | AwaitCloudChange
	Since      time.Time `json:"since"`        // when AD's change was seen
	PwdLastSet int64     `json:"pwd_last_set"` // AD's new password
	RequiredAt time.Time `json:"required_at,omitzero"`
	Until      time.Time `json:"until,omitzero"` // AwaitHashSync: lifted then anyway
	Undoes     string    `json:"undoes,omitempty"`
}

// ExpiryState is what the evaluator remembers of a user's schedule: which
// due points of which password it has handled.
type ExpiryState struct {
	Key      string `json:"key"`
	Fired    []int  `json:"fired,omitempty"` // lead days handled (sent or skipped)
	Enforced bool   `json:"enforced,omitempty"`
	// Skipped: the handled lead days whose notice was not sent, and why
	// (policy explain tells the user's story from it).
	Skipped []SkippedNotice `json:"skipped,omitempty"`
}

// SkippedNotice is a lead day handled without a notice.
type SkippedNotice struct {
	LeadDays int    `json:"lead"`
	Why      string `json:"why"` // rules.SkipSuperseded | rules.SkipStale
}

// SkipOf says why lead's notice was skipped ("" = it was not).
func (x ExpiryState) SkipOf(lead int) string {
	for _, s := range x.Skipped {
		if s.LeadDays == lead {
			return s.Why
		}
	}
	return ""
}

// DryRunState is what dry-run decided as though it had been done. It is
// kept apart from what was done (State.ChangeRequired, State.Expiry), which
// dry-run never changes: a user "enforced" in dry-run is enforced for real
// when pwsync goes live, and a password changed meanwhile does not undo what
// was never done. Under dry-run the rules read this view, so that each dry
// decision is taken (and audited) once rather than at every event.
type DryRunState struct {
	Active bool `json:"active,omitempty"`
	// Since: the first dry decision since pwsync last acted live.
	Since time.Time `json:"since,omitzero"`
	// ChangeRequired, RequiredByAction: the cloud requirement as dry-run
	// pretends it (it starts from the real one).
	ChangeRequired   bool   `json:"change_required,omitempty"`
	RequiredByAction string `json:"required_by_action,omitempty"`
	// Expiry: the due points dry-run pretended to handle (on top of the
	// real ones, see Handled).
	Expiry ExpiryState `json:"expiry,omitzero"`
}
