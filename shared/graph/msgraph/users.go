package msgraph

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/microsoftgraph/msgraph-sdk-go/models"
	"github.com/microsoftgraph/msgraph-sdk-go/users"

	"github.com/pwsync/pwsync/shared/graph"
)

// userSelect is every property graph.User carries. passwordProfile,
// passwordPolicies and lastPasswordChangeDateTime come only on $select.
var userSelect = []string{
	"id", "userPrincipalName", "mail", "displayName",
	"onPremisesImmutableId", "onPremisesSyncEnabled", "accountEnabled",
	"passwordPolicies", "passwordProfile", "lastPasswordChangeDateTime",
	"preferredLanguage", "signInSessionsValidFromDateTime",
}

// Ops name requests by template, never by user: errors end up in logs.
const (
	opGetUser     = "GET /users/{id}"
	opFindUser    = "GET /users?$filter=onPremisesImmutableId"
	opPatchUser   = "PATCH /users/{id}"
	opRevoke      = "POST /users/{id}/revokeSignInSessions"
	opAddMember   = "POST /groups/{id}/members/$ref"
	opDelMember   = "DELETE /groups/{id}/members/{id}/$ref"
	opCheckMember = "POST /users/{id}/checkMemberGroups"
)

// GetUser implements graph.Client.
func (c *Client) GetUser(ctx context.Context, idOrUPN string) (*graph.User, error) {
	if idOrUPN == "" {
		return nil, &graph.Error{Op: opGetUser, Status: http.StatusBadRequest, Message: "empty user id"}
	}
	u, err := c.sdk.Users().ByUserId(idOrUPN).Get(ctx, &users.UserItemRequestBuilderGetRequestConfiguration{
		QueryParameters: &users.UserItemRequestBuilderGetQueryParameters{Select: userSelect},
	})
	if err != nil {
		return nil, mapError(opGetUser, err)
	}
	if u == nil {
		return nil, &graph.Error{Op: opGetUser, Status: http.StatusNotFound, Message: "empty response"}
	}
	return toUser(u), nil
}

// FindByImmutableID implements graph.Client.
func (c *Client) FindByImmutableID(ctx context.Context, immutableID string) (*graph.User, error) {
	if immutableID == "" {
		return nil, nil
	}
	// OData string literal: a quote is escaped by doubling it.
	filter := "onPremisesImmutableId eq '" + strings.ReplaceAll(immutableID, "'", "''") + "'"
	res, err := c.sdk.Users().Get(ctx, &users.UsersRequestBuilderGetRequestConfiguration{
		QueryParameters: &users.UsersRequestBuilderGetQueryParameters{Filter: &filter, Select: userSelect},
	})
	if err != nil {
		return nil, mapError(opFindUser, err)
	}
	if res == nil {
		return nil, nil
	}
	switch found := res.GetValue(); len(found) {
	case 0:
		return nil, nil
	case 1:
		return toUser(found[0]), nil
	default:
		// Entra keeps the anchor unique; two hits mean something is badly
		// wrong, and acting on either user could hit the wrong person.
		return nil, fmt.Errorf("graph %s: %d users share one immutable ID", opFindUser, len(found))
	}
}

// SetForceChange implements graph.Client. No password is sent: only the flags.
func (c *Client) SetForceChange(ctx context.Context, id string, force, withMFA bool) error {
	pp := models.NewPasswordProfile()
	pp.SetForceChangePasswordNextSignIn(&force)
	pp.SetForceChangePasswordNextSignInWithMfa(&withMFA)
	u := models.NewUser()
	u.SetPasswordProfile(pp)
	return c.patchUser(ctx, id, u)
}

// SetPassword implements graph.Client. The flag is always sent explicitly:
// Graph defaults an omitted forceChangePasswordNextSignIn to true.
func (c *Client) SetPassword(ctx context.Context, id, password string, forceChange bool) error {
	if password == "" {
		return &graph.Error{Op: opPatchUser, Status: http.StatusBadRequest, Message: "empty password"}
	}
	pp := models.NewPasswordProfile()
	pp.SetPassword(&password)
	pp.SetForceChangePasswordNextSignIn(&forceChange)
	u := models.NewUser()
	u.SetPasswordProfile(pp)
	return c.patchUser(ctx, id, u)
}

// SetPasswordPolicies implements graph.Client.
func (c *Client) SetPasswordPolicies(ctx context.Context, id, policies string) error {
	u := models.NewUser()
	u.SetPasswordPolicies(&policies)
	return c.patchUser(ctx, id, u)
}

