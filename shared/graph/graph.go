// Package graph is pwsync's small view of Microsoft Graph: the types and the
// Client interface the services use. It does not import msgraph-sdk-go; the
// implementation over the SDK lives in shared/graph/msgraph, the only package
// that links it, so that most test binaries stay small and fast to build.
package graph

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// User is the password-relevant state of one Entra user.
type User struct {
	ID                    string    `json:"id"`
	UPN                   string    `json:"user_principal_name"`
	Mail                  string    `json:"mail,omitempty"`
	DisplayName           string    `json:"display_name,omitempty"`
	ImmutableID           string    `json:"on_premises_immutable_id,omitempty"`
	SyncEnabled           bool      `json:"on_premises_sync_enabled"`
	AccountEnabled        bool      `json:"account_enabled"`
	PasswordPolicies      string    `json:"password_policies,omitempty"`
	ForceChangeNextSignIn bool      `json:"force_change_password_next_sign_in"`
	ForceChangeWithMFA    bool      `json:"force_change_password_next_sign_in_with_mfa"`
	LastPasswordChange    time.Time `json:"last_password_change,omitempty"`
	// SessionsValidFrom is signInSessionsValidFromDateTime: when sessions were
	// last revoked. It tells a revoke whose answer was lost from one never made.
	SessionsValidFrom time.Time `json:"sessions_valid_from,omitzero"`
	PreferredLanguage string    `json:"preferred_language,omitempty"`
}

// Client is what pwsync asks of Graph. Implementations return *Error for
// answers from Graph, so that callers can decide on retries from Status.
type Client interface {
	// GetUser reads a user by object ID or userPrincipalName, with
	// passwordProfile and the other password-relevant properties.
	// A missing user is an *Error with Status 404 (see IsNotFound).
	GetUser(ctx context.Context, idOrUPN string) (*User, error)
	// FindByImmutableID looks a user up by onPremisesImmutableId; nil, nil when none.
	FindByImmutableID(ctx context.Context, immutableID string) (*User, error)
	// SetForceChange PATCHes passwordProfile.forceChangePasswordNextSignIn (and
	// ...WithMfa) without a new password.
	SetForceChange(ctx context.Context, id string, force, withMFA bool) error
	// SetPassword PATCHes passwordProfile with a new password and the flag.
	SetPassword(ctx context.Context, id, password string, forceChange bool) error
	// RevokeSessions POSTs revokeSignInSessions.
	RevokeSessions(ctx context.Context, id string) error
	// AddGroupMember adds the user to the group; already a member is success.
	AddGroupMember(ctx context.Context, groupID, userID string) error
	// RemoveGroupMember removes the user from the group; not a member is success.
	RemoveGroupMember(ctx context.Context, groupID, userID string) error
	// SetPasswordPolicies PATCHes passwordPolicies.
	SetPasswordPolicies(ctx context.Context, id, policies string) error
}

// Error is an answer from Graph that is not a success.
type Error struct {
	Op         string        // what pwsync was doing, e.g. "PATCH /users/{id}"
	Status     int           // HTTP status; 0 for transport errors
	Code       string        // Graph's error.code
	Message    string        // Graph's error.message
	RetryAfter time.Duration // from Retry-After, if any
	Err        error         // transport error, if any
}

func (e *Error) Error() string {
	switch {
	case e.Status == 0 && e.Err != nil:
		return fmt.Sprintf("graph %s: %v", e.Op, e.Err)
	case e.Code != "":
		return fmt.Sprintf("graph %s: %d %s: %s", e.Op, e.Status, e.Code, e.Message)
	default:
		return fmt.Sprintf("graph %s: status %d", e.Op, e.Status)
	}
}

func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether the same request may succeed later: throttling,
// server errors, timeouts and transport failures.
func (e *Error) Retryable() bool {
	switch {
	case e.Status == 0:
		return true
	case e.Status == http.StatusTooManyRequests, e.Status == http.StatusRequestTimeout:
		return true
	case e.Status >= 500:
		return true
	}
	return false
}

// StatusOf returns the HTTP status carried by err, or 0.
func StatusOf(err error) int {
	var ge *Error
	if errors.As(err, &ge) {
		return ge.Status
	}
	return 0
}

// IsNotFound reports whether err is Graph's 404.
func IsNotFound(err error) bool { return StatusOf(err) == http.StatusNotFound }

// Error codes worth branching on (never branch on the message).
const (
	CodeBadRequest       = "Request_BadRequest" // e.g. on-premises mastered objects
	CodeResourceNotFound = "Request_ResourceNotFound"
	CodeAuthDenied       = "Authorization_RequestDenied"
)

// IsOnPremMastered reports whether Graph refused a write because the user is
// synced from AD: 400 Request_BadRequest "Unable to update the specified
// properties for on-premises mastered Directory Sync objects or objects
// currently undergoing migration." Request_BadRequest is Graph's code for
// any malformed or refused write, so — as for IsAlreadyMember — the message
// is the only signal that tells this case from the others; a caller should
// also check the user's onPremisesSyncEnabled.
func IsOnPremMastered(err error) bool {
	var ge *Error
	return errors.As(err, &ge) && ge.Status == http.StatusBadRequest && ge.Code == CodeBadRequest &&
		strings.Contains(strings.ToLower(ge.Message), "on-premises mastered")
}
