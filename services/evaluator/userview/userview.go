// Package userview assembles one user's picture from pwsync's NATS state:
// the joined AD and Entra state, the computed expiry and next notice, what
// is pending, and the audit timeline (event -> rule -> action -> Graph
// answer). `pwsync user` prints it; the admin API serves it as JSON.
package userview

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/userstate"
	"github.com/pwsync/pwsync/shared/userstore"
)

// View is one user.
type View struct {
	UPN   string `json:"upn"`
	Found bool   `json:"found"`
	GUID  string `json:"object_guid,omitempty"`

	State userstate.State `json:"state"`
	// JoinedCloudID: the cloud account the actuator joined, when delta has
	// not brought the cloud side yet.
	JoinedCloudID string `json:"joined_cloud_id,omitempty"`
	ScopeWhy      string `json:"scope_why,omitempty"`

	Expiry       *time.Time  `json:"expiry,omitempty"`
	ExpiryWhy    string      `json:"expiry_why"`
	NextNotice   *NextNotice `json:"next_notice,omitempty"`
	ScheduleWhy  string      `json:"schedule_why,omitempty"`
	Pending      []string    `json:"pending"`
	PasswordSet  *time.Time  `json:"password_set,omitempty"`
	MustChange   bool        `json:"must_change"`
	NeverExpires bool        `json:"never_expires"`
	Disabled     bool        `json:"disabled"`

	// Queued: actions decided for the user without a final outcome yet
	// (queued, in progress or waiting for a retry); DeadLetters: actions
	// that ended as dead letters. Both from the timeline.
	Queued      []QueuedAction `json:"queued_actions"`
	DeadLetters []DeadLetter   `json:"dead_letters"`

	Timeline []events.AuditRecord `json:"timeline"`
}

// QueuedAction is an action decided but not finished.
type QueuedAction struct {
	ActionID string    `json:"action_id"`
	Action   string    `json:"action"`
	Rule     string    `json:"rule"`
	Since    time.Time `json:"since"`
	// LastStep is the latest step record, e.g. "must_change failed (429)".
	LastStep string `json:"last_step,omitempty"`
}

// DeadLetter is an action that ended as a dead letter.
type DeadLetter struct {
	ActionID string    `json:"action_id"`
	Action   string    `json:"action"`
	At       time.Time `json:"at"`
	Reason   string    `json:"reason"`
}

// queuedAndDead reads the timeline (oldest first): a decision to act names
// its action; the action's own record ("action" kind) ends it. A decision
// inside the timeline has its end inside it too (records come after).
func queuedAndDead(timeline []events.AuditRecord) ([]QueuedAction, []DeadLetter) {
	queued := map[string]*QueuedAction{}
	var order []string
	dead := []DeadLetter{}
	for _, r := range timeline {
		if r.ActionID == "" {
			continue
		}
		switch r.Kind {
		case "decision":
			if _, ok := queued[r.ActionID]; !ok {
				queued[r.ActionID] = &QueuedAction{ActionID: r.ActionID, Action: r.Action, Rule: r.Rule, Since: r.Time}
				order = append(order, r.ActionID)
			}
		case "step":
			if q := queued[r.ActionID]; q != nil {
				q.LastStep = r.Step + " " + r.Outcome
				if r.HTTPStatus != 0 {
					q.LastStep += fmt.Sprintf(" (%d)", r.HTTPStatus)
				}
			}
		case "action":
			delete(queued, r.ActionID)
			if r.Outcome == events.OutcomeDeadLetter {
				dead = append(dead, DeadLetter{ActionID: r.ActionID, Action: r.Action, At: r.Time, Reason: r.Detail})
			}
		}
	}
	out := []QueuedAction{}
	for _, id := range order {
		if q := queued[id]; q != nil {
			out = append(out, *q)
		}
	}
	return out, dead
}

// NextNotice is the next scheduled expiry step.
type NextNotice struct {
	Due      time.Time `json:"due"`
	LeadDays int       `json:"lead_days"`
	Template string    `json:"template,omitempty"`
	Enforce  bool      `json:"enforce,omitempty"`
}

// Build reads the user by UPN. A UPN pwsync never saw gives Found false.
func Build(ctx context.Context, js jetstream.JetStream, upn string, p rules.Policy, now time.Time, history int) (View, error) {
	v := View{UPN: upn, Pending: []string{}, Queued: []QueuedAction{}, DeadLetters: []DeadLetter{}, Timeline: []events.AuditRecord{}}
	store, err := userstore.Open(ctx, js)
	if err != nil {
		return v, err
	}
	if v.GUID, err = store.GUIDByUPN(ctx, upn); err != nil || v.GUID == "" {
		return v, err
	}
	v.Found = true
	if v.State, _, err = store.State(ctx, v.GUID); err != nil {
		return v, err
	}
	if v.State.Cloud == nil {
		// only a hint until delta brings the cloud side: unreadable, left out
		v.JoinedCloudID, _ = store.JoinedCloudID(ctx, v.GUID)
	}
	v.derive(p, now)
	if v.Timeline, err = audit.Last(ctx, js, audit.Query{User: v.GUID}, history); err != nil {
		return v, err
	}
	if v.Timeline == nil {
		v.Timeline = []events.AuditRecord{}
	}
	v.Queued, v.DeadLetters = queuedAndDead(v.Timeline)
	return v, nil
}

