package msgraph

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	abs "github.com/microsoft/kiota-abstractions-go"
	"github.com/microsoftgraph/msgraph-sdk-go/models"
	"github.com/microsoftgraph/msgraph-sdk-go/models/odataerrors"

	"github.com/pwsync/pwsync/shared/graph"
)

var _ graph.Tracker = (*Client)(nil)

// Ops of the change-tracking calls, by template (they end up in logs).
const (
	opCreateSub = "POST /subscriptions"
	opRenewSub  = "PATCH /subscriptions/{id}"
	opReauthSub = "POST /subscriptions/{id}/reauthorize"
	opGetSub    = "GET /subscriptions/{id}"
	opDeleteSub = "DELETE /subscriptions/{id}"
	opDelta     = "GET /users/delta"
)

// CreateSubscription implements graph.Tracker.
func (c *Client) CreateSubscription(ctx context.Context, s graph.Subscription) (graph.Subscription, error) {
	body := models.NewSubscription()
	body.SetResource(&s.Resource)
	body.SetChangeType(&s.ChangeType)
	body.SetNotificationUrl(&s.NotificationURL)
	if s.LifecycleNotificationURL != "" {
		body.SetLifecycleNotificationUrl(&s.LifecycleNotificationURL)
	}
	if s.ClientState != "" {
		body.SetClientState(&s.ClientState)
	}
	exp := s.Expiration.UTC()
	body.SetExpirationDateTime(&exp)
	res, err := c.sdk.Subscriptions().Post(ctx, body, nil)
	if err != nil {
		return graph.Subscription{}, mapError(opCreateSub, err)
	}
	out, err := toSubscription(opCreateSub, res)
	if err == nil && out.ClientState == "" {
		out.ClientState = s.ClientState // Graph may not echo it back
	}
	return out, err
}

// RenewSubscription implements graph.Tracker.
func (c *Client) RenewSubscription(ctx context.Context, id string, exp time.Time) (graph.Subscription, error) {
	if id == "" {
		return graph.Subscription{}, emptyID(opRenewSub)
	}
	body := models.NewSubscription()
	exp = exp.UTC()
	body.SetExpirationDateTime(&exp)
	res, err := c.sdk.Subscriptions().BySubscriptionId(id).Patch(ctx, body, nil)
	if err != nil {
		return graph.Subscription{}, mapError(opRenewSub, err)
	}
	return toSubscription(opRenewSub, res)
}

// ReauthorizeSubscription implements graph.Tracker.
func (c *Client) ReauthorizeSubscription(ctx context.Context, id string) error {
	if id == "" {
		return emptyID(opReauthSub)
	}
	return mapError(opReauthSub, c.sdk.Subscriptions().BySubscriptionId(id).Reauthorize().Post(ctx, nil))
}

// GetSubscription implements graph.Tracker.
func (c *Client) GetSubscription(ctx context.Context, id string) (graph.Subscription, error) {
	if id == "" {
		return graph.Subscription{}, emptyID(opGetSub)
	}
	res, err := c.sdk.Subscriptions().BySubscriptionId(id).Get(ctx, nil)
	if err != nil {
		return graph.Subscription{}, mapError(opGetSub, err)
	}
	return toSubscription(opGetSub, res)
}

// DeleteSubscription implements graph.Tracker.
func (c *Client) DeleteSubscription(ctx context.Context, id string) error {
	if id == "" {
		return emptyID(opDeleteSub)
	}
	return mapError(opDeleteSub, c.sdk.Subscriptions().BySubscriptionId(id).Delete(ctx, nil))
}

func emptyID(op string) error {
	return &graph.Error{Op: op, Status: http.StatusBadRequest, Message: "empty subscription id"}
}

func toSubscription(op string, s models.Subscriptionable) (graph.Subscription, error) {
	if s == nil || s.GetId() == nil {
		return graph.Subscription{}, &graph.Error{Op: op, Status: http.StatusOK, Message: "no subscription in the response"}
	}
	out := graph.Subscription{
		ID:                       deref(s.GetId()),
		Resource:                 deref(s.GetResource()),
		ChangeType:               deref(s.GetChangeType()),
		NotificationURL:          deref(s.GetNotificationUrl()),
		LifecycleNotificationURL: deref(s.GetLifecycleNotificationUrl()),
		ClientState:              deref(s.GetClientState()),
	}
	if t := s.GetExpirationDateTime(); t != nil {
		out.Expiration = t.UTC()
	}
	return out, nil
}

