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
	// Partial: delta returned only some properties (changed ones); the
	// evaluator merges it over what it knew.
	Partial bool `json:"partial,omitempty"`
}

// EventID is stable for the same state of the same user, so a delta round
// that re-sends an unchanged user is deduplicated by JetStream.
func (c CloudUser) EventID() string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s|%s|%s|%s|%v|%v|%s|%s|%s|%v", c.ID, c.UPN, c.Mail, c.ImmutableID, c.SyncEnabled,
		c.AccountEnabled, c.PasswordPolicies, c.LastPasswordChange.UTC().Format(time.RFC3339Nano), c.PreferredLanguage, c.Removed))
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
}
