// Package events holds the wire types that travel over NATS between ingest,
// evaluator and actuator, and the subject names they travel on. No I/O here.
package events

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Sources of events.
const (
	SourceAD    = "ad"
	SourceGraph = "graph"
	SourceAdmin = "admin"
)

// Event types.
const (
	TypeADUser            = "user"         // Data: ADUser, the user's full password-relevant state
	TypeADPolicy          = "policy"       // Data: ADPolicy, a domain or PSO policy change
	TypeGraphNotification = "notification" // Data: GraphNotification, one change notification
	TypeGraphUser         = "user"         // Data: CloudUser, one user from delta query
)

// Envelope wraps every event. ID is stable: a retry or a replay of the same
// change carries the same ID, so JetStream's duplicate window collapses it.
type Envelope struct {
	ID     string          `json:"id"`
	Source string          `json:"source"`
	Type   string          `json:"type"`
	Time   time.Time       `json:"time"` // when the change was observed by ingest
	Data   json.RawMessage `json:"data"`
}

// Subject is the NATS subject the envelope is published on.
func (e Envelope) Subject() string { return "events." + e.Source + "." + e.Type }

// NewEnvelope marshals data into an envelope.
func NewEnvelope(id, source, typ string, at time.Time, data any) (Envelope, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return Envelope{}, fmt.Errorf("encoding %s.%s event %s: %w", source, typ, id, err)
	}
	return Envelope{ID: id, Source: source, Type: typ, Time: at.UTC(), Data: raw}, nil
}

// Decode unmarshals the envelope's data into v.
func (e Envelope) Decode(v any) error {
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("decoding %s.%s event %s: %w", e.Source, e.Type, e.ID, err)
	}
	return nil
}

// userAccountControl bits that matter here.
const (
	UACAccountDisable       = 0x0002
	UACDontExpirePassword   = 0x10000
	UACPasswordExpiredFlag  = 0x800000 // msDS-User-Account-Control-Computed
	FileTimeNeverExpires    = 0x7FFFFFFFFFFFFFFF
	fileTimeEpochDifference = 116444736000000000 // 100ns ticks between 1601-01-01 and 1970-01-01
)

// ADUser is the full password-relevant state of one AD user, read from the DC
// after a change. Times are AD FILETIME values (100 ns since 1601) as AD
// stores them, so that "0 = must change" survives unchanged.
type ADUser struct {
	Domain             string `json:"domain"`      // configured domain name (e.g. example.test)
	ObjectGUID         string `json:"object_guid"` // canonical GUID string, lower case
	ImmutableID        string `json:"immutable_id"`
	DN                 string `json:"dn"`
	SAMAccountName     string `json:"sam_account_name,omitempty"`
	UPN                string `json:"upn,omitempty"`
	Mail               string `json:"mail,omitempty"`
	DisplayName        string `json:"display_name,omitempty"`
	PwdLastSet         int64  `json:"pwd_last_set"`
	UserAccountControl int64  `json:"user_account_control"`
	UACComputed        int64  `json:"uac_computed,omitempty"`
	ExpiryComputed     int64  `json:"expiry_computed,omitempty"` // msDS-UserPasswordExpiryTimeComputed
	ResultantPSO       string `json:"resultant_pso,omitempty"`
	// Expiry is the effective password expiry (FILETIME; 0 = must change,
	// FileTimeNeverExpires = never): ExpiryComputed when the DC returned it,
	// else pwdLastSet + the effective maximum age. ExpirySource says which.
	Expiry       int64  `json:"expiry,omitempty"`
	ExpirySource string `json:"expiry_source,omitempty"`
	// PolicyName is the PSO's or "domain" whose maximum age applies.
	PolicyName string   `json:"policy_name,omitempty"`
	MemberOf   []string `json:"member_of,omitempty"`
	// Groups are the configured groups of interest (scope, break-glass) the
	// user is a member of, nested membership included.
	Groups   []string `json:"groups,omitempty"`
	Language string   `json:"language,omitempty"` // preferredLanguage
	// PolicyRev is set when a policy change (maxPwdAge, PSO, group) made
	// ingest re-read the user: the same uSNChanged, maybe another expiry.
	PolicyRev int64 `json:"policy_rev,omitempty"`
	// USNChanged is the DC's own: USNs of different DCs do not compare
	// (MS-ADTS 3.1.1.1.9). DC names the DC (its invocationId) it is from.
	USNChanged int64  `json:"usn_changed"`
	DC         string `json:"dc,omitempty"`
	// PwdVersion is pwdLastSet's version in the replication metadata
	// (replPropertyMetaData): every originating write raises it, on every
	// DC alike, so it orders password states read from different DCs.
	// 0 = not read.
	PwdVersion uint32 `json:"pwd_version,omitempty"`
	Deleted    bool   `json:"deleted,omitempty"`
	FullSync   bool   `json:"full_sync,omitempty"` // read during a full sync (backfill)
}

