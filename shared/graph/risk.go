package graph

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/pwsync/pwsync/shared/events"
)

// RiskReader reads Entra ID Protection (licence: Entra ID P2; application
// permissions IdentityRiskyUser.Read.All and IdentityRiskEvent.Read.All,
// IdentityRiskyUser.ReadWrite.All for DismissRisk and ConfirmCompromised).
// *msgraph.Client implements it.
type RiskReader interface {
	// RiskyUsersSince lists the risky users whose riskLastUpdatedDateTime
	// is at or after since, every page.
	RiskyUsersSince(ctx context.Context, since time.Time) ([]events.RiskyUser, error)
	// RiskyUser reads one; a user without a risk record is a 404 *Error.
	RiskyUser(ctx context.Context, userID string) (*events.RiskyUser, error)
	// RiskDetectionsSince lists the detections detected at or after since,
	// of the given riskEventTypes (none = all), every page.
	RiskDetectionsSince(ctx context.Context, since time.Time, eventTypes []string) ([]events.RiskDetection, error)
	// DismissRisk dismisses the risk of up to MaxRiskUserIDs users.
	DismissRisk(ctx context.Context, userIDs []string) error
	// ConfirmCompromised marks up to MaxRiskUserIDs users compromised
	// (risk state confirmedCompromised, level high): the tenant's own
	// user-risk policies then apply to them.
	ConfirmCompromised(ctx context.Context, userIDs []string) error
}

// MaxRiskUserIDs is the most userIds one riskyUsers/dismiss or
// riskyUsers/confirmCompromised call takes (the limit Graph documents on
// the beta pages of both).
const MaxRiskUserIDs = 60

// IdentityProtectionPolicy is Identity Protection's tenant settings,
// which Graph serves only in beta (GET /beta/identityProtection/policy).
type IdentityProtectionPolicy struct {
	// UserRiskClearedOnPasswordReset is the setting "Allow on-premises
	// password change to reset user risk": with password hash sync, an AD
	// password change remediates the user's risk (riskDetail
	// userChangedPasswordOnPremises). Opt-in: off unless an admin set it.
	UserRiskClearedOnPasswordReset bool `json:"isUserRiskClearedOnPasswordReset"`
}

// RiskPolicyReader reads Identity Protection's tenant settings (application
// permission Policy.Read.IdentityProtection). *msgraph.Client implements it.
type RiskPolicyReader interface {
	IdentityProtectionPolicy(ctx context.Context) (IdentityProtectionPolicy, error)
}

// IsUnlicensed reports Graph's 403 on an Identity Protection call, which
// a tenant without Entra ID P2 gets, as does an app without the
// permission: the message tells them apart for a human, not for code.
func IsUnlicensed(err error) bool {
	var ge *Error
	return errors.As(err, &ge) && ge.Status == http.StatusForbidden
}