// UsersDelta implements graph.Tracker.
//
// The page is fetched as raw JSON through the SDK's adapter (auth, CA,
// middleware), as Batch does, rather than with the generated delta request
// builder: the builder's model cannot tell an absent property (not returned
// because unchanged) from a null one, and leaves @removed in an untyped
// additional-data bag. Both matter here.
func (c *Client) UsersDelta(ctx context.Context, link string) (graph.DeltaPage, error) {
	switch link {
	case "":
		link = c.baseURL + "/users/delta?$select=" + strings.Join(graph.DeltaSelect, ",")
	case graph.DeltaLatest:
		link = c.baseURL + "/users/delta?$select=" + strings.Join(graph.DeltaSelect, ",") + "&$deltatoken=latest"
	}
	u, err := c.checkLink(link)
	if err != nil {
		return graph.DeltaPage{}, err
	}
	ri := abs.NewRequestInformation()
	ri.Method = abs.GET
	ri.SetUri(*u)
	ri.Headers.Add("Accept", "application/json")
	raw, err := c.adapter.SendPrimitive(ctx, ri, "[]byte", abs.ErrorMappings{
		"XXX": odataerrors.CreateODataErrorFromDiscriminatorValue,
	})
	if err != nil {
		return graph.DeltaPage{}, mapError(opDelta, err)
	}
	body, _ := raw.([]byte)
	return decodeDeltaPage(body)
}

// checkLink accepts only links below the configured Graph base URL: a link
// is followed with the app's token, and one read back from storage must not
// be able to point elsewhere.
func (c *Client) checkLink(link string) (*url.URL, error) {
	u, err := url.Parse(link)
	if err != nil || !strings.HasPrefix(link, c.baseURL+"/") {
		return nil, &graph.Error{Op: opDelta, Status: http.StatusBadRequest,
			Message: fmt.Sprintf("delta link is not below the Graph base URL %s", c.baseURL)}
	}
	return u, nil
}

type deltaPageJSON struct {
	Value     []map[string]json.RawMessage `json:"value"`
	NextLink  string                       `json:"@odata.nextLink"`
	DeltaLink string                       `json:"@odata.deltaLink"`
}

func decodeDeltaPage(body []byte) (graph.DeltaPage, error) {
	bad := func(why string) (graph.DeltaPage, error) {
		return graph.DeltaPage{}, &graph.Error{Op: opDelta, Status: http.StatusOK, Message: "undecodable delta page: " + why}
	}
	var p deltaPageJSON
	if err := json.Unmarshal(body, &p); err != nil {
		return bad(err.Error())
	}
	if (p.NextLink == "") == (p.DeltaLink == "") {
		return bad("want exactly one of @odata.nextLink and @odata.deltaLink")
	}
	out := graph.DeltaPage{Users: make([]graph.DeltaUser, 0, len(p.Value)), NextLink: p.NextLink, DeltaLink: p.DeltaLink}
	for i, item := range p.Value {
		du, err := decodeDeltaUser(item)
		if err != nil {
			return bad(fmt.Sprintf("item %d: %v", i, err))
		}
		out.Users = append(out.Users, du)
	}
	return out, nil
}

// decodeDeltaUser reads one delta item. A property that is present with
// null is a value (cleared); one that is absent is named in Absent.
func decodeDeltaUser(item map[string]json.RawMessage) (graph.DeltaUser, error) {
	var du graph.DeltaUser
	if err := field(item, "id", &du.ID); err != nil || du.ID == "" {
		return du, fmt.Errorf("no id (%v)", err)
	}
	if _, ok := item["@removed"]; ok {
		du.Removed = true
		return du, nil // a removed item carries only its id
	}
	var lastChange *time.Time
	fields := map[string]any{
		"userPrincipalName":          &du.UPN,
		"mail":                       &du.Mail,
		"onPremisesImmutableId":      &du.ImmutableID,
		"onPremisesSyncEnabled":      &du.SyncEnabled,
		"passwordPolicies":           &du.PasswordPolicies,
		"lastPasswordChangeDateTime": &lastChange,
		"accountEnabled":             &du.AccountEnabled,
		"preferredLanguage":          &du.PreferredLanguage,
	}
	for _, name := range graph.DeltaSelect {
		dst, tracked := fields[name]
		if !tracked {
			continue // id
		}
		if _, ok := item[name]; !ok {
			du.Absent = append(du.Absent, name)
			continue
		}
		if err := field(item, name, dst); err != nil {
			return du, err
		}
	}
	if lastChange != nil {
		du.LastPasswordChange = lastChange.UTC()
	}
	return du, nil
}

// field decodes item[name] into dst; null leaves dst at its zero value.
func field(item map[string]json.RawMessage, name string, dst any) error {
	raw, ok := item[name]
	if !ok || string(raw) == "null" {
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