// MustChange reports whether AD demands a password change at next logon:
// pwdLastSet 0 and not "password never expires" (MS-ADA3 pwdLastSet; AD
// does not prompt such an account, msDS-User-Account-Control-Computed has
// no UF_PASSWORD_EXPIRED for it, and Entra Connect skips it).
func (u ADUser) MustChange() bool { return u.PwdLastSet == 0 && !u.NeverExpires() }

// PwdLastSetZero reports pwdLastSet 0 whatever the other flags say: what
// the opt-in forced_change.include_never_expires acts on.
func (u ADUser) PwdLastSetZero() bool { return u.PwdLastSet == 0 }

// Disabled reports whether the account is disabled in AD.
func (u ADUser) Disabled() bool { return u.UserAccountControl&UACAccountDisable != 0 }

// NeverExpires reports whether "password never expires" is set.
func (u ADUser) NeverExpires() bool { return u.UserAccountControl&UACDontExpirePassword != 0 }

// EventID is the stable ID of the event that carries this state.
// A USN is one DC's, so the DC is part of it: the same number read from
// another DC is another state, not a duplicate to drop.
func (u ADUser) EventID() string {
	usn := fmt.Sprint(u.USNChanged)
	if u.DC != "" {
		usn = dcTag(u.DC) + "." + usn
	}
	if u.PolicyRev != 0 {
		return fmt.Sprintf("ad.%s.%s.p%d", u.ObjectGUID, usn, u.PolicyRev)
	}
	return fmt.Sprintf("ad.%s.%s", u.ObjectGUID, usn)
}

// StateID is the AD state an AD user event ID names, without the password
// policy revision (EventID's ".p<rev>"): the same state read again after a
// policy change is a new event (JetStream must not drop it as a
// duplicate), yet it decides the same actions as the first read, which
// must keep their IDs. Else the two, evaluated before either stored the
// state (a restart, or concurrent workers), would each publish the action
// under its own ID and the actuator would carry it out twice. Other IDs
// are returned as they are.
func StateID(eventID string) string {
	if !strings.HasPrefix(eventID, "ad.") {
		return eventID
	}
	i := strings.LastIndex(eventID, ".p")
	if i < 0 || i+2 == len(eventID) || strings.Trim(eventID[i+2:], "0123456789") != "" {
		return eventID
	}
	return eventID[:i]
}

// dcTag is a short name of a DC's invocationId for IDs.
func dcTag(invocationID string) string {
	t := strings.ReplaceAll(invocationID, "-", "")
	if len(t) > 8 {
		t = t[:8]
	}
	return t
}

// FileTime converts an AD FILETIME to time.Time; zero and "never" give the zero time.
func FileTime(ft int64) time.Time {
	if ft <= 0 || ft == FileTimeNeverExpires {
		return time.Time{}
	}
	return time.Unix(0, (ft-fileTimeEpochDifference)*100).UTC()
}

// ToFileTime converts a time to an AD FILETIME.
func ToFileTime(t time.Time) int64 { return t.UnixNano()/100 + fileTimeEpochDifference }