// derive computes expiry, schedule and pending work from the state (pure).
func (v *View) derive(p rules.Policy, now time.Time) {
	st, ad := v.State, v.State.AD
	cloudID := v.JoinedCloudID
	if st.Cloud != nil && !st.Cloud.Removed {
		cloudID = st.Cloud.ID
	}
	_, v.ScopeWhy = rules.InScope(p, ad, cloudID)
	v.MustChange, v.NeverExpires, v.Disabled = ad.MustChange(), ad.NeverExpires(), ad.Disabled()
	if t := events.FileTime(ad.PwdLastSet); !t.IsZero() {
		v.PasswordSet = &t
	}
	exp, ok := ad.PasswordExpiry()
	switch {
	case ad.MustChange():
		v.ExpiryWhy = "must change at next logon"
	case ad.NeverExpires():
		v.ExpiryWhy = "password never expires (AD)"
	case !ok:
		v.ExpiryWhy = "no expiry known"
	default:
		v.Expiry, v.ExpiryWhy = &exp, "from AD"
		if ad.ExpirySource != "" {
			v.ExpiryWhy = "from " + ad.ExpirySource
		}
	}
	sc := rules.UserSchedule(p, st)
	v.ScheduleWhy = sc.Why
	// what the scheduler counts as handled: under dry-run, what dry-run
	// pretended too (kept apart from the live record)
	pending := rules.Pending(sc, rules.Handled(p, st, sc.Key))
	sort.Slice(pending, func(i, j int) bool { return pending[i].Due.Before(pending[j].Due) })
	for _, pt := range pending {
		n := &NextNotice{Due: pt.Due, LeadDays: pt.LeadDays, Enforce: pt.Enforce}
		if pt.Notice {
			n.Template = events.NoticeExpiryWarning
			if pt.LeadDays <= 0 {
				n.Template = events.NoticeExpired
			}
		}
		v.NextNotice = n
		break
	}
	if aw := st.UndoAwait; aw != nil {
		v.Pending = append(v.Pending, UndoWaitText(*aw))
	}
	switch {
	case st.ChangeRequired:
		v.Pending = append(v.Pending, "cloud password change required by "+st.RequiredByAction)
	case !st.WritebackAwait.IsZero():
		v.Pending = append(v.Pending, "waiting for AD to follow a cloud password change of "+st.WritebackAwait.Format(time.RFC3339))
	case st.PoliciesPending != "":
		v.Pending = append(v.Pending, fmt.Sprintf("passwordPolicies %q written, not yet seen back", st.PoliciesPending))
	}
}

// UndoWaitText says what an undo waits for and since when.
func UndoWaitText(aw userstate.UndoAwait) string {
	since := aw.Since.UTC().Format(time.RFC3339)
	if aw.For == userstate.AwaitHashSync {
		return "undo waits since " + since + " for Entra to have the AD password set at " +
			events.FileTime(aw.PwdLastSet).Format(time.RFC3339) + " (password hash sync); lifted anyway at " + aw.Until.UTC().Format(time.RFC3339)
	}
	return "undo waits since " + since + " for the user to change the cloud password (cloud-managed account; the must-change flag stays until then)"
}

// Match is a search hit.
type Match struct {
	UPN         string `json:"upn"`
	DisplayName string `json:"display_name,omitempty"`
	SAM         string `json:"sam_account_name,omitempty"`
	DN          string `json:"dn"`
	InScope     bool   `json:"in_scope"`
}

// Search finds users whose UPN, display name or sAMAccountName contains q
// (case-insensitive), at most limit, sorted by UPN.
func Search(ctx context.Context, js jetstream.JetStream, q string, limit int) ([]Match, error) {
	q = strings.ToLower(strings.TrimSpace(q))
	out := []Match{}
	if q == "" {
		return out, nil
	}
	store, err := userstore.Open(ctx, js)
	if err != nil {
		return nil, err
	}
	err = store.EachState(ctx, func(st userstate.State) bool {
		a := st.AD
		if !a.Deleted && (strings.Contains(strings.ToLower(a.UPN), q) || strings.Contains(strings.ToLower(a.DisplayName), q) ||
			strings.Contains(strings.ToLower(a.SAMAccountName), q)) {
			out = append(out, Match{UPN: a.UPN, DisplayName: a.DisplayName, SAM: a.SAMAccountName, DN: a.DN, InScope: st.InScope})
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UPN < out[j].UPN })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
