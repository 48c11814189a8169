package events

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
)

// TypeGraphRisk is a change of a user's Entra ID Protection risk
// (events.graph.risk, Data: RiskEvent): the risky user as read, with the
// detections read for it since the last round.
const TypeGraphRisk = "risk"

// ActionADRequireChange: set AD's "must change password at next logon"
// (pwdLastSet 0) on a synced user; the forced-change rule then does the
// rest when ingest sees it. Executed by the AD writer, not the actuator.
const ActionADRequireChange ActionKind = "ad_require_change"

// ActionDismissRisk: dismiss the user's risk in Entra ID Protection
// (riskyUsers/dismiss) once AD shows the new password. Executed by the AD
// writer's companion, the risk closer, not the actuator.
const ActionDismissRisk ActionKind = "dismiss_risk"

// ActionCheckRisk: at NotBefore, read the user's risk in Entra ID
// Protection and alert the admins if it is still at risk after the AD
// password change that should have remediated it. Executed by the AD
// writer's consumer, not the actuator.
const ActionCheckRisk ActionKind = "check_risk"

// Risk detail Entra sets when an on-premises password change remediated
// the user's risk (the tenant setting that allows it).
const RiskDetailChangedOnPrem = "userChangedPasswordOnPremises"

// RiskyUser is a riskyUser as Graph returns it (its names).
type RiskyUser struct {
	ID          string    `json:"id"`
	UPN         string    `json:"userPrincipalName,omitempty"`
	DisplayName string    `json:"userDisplayName,omitempty"`
	Level       string    `json:"riskLevel,omitempty"`
	State       string    `json:"riskState,omitempty"`
	Detail      string    `json:"riskDetail,omitempty"`
	Updated     time.Time `json:"riskLastUpdatedDateTime,omitzero"`
	IsDeleted   bool      `json:"isDeleted,omitempty"`
}

// RiskDetection is a riskDetection as Graph returns it (its names).
type RiskDetection struct {
	ID        string    `json:"id"`
	EventType string    `json:"riskEventType,omitempty"`
	Level     string    `json:"riskLevel,omitempty"`
	State     string    `json:"riskState,omitempty"`
	Detail    string    `json:"riskDetail,omitempty"`
	Detected  time.Time `json:"detectedDateTime,omitzero"`
	Updated   time.Time `json:"lastUpdatedDateTime,omitzero"`
	UserID    string    `json:"userId,omitempty"`
	UPN       string    `json:"userPrincipalName,omitempty"`
}

// RiskEvent is one risk change of one user. Cloud carries the user's
// cloud identity (read with the risk), so the evaluator can join it to AD
// and tell synced from cloud-managed without the Graph side.
type RiskEvent struct {
	User       RiskyUser       `json:"user"`
	Detections []RiskDetection `json:"detections,omitempty"`
	Cloud      *CloudUser      `json:"cloud,omitempty"`
}

// EventID is stable for the same risk state and detections: a poll that
// reads them again publishes a duplicate JetStream drops.
func (r RiskEvent) EventID() string {
	ids := make([]string, 0, len(r.Detections))
	for _, d := range r.Detections {
		ids = append(ids, d.ID+"/"+d.State)
	}
	slices.Sort(ids)
	h := sha256.Sum256(fmt.Appendf(nil, "%s|%s|%s|%s|%s", r.User.Level, r.User.State, r.User.Detail,
		r.User.Updated.UTC().Format(time.RFC3339Nano), strings.Join(ids, ",")))
	return "risk." + KeySafe(r.User.ID) + "." + hex.EncodeToString(h[:8])
}
