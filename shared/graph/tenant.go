package graph

import "context"

// Domain is a tenant domain's password expiry settings (GET /domains).
type Domain struct {
	ID                 string `json:"id"`
	AuthenticationType string `json:"authenticationType"` // Managed | Federated
	IsDefault          bool   `json:"isDefault"`
	IsVerified         bool   `json:"isVerified"`
	// PasswordValidityPeriodInDays: cloud passwords expire after this many
	// days; NeverExpiresDays means never. Graph omits it (nil) when unset,
	// which means 90.
	PasswordValidityPeriodInDays     *int `json:"passwordValidityPeriodInDays"`
	PasswordNotificationWindowInDays *int `json:"passwordNotificationWindowInDays"`
}

// NeverExpiresDays is passwordValidityPeriodInDays for "never expires".
const NeverExpiresDays = 2147483647

// OnPremisesSync is the tenant's onPremisesDirectorySynchronization: the
// features that decide how Entra Connect treats synced users' passwords.
type OnPremisesSync struct {
	ID       string          `json:"id"`
	Features map[string]bool `json:"features"`
}

// Sync feature names pwsync's policy report reads.
const (
	FeatureCloudPasswordPolicyForSynced = "cloudPasswordPolicyForPasswordSyncedUsersEnabled"
	FeatureForceChangeOnLogon           = "userForcePasswordChangeOnLogonEnabled"
	FeaturePasswordSync                 = "passwordSyncEnabled"
	FeaturePasswordWriteback            = "passwordWritebackEnabled"
)

// TenantPolicy reads the tenant-wide password settings (policy report).
// *msgraph.Client implements it.
type TenantPolicy interface {
	Domains(ctx context.Context) ([]Domain, error)
	// OnPremisesSync returns the tenant's synchronization object; a tenant
	// without directory sync has none (nil, nil).
	OnPremisesSync(ctx context.Context) (*OnPremisesSync, error)
}
