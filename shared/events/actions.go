package events

import (
	"fmt"
	"strings"
	"time"
)

// ActionKind names what the actuator must bring about. Kinds say the desired
// effect, not the Graph call: the actuator picks the calls per user kind
// (cloud-managed or synced) and configured strategy.
type ActionKind string

const (
	// ActionRequireChange: the cloud account must demand a new password
	// (forced-change, expiry).
	ActionRequireChange ActionKind = "require_password_change"
	// ActionClearChange: undo what RequireChange did that is no longer wanted
	// (password-changed).
	ActionClearChange ActionKind = "clear_password_change"
	// ActionSetPasswordPolicies: write passwordPolicies (never-expires, drift).
	ActionSetPasswordPolicies ActionKind = "set_password_policies"
	// ActionAlert: tell the admins (writeback gap, drift storm); no user write.
	ActionAlert ActionKind = "alert"
	// ActionNotify: tell the user (expiry lead day, expired, password reset);
	// no directory write. Notice says what to tell.
	ActionNotify ActionKind = "notify"
)

// Notice templates: the evaluator picks one, the notifier renders it in the
// user's language.
const (
	NoticeExpiryWarning = "expiry_warning" // LeadDays > 0: the password expires in LeadDays
	NoticeExpired       = "expired"        // LeadDays <= 0: it expired -LeadDays ago
	NoticePasswordReset = "password_reset" // forced-change: "your password was reset"
)

// Notice is what an ActionNotify tells the user.
type Notice struct {
	Template string `json:"template"`
	// LeadDays: days before expiry this notice belongs to (0 = the day of
	// expiry, negative = after it).
	LeadDays int       `json:"lead_days"`
	Expiry   time.Time `json:"expiry,omitempty"`
	// PasswordSetAt identifies the password (AD pwdLastSet): the ledger sends
	// each (user, password, template, lead day) once.
	PasswordSetAt time.Time `json:"password_set_at"`
	// Language is AD's preferredLanguage when known; the notifier may read
	// the cloud user's preferredLanguage instead.
	Language string `json:"language,omitempty"`
	// DisplayName for the greeting; empty = the UPN.
	DisplayName string `json:"display_name,omitempty"`
}

// LedgerKey is the notifier's exactly-once key for this notice of this user.
//
// Expiry notices also carry the password's lifetime in whole days (expiry
// minus pwdLastSet, rounded): when a PSO or the domain's maxPwdAge moves the
// expiry of the same password, the schedule restarts and the next due lead
// day tells the NEW date, even if that lead day was already notified for the
// old one. A user told "expires on the 20th" whose password now expires on
// the 15th must hear it (or be locked out by surprise); one whose expiry
// moved later hears the later date, which is news, not a repeat. Rounding
// keeps a recomputation that shifts the instant by seconds or hours (not a
// real policy change: maxPwdAge is set in days) from sending twice.
func (n Notice) LedgerKey(u UserRef) string {
	id := u.ObjectGUID
	if id == "" {
		id = u.UPN
	}
	key := fmt.Sprintf("notice.%s.%d.%s.%d", id, n.PasswordSetAt.Unix(), n.Template, n.LeadDays)
	if d, ok := n.LifetimeDays(); ok && n.Template != NoticePasswordReset {
		key += fmt.Sprintf(".life%d", d)
	}
	return KeySafe(key)
}

// LifetimeDays is the password's lifetime (expiry - set), rounded to days.
func (n Notice) LifetimeDays() (int, bool) {
	if n.Expiry.IsZero() || n.PasswordSetAt.IsZero() {
		return 0, false
	}
	return int(n.Expiry.Sub(n.PasswordSetAt).Round(24*time.Hour) / (24 * time.Hour)), true
}

// UserRef identifies a user on both sides as far as known when the action was decided.
type UserRef struct {
	Domain      string `json:"domain,omitempty"`
	ObjectGUID  string `json:"object_guid,omitempty"`
	ImmutableID string `json:"immutable_id,omitempty"`
	UPN         string `json:"upn,omitempty"`
	DN          string `json:"dn,omitempty"`
	Mail        string `json:"mail,omitempty"`
	CloudID     string `json:"cloud_id,omitempty"` // known when the join was made
}

