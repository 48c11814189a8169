// Package campaign runs breach-response mass resets: a campaign selects users
// (AD group, OU, LDAP filter, Entra group, a list of UPNs, everyone in scope,
// with exclusions), is previewed, approved by a second person above a size,
// and then written user by user: an AD write, pwdLastSet=0 over LDAP, for
// users selected in AD and synced users selected in Entra (the helpdesk
// operation, which the normal pipeline carries to the cloud), a cloud write,
// the must-change and a session revoke through $batch, for unsynced cloud
// users, and a notice; optionally the targets are marked compromised in
// Entra ID Protection, so that the tenant's own user-risk policies apply.
// The runner paces Graph writes under the tenant's write
// budget, records each write's intent before sending it and its answer
// after, so that a crash and restart continue without doubling a write.
//
// Files: campaign.go (types, states), selector.go (what a selector resolves
// to, filters built and escaped here), ldapfilter.go (user-supplied filters:
// parsed, validated, bounded), upnlist.go (CSV import), resolve.go (selectors
// -> targets, exclusions), store.go (KV layout), pacer.go (write budget),
// service.go (Deps, New, Run; the operations the API calls), api.go (HTTP
// routes), report.go. Execution: runner.go orchestrates a run's progress
// ledger (ledger.go: records, intents, counters, audit), its Graph lane
// (graphlane.go: $batch writes within the budget; readback.go: read-backs
// and the must-change fallback; notice.go), its AD lane (adlane.go;
// ad.go: LDAP) and its risk lane (risklane.go; compromised.go: the
// preview's cloud IDs and what a mark's failure means), each behind a
// narrow interface (recorder, lane).
package campaign

import (
	"fmt"
	"slices"
	"time"

	"github.com/pwsync/pwsync/shared/mustchange"
)

// State is where a campaign is in its life.
type State string

// States: draft -> previewed -> (approved) -> running <-> paused -> done |
// cancelled | failed.
const (
	StateDraft     State = "draft"
	StatePreviewed State = "previewed"
	StateApproved  State = "approved"
	StateRunning   State = "running"
	StatePaused    State = "paused"
	StateDone      State = "done"
	StateCancelled State = "cancelled"
	StateFailed    State = "failed"
)

// Terminal reports whether nothing more happens to a campaign in s.
func (s State) Terminal() bool {
	return s == StateDone || s == StateCancelled || s == StateFailed
}

// transitions are the allowed moves. Preview may be redone until the
// campaign runs (a new preview drops an approval: the approver approved
// what they saw).
var transitions = map[State][]State{
	StateDraft:     {StatePreviewed, StateCancelled},
	StatePreviewed: {StatePreviewed, StateApproved, StateRunning, StateCancelled},
	StateApproved:  {StatePreviewed, StateRunning, StateCancelled},
	StateRunning:   {StatePaused, StateDone, StateCancelled, StateFailed},
	StatePaused:    {StateRunning, StateCancelled},
}

// CanMove reports whether a campaign may go from one state to another.
func CanMove(from, to State) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// Actions say what is done to each selected user.
type Actions struct {
	// RequireChange: synced users get AD pwdLastSet=0; cloud-managed users
	// get passwordProfile.forceChangePasswordNextSignIn.
	RequireChange bool `json:"require_change"`
	// RevokeSessions: revokeSignInSessions for cloud-managed users (synced
	// users' sessions are revoked by the normal pipeline after the AD
	// reset, per actuator.synced.revoke_sessions: doing it here too would
	// double the write).
	RevokeSessions bool `json:"revoke_sessions"`
	// Notify: a password_reset notice to cloud-managed users (synced users
	// are told by the pipeline's forced-change rule, for the same reason).
	Notify bool `json:"notify"`
	// ConfirmCompromised: every target with a cloud account, synced or
	// not, is marked compromised in Entra ID Protection
	// (riskyUsers/confirmCompromised: risk state confirmedCompromised, level
	// high), so that the tenant's own user-risk policies apply. Needs Entra
	// ID P2 and IdentityRiskyUser.ReadWrite.All; without them the mark fails
	// and the password work goes on. It goes with one of the actions above.
	ConfirmCompromised bool `json:"confirm_compromised"`
}

// Spec is what the creator asks for.
type Spec struct {
	Name    string   `json:"name"`
	Reason  string   `json:"reason,omitempty"` // e.g. the incident number
	Domain  string   `json:"domain,omitempty"` // configured AD domain; "" = the first
	Include Selector `json:"include"`
	Exclude Selector `json:"exclude,omitzero"`
	Actions Actions  `json:"actions"`
}

// Campaign is the stored campaign document.
type Campaign struct {
	ID         string    `json:"id"`
	Spec       Spec      `json:"spec"`
	State      State     `json:"state"`
	CreatedBy  string    `json:"created_by"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	ApprovedBy string    `json:"approved_by,omitempty"`
	ApprovedAt time.Time `json:"approved_at,omitzero"`
	StartedBy  string    `json:"started_by,omitempty"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// Targets is the number of users the last preview selected; the run
	// acts on exactly that set.
	Targets int `json:"targets"`
	// NeedsApproval is set by preview when Targets is above the threshold.
	NeedsApproval bool `json:"needs_approval"`
	// Preview is the last preview's summary.
	Preview *Preview `json:"preview,omitempty"`
	// Verify: cloud must-changes are read back, and the fallback taken when
	// the flag is missing (the actuator's strategy, fixed at preview so the
	// approver sees it and a restart does not change it); nil = not read back.
	Verify *mustchange.Strategy `json:"verify,omitempty"`
	// Error says why a campaign failed.
	Error string   `json:"error,omitempty"`
	Log   []Change `json:"log,omitempty"` // who moved it when
}

