package graph

import "time"

// UserJSON is a user as Graph serialises it with $select: the shape of list
// pages and of $batch GET bodies, decoded without the SDK.
type UserJSON struct {
	ID                string     `json:"id"`
	UPN               string     `json:"userPrincipalName"`
	Mail              *string    `json:"mail"`
	DisplayName       *string    `json:"displayName"`
	ImmutableID       *string    `json:"onPremisesImmutableId"`
	SyncEnabled       *bool      `json:"onPremisesSyncEnabled"`
	AccountEnabled    *bool      `json:"accountEnabled"`
	PasswordPolicies  *string    `json:"passwordPolicies"`
	PreferredLanguage *string    `json:"preferredLanguage"`
	LastPasswordSet   *time.Time `json:"lastPasswordChangeDateTime"`
	SessionsValidFrom *time.Time `json:"signInSessionsValidFromDateTime"`
	PasswordProfile   *struct {
		Force        *bool `json:"forceChangePasswordNextSignIn"`
		ForceWithMFA *bool `json:"forceChangePasswordNextSignInWithMfa"`
	} `json:"passwordProfile"`
}

// UserSelect is the $select that fills every field of UserJSON.
const UserSelect = "id,userPrincipalName,mail,displayName,onPremisesImmutableId,onPremisesSyncEnabled," +
	"accountEnabled,passwordPolicies,preferredLanguage,lastPasswordChangeDateTime,signInSessionsValidFromDateTime,passwordProfile"

// User converts to User; nulls become zero values.
func (u UserJSON) User() User {
	s := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	b := func(p *bool) bool { return p != nil && *p }
	out := User{ID: u.ID, UPN: u.UPN, Mail: s(u.Mail), DisplayName: s(u.DisplayName),
		ImmutableID: s(u.ImmutableID), SyncEnabled: b(u.SyncEnabled), AccountEnabled: b(u.AccountEnabled),
		PasswordPolicies: s(u.PasswordPolicies), PreferredLanguage: s(u.PreferredLanguage)}
	if u.LastPasswordSet != nil {
		out.LastPasswordChange = u.LastPasswordSet.UTC()
	}
	if u.SessionsValidFrom != nil {
		out.SessionsValidFrom = u.SessionsValidFrom.UTC()
	}
	if pp := u.PasswordProfile; pp != nil {
		out.ForceChangeNextSignIn, out.ForceChangeWithMFA = b(pp.Force), b(pp.ForceWithMFA)
	}
	return out
}
