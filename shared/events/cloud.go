package events

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// Event and timer types of the Graph side.
const (
	TypeCloudUser = "user" // Data: CloudUser (events.graph.user), from delta query
	SourceTimer   = "timer"
	TypeWriteback = "writeback" // Data: Timer, a due check of the password writeback gap
	TypeUndoBound = "undo"      // Data: Timer, the end of an undo's wait for password hash sync
)

// Password policy values of a user's passwordPolicies.
const (
	PolicyDisablePasswordExpiration = "DisablePasswordExpiration"
	PolicyDisableStrongPassword     = "DisableStrongPassword"
)

// CloudUser is the password-relevant state of one Entra user, as delta query
// returned it.
type CloudUser struct {
	ID                 string    `json:"id"`
	UPN                string    `json:"upn,omitempty"`
	Mail               string    `json:"mail,omitempty"`
	ImmutableID        string    `json:"immutable_id,omitempty"`
	SyncEnabled        bool      `json:"sync_enabled,omitempty"`
	AccountEnabled     bool      `json:"account_enabled,omitempty"`
	PasswordPolicies   string    `json:"password_policies,omitempty"`
	LastPasswordChange time.Time `json:"last_password_change,omitzero"`
	PreferredLanguage  string    `json:"preferred_language,omitempty"`
	Removed            bool      `json:"removed,omitempty"` // @removed in delta
	// Absent names the Graph properties the delta item left out (never set
	// on the user, or unchanged): unknown, not empty. The evaluator keeps
	// what it knew for those and takes every other value, zero included
	// (null = cleared).
	Absent []string `json:"absent,omitempty"`
}

// Has reports whether the item carried the Graph property name (a value or null).
func (c CloudUser) Has(name string) bool {
	for _, a := range c.Absent {
		if a == name {
			return false
		}
	}
	return true
}

// Equal reports whether two cloud states are the same.
func (c CloudUser) Equal(o CloudUser) bool {
	return c.ID == o.ID && c.UPN == o.UPN && c.Mail == o.Mail && c.ImmutableID == o.ImmutableID &&
		c.SyncEnabled == o.SyncEnabled && c.AccountEnabled == o.AccountEnabled && c.PasswordPolicies == o.PasswordPolicies &&
		c.LastPasswordChange.Equal(o.LastPasswordChange) && c.PreferredLanguage == o.PreferredLanguage &&
		c.Removed == o.Removed && strings.Join(c.Absent, ",") == strings.Join(o.Absent, ",")
}

// EventID is stable for the same state of the same user, so a delta round
// that re-sends an unchanged user is deduplicated by JetStream.
func (c CloudUser) EventID() string {
	// Absent is part of the state: {passwordPolicies: null} (cleared) and an
	// item without it (unchanged) must not share an ID.
	h := sha256.Sum256(fmt.Appendf(nil, "%s|%s|%s|%s|%v|%v|%s|%s|%s|%v|%s", c.ID, c.UPN, c.Mail, c.ImmutableID, c.SyncEnabled,
		c.AccountEnabled, c.PasswordPolicies, c.LastPasswordChange.UTC().Format(time.RFC3339Nano), c.PreferredLanguage, c.Removed,
		strings.Join(c.Absent, ",")))
	return "graph." + KeySafe(c.ID) + "." + hex.EncodeToString(h[:8])
}

// DisablesExpiration reports whether passwordPolicies holds DisablePasswordExpiration.
func (c CloudUser) DisablesExpiration() bool {
	return HasPolicy(c.PasswordPolicies, PolicyDisablePasswordExpiration)
}

// HasPolicy reports whether a passwordPolicies value ("A, B") holds p.
func HasPolicy(policies, p string) bool {
	for _, v := range strings.Split(policies, ",") {
		if strings.EqualFold(strings.TrimSpace(v), p) {
			return true
		}
	}
	return false
}

// WithExpiration returns policies with DisablePasswordExpiration set or
// cleared, keeping the other values (DisableStrongPassword). "None" is what
// Graph and Entra Connect write for no policy.
func WithExpiration(policies string, disable bool) string {
	var out []string
	for _, v := range strings.Split(policies, ",") {
		v = strings.TrimSpace(v)
		if v == "" || strings.EqualFold(v, "None") || strings.EqualFold(v, PolicyDisablePasswordExpiration) {
			continue
		}
		out = append(out, v)
	}
	if disable {
		out = append([]string{PolicyDisablePasswordExpiration}, out...)
	}
	if len(out) == 0 {
		return "None"
	}
	return strings.Join(out, ", ")
}

// GUIDFromImmutableID returns the canonical objectGUID string of an
// onPremisesImmutableId that is Entra Connect's default anchor (base64 of
// the 16 GUID bytes), or "" when it is not one (ms-DS-ConsistencyGuid of
// another form, or a custom anchor).
func GUIDFromImmutableID(imm string) string {
	raw, err := base64.StdEncoding.DecodeString(imm)
	if err != nil || len(raw) != 16 {
		return ""
	}
	s, err := GUIDString(raw)
	if err != nil {
		return ""
	}
	return s
}

// Timer is a check that is due at a time: the evaluator keeps it in the
// EVENTS stream and handles it when due.
type Timer struct {
	Due        time.Time `json:"due"`
	ObjectGUID string    `json:"object_guid"`
	// CloudChange is the lastPasswordChangeDateTime the writeback check is about.
	CloudChange time.Time `json:"cloud_change,omitzero"`
	// PwdLastSet (undo timers) is the AD password whose arrival in Entra the
	// undo waits for.
	PwdLastSet int64 `json:"pwd_last_set,omitempty"`
}

// Type is the event type the timer travels as.
func (t Timer) Type() string {
	if t.PwdLastSet != 0 {
		return TypeUndoBound
	}
	return TypeWriteback
}

// EventID is the timer's stable ID.
func (t Timer) EventID() string {
	if t.PwdLastSet != 0 {
		return KeySafe(fmt.Sprintf("timer.undo.%s.%d", t.ObjectGUID, t.PwdLastSet))
	}
	return KeySafe(fmt.Sprintf("timer.writeback.%s.%d", t.ObjectGUID, t.CloudChange.UnixNano()))
}
