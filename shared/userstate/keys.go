package userstate

import (
	"encoding/json"
	"strings"

	"github.com/pwsync/pwsync/shared/events"
)

// Keys of bucket users (natsx.BucketUsers), written by the evaluator.

// UserKey is a user's State: its AD objectGUID.
func UserKey(guid string) string { return events.KeySafe(guid) }

// Keys of bucket identity (natsx.BucketIdentity): the indexes that join
// cloud accounts to AD users. The evaluator writes the UPN and immutable-ID
// indexes (value: the objectGUID) and parks cloud accounts; the actuator
// caches the joins it resolved through Graph (value: a Join).

// UPNKey indexes an AD user by UPN (case-insensitive); "" for no UPN.
func UPNKey(upn string) string {
	if upn == "" {
		return ""
	}
	return events.KeySafe("upn." + strings.ToLower(upn))
}

// ImmKey indexes an AD user by immutable ID (whatever the source anchor);
// "" for none. '+' (the only base64 character keys do not allow) becomes
// '_', which base64 never uses.
func ImmKey(imm string) string {
	if imm == "" {
		return ""
	}
	return events.KeySafe("imm." + imm)
}

// ParkedKey holds the event (an events.Envelope) of a cloud account matched
// by UPN whose AD user is not known yet: delta often runs before the AD
// full sync has indexed the UPN, and a dropped state would stay unknown
// until the account next changes.
func ParkedKey(upn string) string {
	return events.KeySafe("parked.upn." + strings.ToLower(upn))
}

// JoinKey is the actuator's join of an AD user (its objectGUID) to a cloud
// account.
func JoinKey(guid string) string { return events.KeySafe(guid) }

// Join is the value at JoinKey.
type Join struct {
	CloudID string `json:"cloud_id"`
	UPN     string `json:"upn"`
	Via     string `json:"via"` // JoinedVia*
}

// How the actuator found a cloud account.
const (
	JoinedViaImmutableID = "immutable_id"
	JoinedViaUPN         = "upn"
)

// DecodeJoin reads a JoinKey value; ok is false when it holds no cloud ID.
func DecodeJoin(value []byte) (j Join, ok bool) {
	if json.Unmarshal(value, &j) != nil || j.CloudID == "" {
		return Join{}, false
	}
	return j, true
}
