package graph

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"
)

// Subscription is a Graph change notification subscription (POST /subscriptions).
// ClientState is a secret: never log it.
type Subscription struct {
	ID                       string
	Resource                 string // "/users"
	ChangeType               string // "updated,deleted"
	NotificationURL          string
	LifecycleNotificationURL string
	ClientState              string
	Expiration               time.Time
}

// DeltaUser is one item of a users delta page.
type DeltaUser struct {
	User
	// Removed is set for an item carrying @removed (soft or hard delete):
	// only ID is meaningful then.
	Removed bool
	// Absent names the selected properties the item left out. Graph leaves
	// out a property that was never set on the user, and may return only
	// the changed ones: absent means unknown or unchanged, never "cleared"
	// (a cleared property is present with null).
	Absent []string
}

// DeltaPage is one page of a delta query. Exactly one of NextLink (more
// pages follow in this round) and DeltaLink (the round is complete; follow
// it later for the next changes) is set.
type DeltaPage struct {
	Users     []DeltaUser
	NextLink  string
	DeltaLink string
}

// Tracker is what pwsync asks of Graph to learn about changes: the /users
// change notification subscription and the users delta query. It is kept
// apart from Client because only ingest's subscription manager and delta
// poller use it. Implementations return *Error for Graph's answers.
type Tracker interface {
	// CreateSubscription POSTs a subscription; Graph runs the validation
	// handshake against both URLs before answering.
	CreateSubscription(ctx context.Context, s Subscription) (Subscription, error)
	// RenewSubscription PATCHes expirationDateTime (which also reauthorizes).
	RenewSubscription(ctx context.Context, id string, exp time.Time) (Subscription, error)
	// ReauthorizeSubscription POSTs /subscriptions/{id}/reauthorize.
	ReauthorizeSubscription(ctx context.Context, id string) error
	// GetSubscription reads a subscription; a missing one is an *Error with
	// Status 404 (see IsNotFound).
	GetSubscription(ctx context.Context, id string) (Subscription, error)
	// DeleteSubscription deletes a subscription.
	DeleteSubscription(ctx context.Context, id string) error
	// UsersDelta fetches one page of the users delta query. link "" starts a
	// new round (a full sync) with $select of DeltaSelect; otherwise link is
	// a nextLink or deltaLink that Graph returned, followed as is;
	// DeltaLatest starts from now without enumerating the users.
	UsersDelta(ctx context.Context, link string) (DeltaPage, error)
}

// DeltaLatest, passed to UsersDelta as the link, asks for a deltaLink from
// now on without enumerating anybody ($deltatoken=latest): for a caller
// that reads the users some other way (a paged /users read) and follows
// delta from before that read, so that no change falls between the two.
const DeltaLatest = "latest"

// DeltaSelect are the user properties delta query tracks: the
// password-relevant ones. Changes to any other property do not surface.
var DeltaSelect = []string{
	"id", "userPrincipalName", "mail", "onPremisesImmutableId", "onPremisesSyncEnabled",
	"passwordPolicies", "lastPasswordChangeDateTime", "accountEnabled", "preferredLanguage",
}

// Error codes of an expired or otherwise unusable delta token.
const (
	CodeSyncStateNotFound = "syncStateNotFound"
	CodeResyncRequired    = "resyncRequired"
)

// IsSyncStateNotFound reports whether Graph refused a delta link because its
// state is gone (identity delta tokens last 7 days): the caller must start a
// full resync from an empty link.
func IsSyncStateNotFound(err error) bool {
	var ge *Error
	if !errors.As(err, &ge) {
		return false
	}
	return ge.Status == http.StatusGone ||
		strings.EqualFold(ge.Code, CodeSyncStateNotFound) || strings.EqualFold(ge.Code, CodeResyncRequired)
}