// Change is one state change, for the campaign's own history.
type Change struct {
	At   time.Time `json:"at"`
	By   string    `json:"by"`
	From State     `json:"from"`
	To   State     `json:"to"`
	Note string    `json:"note,omitempty"`
}

// move changes the state after checking the transition.
func (c *Campaign) move(to State, by string, at time.Time, note string) error {
	if !CanMove(c.State, to) {
		return fmt.Errorf("%w: campaign %s is %s, cannot become %s", ErrConflict, c.ID, c.State, to)
	}
	c.Log = append(c.Log, Change{At: at, By: by, From: c.State, To: to, Note: note})
	c.State, c.UpdatedAt = to, at
	return nil
}

// Kind of target, which decides the writes. The values are the ledger's
// and stay as they are; what users are shown is Write: KindSynced holds
// every user selected in AD, whether its cloud account is synced
// (onPremisesSyncEnabled) or cloud-managed.
type Kind string

const (
	// KindSynced: an AD account (synced to the cloud or not): pwdLastSet=0.
	KindSynced Kind = "synced"
	// KindCloud: a cloud account not synced from AD, selected in Entra:
	// Graph writes.
	KindCloud Kind = "cloud"
)

// Write is what a campaign writes for a user, the name the preview, the CLI
// and the console show (the README's user kinds, cloud-managed and synced,
// go by onPremisesSyncEnabled, which is not what decides a campaign's write).
type Write string

const (
	// WriteAD: pwdLastSet=0 over LDAP; the live pipeline makes the cloud follow.
	WriteAD Write = "ad_write"
	// WriteCloud: Graph writes (must-change flag, revoke, notice).
	WriteCloud Write = "cloud_write"
)

// Write is what the campaign writes for a target of kind k.
func (k Kind) Write() Write {
	if k == KindSynced {
		return WriteAD
	}
	return WriteCloud
}

// Target is one selected user, as resolved at preview.
type Target struct {
	Idx        int    `json:"i"`
	Kind       Kind   `json:"k"`
	UPN        string `json:"u"`
	DN         string `json:"dn,omitempty"`   // synced
	ObjectGUID string `json:"g,omitempty"`    // synced
	CloudID    string `json:"c,omitempty"`    // cloud (and synced when known)
	Name       string `json:"n,omitempty"`    // display name
	Lang       string `json:"lang,omitempty"` // preferredLanguage, for the notice
	PwdLastSet int64  `json:"pls,omitempty"`  // synced: pwdLastSet when planned (ADUser.PwdLastSet)
}

// Key identifies the user across selectors: AD users by objectGUID, cloud
// users by object ID.
func (t Target) Key() string {
	if t.Kind == KindSynced {
		return "ad:" + t.ObjectGUID
	}
	return "cloud:" + t.CloudID
}

// Steps a target gets, in order.
func (t Target) Steps(a Actions) []Step {
	var out []Step
	switch t.Kind {
	case KindSynced:
		if a.RequireChange {
			out = append(out, StepADMustChange)
		}
	case KindCloud:
		if a.RequireChange {
			out = append(out, StepCloudMustChange)
		}
		if a.RevokeSessions {
			out = append(out, StepRevoke)
		}
		if a.Notify {
			out = append(out, StepNotify)
		}
	}
	// A cloud-side marker: for synced users too, when their cloud account
	// is known (the preview looks it up), after the password steps.
	if a.ConfirmCompromised && t.CloudID != "" {
		out = append(out, StepConfirmCompromised)
	}
	return out
}

// StepsFor are the steps a target gets in this campaign: its Steps, with
// the read-back of the cloud must-change when the campaign verifies.
func (c Campaign) StepsFor(t Target) []Step {
	steps := t.Steps(c.Spec.Actions)
	if c.Verify == nil {
		return steps
	}
	for i, st := range steps {
		if st == StepCloudMustChange {
			return slices.Insert(steps, i+1, StepVerifyMustChange)
		}
	}
	return steps
}

// Step is one write for one user.
type Step string

const (
	StepADMustChange    Step = "ad_must_change" // LDAP modify pwdLastSet=0
	StepCloudMustChange Step = "must_change"    // PATCH passwordProfile
	// StepVerifyMustChange reads passwordProfile back after a must_change
	// Graph accepted and, when the flag is missing, writes the fallback.
	StepVerifyMustChange Step = "verify_must_change"
	StepRevoke           Step = "revoke" // POST revokeSignInSessions
	StepNotify           Step = "notify" // publish actions.notify
	// StepConfirmCompromised: POST riskyUsers/confirmCompromised (the risk
	// lane, up to 60 users a call).
	StepConfirmCompromised Step = "confirm_compromised"
)

// Graph reports whether the step is a Graph write (paced, batched).
func (s Step) Graph() bool {
	return s == StepCloudMustChange || s == StepRevoke || s == StepVerifyMustChange
}