func (c *Client) patchUser(ctx context.Context, id string, u models.Userable) error {
	if id == "" {
		return &graph.Error{Op: opPatchUser, Status: http.StatusBadRequest, Message: "empty user id"}
	}
	_, err := c.sdk.Users().ByUserId(id).Patch(ctx, u, nil)
	return mapError(opPatchUser, err)
}

// RevokeSessions implements graph.Client.
func (c *Client) RevokeSessions(ctx context.Context, id string) error {
	if id == "" {
		return &graph.Error{Op: opRevoke, Status: http.StatusBadRequest, Message: "empty user id"}
	}
	_, err := c.sdk.Users().ByUserId(id).RevokeSignInSessions().PostAsRevokeSignInSessionsPostResponse(ctx, nil)
	return mapError(opRevoke, err)
}

// AddGroupMember implements graph.Client.
func (c *Client) AddGroupMember(ctx context.Context, groupID, userID string) error {
	if groupID == "" || userID == "" {
		return &graph.Error{Op: opAddMember, Status: http.StatusBadRequest, Message: "empty group or user id"}
	}
	ref := models.NewReferenceCreate()
	odataID := c.baseURL + "/directoryObjects/" + userID
	ref.SetOdataId(&odataID)
	err := mapError(opAddMember, c.sdk.Groups().ByGroupId(groupID).Members().Ref().Post(ctx, ref, nil))
	if alreadyMember(err) {
		return nil
	}
	return err
}

var _ graph.MemberChecker = (*Client)(nil)

// IsGroupMember implements graph.MemberChecker with POST
// /users/{id}/checkMemberGroups (transitive; User.Read.All and
// GroupMember.Read.All).
func (c *Client) IsGroupMember(ctx context.Context, groupID, userID string) (bool, error) {
	if groupID == "" || userID == "" {
		return false, &graph.Error{Op: opCheckMember, Status: http.StatusBadRequest, Message: "empty group or user id"}
	}
	body := users.NewItemCheckMemberGroupsPostRequestBody()
	body.SetGroupIds([]string{groupID})
	res, err := c.sdk.Users().ByUserId(userID).CheckMemberGroups().PostAsCheckMemberGroupsPostResponse(ctx, body, nil)
	if err != nil {
		return false, mapError(opCheckMember, err)
	}
	if res == nil {
		return false, nil
	}
	for _, id := range res.GetValue() {
		if strings.EqualFold(id, groupID) {
			return true, nil
		}
	}
	return false, nil
}

// alreadyMember: Graph's answer to adding an existing member.
func alreadyMember(err error) bool { return graph.IsAlreadyMember(err) }

// RemoveGroupMember implements graph.Client.
func (c *Client) RemoveGroupMember(ctx context.Context, groupID, userID string) error {
	if groupID == "" || userID == "" {
		return &graph.Error{Op: opDelMember, Status: http.StatusBadRequest, Message: "empty group or user id"}
	}
	err := c.sdk.Groups().ByGroupId(groupID).Members().ByDirectoryObjectId(userID).Ref().Delete(ctx, nil)
	// 404: not a member (already removed). A missing group also answers 404;
	// for an idempotent "make sure not a member" that is success too.
	if err = mapError(opDelMember, err); graph.IsNotFound(err) {
		return nil
	}
	return err
}

func toUser(u models.Userable) *graph.User {
	out := &graph.User{
		ID:                deref(u.GetId()),
		UPN:               deref(u.GetUserPrincipalName()),
		Mail:              deref(u.GetMail()),
		DisplayName:       deref(u.GetDisplayName()),
		ImmutableID:       deref(u.GetOnPremisesImmutableId()),
		SyncEnabled:       deref(u.GetOnPremisesSyncEnabled()),
		AccountEnabled:    deref(u.GetAccountEnabled()),
		PasswordPolicies:  deref(u.GetPasswordPolicies()),
		PreferredLanguage: deref(u.GetPreferredLanguage()),
	}
	if t := u.GetLastPasswordChangeDateTime(); t != nil {
		out.LastPasswordChange = t.UTC()
	}
	if t := u.GetSignInSessionsValidFromDateTime(); t != nil {
		out.SessionsValidFrom = t.UTC()
	}
	if pp := u.GetPasswordProfile(); pp != nil {
		out.ForceChangeNextSignIn = deref(pp.GetForceChangePasswordNextSignIn())
		out.ForceChangeWithMFA = deref(pp.GetForceChangePasswordNextSignInWithMfa())
	}
	return out
}