// Action is one decision of the evaluator, executed by the actuator.
type Action struct {
	ID        string     `json:"id"` // deterministic: rule + user + triggering event
	Kind      ActionKind `json:"kind"`
	Rule      string     `json:"rule"`
	Reason    string     `json:"reason,omitempty"`
	EventID   string     `json:"event_id"`
	EventTime time.Time  `json:"event_time"` // when ingest saw the change: start of the latency clock
	User      UserRef    `json:"user"`
	// Seq orders actions of one user (the AD uSNChanged that triggered it): the
	// actuator never applies an action older than one it already applied.
	Seq    int64 `json:"seq"`
	DryRun bool  `json:"dry_run,omitempty"`
	// Policies is the passwordPolicies value to write (set_password_policies).
	Policies string `json:"policies,omitempty"`
	// Undoes is the require_password_change action a clear_password_change
	// undoes: only what that action did needs undoing.
	Undoes string `json:"undoes,omitempty"`
	// Notice is what to tell the user (notify).
	Notice *Notice `json:"notice,omitempty"`
	// Campaign names the campaign this action belongs to, if any.
	Campaign string `json:"campaign,omitempty"`
	// AwaitCloud (clear_password_change decided without the user's cloud
	// state, e.g. with the Graph side off): undo only once Entra has the new
	// password, which the actuator reads.
	AwaitCloud *UndoGate `json:"await_cloud,omitempty"`
	// NotBefore: the action is not carried out before this time (check_risk
	// waits some time after the change it checks).
	NotBefore time.Time `json:"not_before,omitzero"`
}

// UndoGate is what an undo waits for when pwsync cannot watch the cloud.
// A synced user's undo waits until Entra's lastPasswordChangeDateTime
// reaches ADPasswordSet (password hash sync carried it), at most until
// Until, then goes ahead with an alert. A cloud-managed user's waits for a
// cloud password change at or after UserChangeFrom; at Until it gives up
// and leaves the block (the user has not changed the cloud password).
type UndoGate struct {
	ADPasswordSet time.Time `json:"ad_password_set"`
	RequiredAt    time.Time `json:"required_at,omitzero"`
	// UserChangeFrom is RequiredAt plus the evaluator's own-write margin
	// (and clock skew): an earlier cloud change is pwsync's own temporary
	// password, not the user's. Zero: not known when pwsync required one.
	UserChangeFrom time.Time `json:"user_change_from,omitzero"`
	Until          time.Time `json:"until"`
}

// Subject is the NATS subject the action is published on.
func (a Action) Subject() string { return "actions." + string(a.Kind) }

// ActionID builds a deterministic action ID usable as a Nats-Msg-Id and a KV key.
func ActionID(rule string, user UserRef, eventID string) string {
	return KeySafe(rule + "." + user.ObjectGUID + "." + eventID)
}

// KeySafe maps s onto the characters NATS KV keys allow ([-/_=.a-zA-Z0-9]).
func KeySafe(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '=', r == '.', r == '/':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// Audit outcomes.
const (
	OutcomeOK         = "ok"
	OutcomeSkipped    = "skipped"
	OutcomeFailed     = "failed"
	OutcomeDeadLetter = "dead_letter"
	OutcomeDryRun     = "dry_run"
	OutcomeWaiting    = "waiting" // an undo waiting for the cloud to have the new password
)

// AuditRecord is one line of the audit trail: a decision, a step of an
// action, or an outcome. Secrets never go in here.
type AuditRecord struct {
	Time       time.Time `json:"time"`
	Kind       string    `json:"kind"` // decision | step | action | ingest
	EventID    string    `json:"event_id,omitempty"`
	ActionID   string    `json:"action_id,omitempty"`
	Rule       string    `json:"rule,omitempty"`
	Action     string    `json:"action,omitempty"`
	Step       string    `json:"step,omitempty"`
	User       UserRef   `json:"user"`
	CloudID    string    `json:"cloud_id,omitempty"`
	Outcome    string    `json:"outcome"`
	HTTPStatus int       `json:"http_status,omitempty"`
	Detail     string    `json:"detail,omitempty"`
	LatencyMS  float64   `json:"latency_ms,omitempty"` // event observed -> this outcome
	// Admin is set on admin API requests (Kind "admin").
	Admin *AdminRequest `json:"admin,omitempty"`
}

// Subject is the NATS subject the record is published on.
func (r AuditRecord) Subject() string { return "audit." + r.Kind }
