package graphsim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Change notification subscriptions on users: create (with Graph's
// validation handshake on notificationUrl and lifecycleNotificationUrl),
// get, list, renew (PATCH), reauthorize, delete. Notifications are
// delivered by the notifier (notify.go) after every change to a user.

const (
	maxSubscriptionMinutes = 41760 // users, groups and other directory resources
	maxClientState         = 128
	maxUserSubscriptions   = 100 // per app and tenant
	validationTimeout      = 10 * time.Second
	graphTimeLayout        = "2006-01-02T15:04:05.0000000Z"
	codeSubNotFound        = "ResourceNotFound"
	codeValidation         = "ValidationError"
	codeExtension          = "ExtensionError"
)

type subscription struct {
	ID, Resource, ChangeType, NotificationURL, LifecycleURL, ClientState string
	AppID, CreatorID, TLSVersion, NotificationAppID                      string
	Expiration                                                           time.Time
	userID                                                               string // "" for all users
	changeTypes                                                          []string
	reauthorized                                                         time.Time
}

func (sub *subscription) json() map[string]any {
	return map[string]any{
		"id":                        sub.ID,
		"resource":                  sub.Resource,
		"applicationId":             sub.AppID,
		"changeType":                sub.ChangeType,
		"clientState":               nullableString(sub.ClientState),
		"notificationUrl":           sub.NotificationURL,
		"lifecycleNotificationUrl":  nullableString(sub.LifecycleURL),
		"expirationDateTime":        sub.Expiration.UTC().Format(graphTimeLayout),
		"creatorId":                 sub.CreatorID,
		"latestSupportedTlsVersion": sub.TLSVersion,
		"includeResourceData":       false,
		"encryptionCertificate":     nil,
		"encryptionCertificateId":   nil,
		"notificationQueryOptions":  nil,
		"notificationUrlAppId":      nullableString(sub.NotificationAppID),
		"notificationContentType":   "application/json",
	}
}

// matches reports whether a change to userID concerns the subscription.
func (sub *subscription) matches(userID string) bool {
	return sub.userID == "" || strings.EqualFold(sub.userID, userID)
}

// subscriptionRequest is the body of POST /subscriptions.
type subscriptionRequest struct {
	ChangeType               *string `json:"changeType"`
	NotificationURL          *string `json:"notificationUrl"`
	LifecycleNotificationURL *string `json:"lifecycleNotificationUrl"`
	Resource                 *string `json:"resource"`
	ExpirationDateTime       *string `json:"expirationDateTime"`
	ClientState              *string `json:"clientState"`
	LatestSupportedTLS       *string `json:"latestSupportedTlsVersion"`
	IncludeResourceData      *bool   `json:"includeResourceData"`
	EncryptionCertificate    *string `json:"encryptionCertificate"`
	EncryptionCertificateID  *string `json:"encryptionCertificateId"`
	NotificationURLAppID     *string `json:"notificationUrlAppId"`
	NotificationQueryOptions *string `json:"notificationQueryOptions"`
	NotificationContentType  *string `json:"notificationContentType"`
	ODataType                *string `json:"@odata.type"`
}

func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("data after the JSON object")
	}
	return nil
}

func subError(status int, code, msg string) reply { return errorReply(status, code, msg) }

// POST /subscriptions
func (s *Server) createSubscription(c *call) reply {
	var req subscriptionRequest
	if err := decodeStrict(c.body, &req); err != nil {
		return subError(http.StatusBadRequest, codeExtension, fmt.Sprintf("Invalid request: %v.", err))
	}
	for name, v := range map[string]*string{"changeType": req.ChangeType, "notificationUrl": req.NotificationURL,
		"resource": req.Resource, "expirationDateTime": req.ExpirationDateTime} {
		if v == nil || *v == "" {
			return subError(http.StatusBadRequest, codeExtension, fmt.Sprintf("The property '%s' is required.", name))
		}
	}
	userID, ok := subscriptionResource(*req.Resource)
	if !ok {
		return subError(http.StatusBadRequest, codeExtension, fmt.Sprintf("Resource '%s' is not supported by this simulator: subscribe to 'users' or 'users/{id}'.", *req.Resource))
	}
	types, rep := userChangeTypes(*req.ChangeType)
	if rep != nil {
		return *rep
	}
	if req.IncludeResourceData != nil && *req.IncludeResourceData {
		return subError(http.StatusBadRequest, codeExtension, "Rich notifications (includeResourceData) are not supported for resource 'users'.")
	}
	if req.ClientState != nil && len(*req.ClientState) > maxClientState {
		return subError(http.StatusBadRequest, codeExtension, fmt.Sprintf("clientState must be at most %d characters.", maxClientState))
	}
	exp, rep := s.checkExpiration(*req.ExpirationDateTime)
	if rep != nil {
		return *rep
	}
	lifecycle := ""
	if req.LifecycleNotificationURL != nil {
		lifecycle = *req.LifecycleNotificationURL
	}
	for _, u := range []string{*req.NotificationURL, lifecycle} {
		if u == "" {
			continue
		}
		if rep := s.checkNotificationURL(u); rep != nil {
			return *rep
		}
	}

	sub := &subscription{
		ID: newGUID(), Resource: *req.Resource, ChangeType: *req.ChangeType, NotificationURL: *req.NotificationURL,
		LifecycleURL: lifecycle, ClientState: deref(req.ClientState), AppID: c.claims.AppID, CreatorID: c.claims.Oid,
		TLSVersion: "v1_2", NotificationAppID: deref(req.NotificationURLAppID), Expiration: exp, userID: userID, changeTypes: types,
	}
	if req.LatestSupportedTLS != nil {
		sub.TLSVersion = *req.LatestSupportedTLS
	}
	s.mu.Lock()
	s.expireSubscriptions(time.Now())
	n := 0
	for _, other := range s.subs {
		if other.AppID != sub.AppID {
			continue
		}
		n++
		if slices.Equal(other.changeTypes, types) && strings.EqualFold(strings.Trim(other.Resource, "/"), strings.Trim(sub.Resource, "/")) {
			s.mu.Unlock()
			return subError(http.StatusConflict, codeExtension, fmt.Sprintf("Subscription Id %s already exists for the requested combination.", other.ID))
		}
	}
	s.mu.Unlock()
	if n >= maxUserSubscriptions {
		return subError(http.StatusForbidden, codeExtension, fmt.Sprintf("Subscription quota exceeded: at most %d subscriptions on users per app and tenant.", maxUserSubscriptions))
	}

	// The handshake runs without the lock: the endpoint may call back.
	if rep := s.validateEndpoint(c.done, sub.NotificationURL); rep != nil {
		return *rep
	}
	if sub.LifecycleURL != "" {
		if rep := s.validateEndpoint(c.done, sub.LifecycleURL); rep != nil {
			return *rep
		}
	}
	s.mu.Lock()
	s.subs[sub.ID] = sub
	body := sub.json()
	s.mu.Unlock()
	body["@odata.context"] = graphContext + "#subscriptions/$entity"
	return jsonReply(http.StatusCreated, body)
}

// subscriptionResource accepts "users", "/users" and "users/{id}".
func subscriptionResource(res string) (userID string, ok bool) {
	parts := splitPath(res)
	switch {
	case len(parts) == 1 && strings.EqualFold(parts[0], "users"):
		return "", true
	case len(parts) == 2 && strings.EqualFold(parts[0], "users") && parts[1] != "":
		return parts[1], true
	}
	return "", false
}

// userChangeTypes checks a changeType list: users support only updated and
// deleted ("updated" also fires on creation and soft deletion).
func userChangeTypes(raw string) ([]string, *reply) {
	var types []string
	for _, t := range strings.Split(raw, ",") {
		t = strings.TrimSpace(t)
		switch t {
		case "updated", "deleted":
			types = append(types, t)
		default:
			r := subError(http.StatusBadRequest, codeExtension, fmt.Sprintf("The changeType '%s' is not supported for resource 'users'; use 'updated' and/or 'deleted'.", t))
			return nil, &r
		}
	}
	slices.Sort(types)
	return slices.Compact(types), nil
}

func (s *Server) checkExpiration(raw string) (time.Time, *reply) {
	exp, err := time.Parse(time.RFC3339Nano, raw)
	if err != nil {
		r := subError(http.StatusBadRequest, codeExtension, fmt.Sprintf("Invalid expirationDateTime '%s'.", raw))
		return time.Time{}, &r
	}
	now := time.Now()
	switch {
	case !exp.After(now):
		r := subError(http.StatusBadRequest, codeExtension, "Subscription expiration must be in the future.")
		return time.Time{}, &r
	case exp.After(now.Add(maxSubscriptionMinutes * time.Minute)):
		r := subError(http.StatusBadRequest, codeExtension, fmt.Sprintf("Subscription expiration can only be %d minutes in the future.", maxSubscriptionMinutes))
		return time.Time{}, &r
	}
	return exp, nil
}

func (s *Server) checkNotificationURL(raw string) *reply {
	u, err := url.Parse(raw)
	bad := err != nil || u.Host == ""
	if !bad && u.Scheme != "https" && !(u.Scheme == "http" && s.opts.AllowHTTPNotificationURL) {
		bad = true
	}
	if bad {
		r := subError(http.StatusBadRequest, codeValidation, fmt.Sprintf("Subscription validation request failed. Notification URL '%s' must be an absolute https URL.", raw))
		return &r
	}
	return nil
}

// validateEndpoint runs Graph's handshake: POST {url}?validationToken=...
// must answer 200, text/plain, with the URL-decoded token, within 10 s.
// The token has spaces and colons, as Graph's do, so that an endpoint
// echoing it still URL-encoded fails here as it would against Graph.
func (s *Server) validateEndpoint(done <-chan struct{}, endpoint string) *reply {
	token := "Validation: Testing client application reachability for subscription Request-Id: " + newGUID()
	fail := func(why string) *reply {
		r := subError(http.StatusBadRequest, codeValidation,
			fmt.Sprintf("Subscription validation request failed. Notification endpoint must respond with 200 OK and the validation token as text/plain: %s.", why))
		return &r
	}
	ctx, cancel := context.WithTimeout(context.Background(), validationTimeout)
	defer cancel()
	go func() {
		select {
		case <-done: // the caller gave up: so does the handshake
			cancel()
		case <-ctx.Done():
		}
	}()
	sep := "?"
	if strings.Contains(endpoint, "?") {
		sep = "&"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint+sep+"validationToken="+url.QueryEscape(token), nil)
	if err != nil {
		return fail(err.Error())
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	resp, err := s.notifier.client.Do(req)
	if err != nil {
		return fail(err.Error())
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case err != nil:
		return fail(fmt.Sprintf("reading the answer: %v", err))
	case resp.StatusCode != http.StatusOK:
		return fail(fmt.Sprintf("status %d", resp.StatusCode))
	case !strings.HasPrefix(strings.ToLower(resp.Header.Get("Content-Type")), "text/plain"):
		return fail(fmt.Sprintf("Content-Type %q", resp.Header.Get("Content-Type")))
	case string(body) != token:
		return fail(fmt.Sprintf("body %q is not the token", body))
	}
	return nil
}

// expireSubscriptions drops subscriptions past their expiry, as Graph
// deletes them. The caller holds the lock.
func (s *Server) expireSubscriptions(now time.Time) {
	for id, sub := range s.subs {
		if now.After(sub.Expiration) {
			delete(s.subs, id)
		}
	}
}

// subscriptionFor finds a subscription of the caller's app.
func (s *Server) subscriptionFor(c *call) (*subscription, *reply) {
	s.expireSubscriptions(time.Now())
	sub, ok := s.subs[strings.ToLower(c.vars[0])]
	if !ok || sub.AppID != c.claims.AppID {
		r := subError(http.StatusNotFound, codeSubNotFound, fmt.Sprintf("The object '%s' was not found.", c.vars[0]))
		return nil, &r
	}
	return sub, nil
}

// GET /subscriptions
func (s *Server) listSubscriptions(c *call) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireSubscriptions(time.Now())
	value := []map[string]any{}
	for _, sub := range s.subs {
		if sub.AppID == c.claims.AppID {
			value = append(value, sub.json())
		}
	}
	slices.SortFunc(value, func(a, b map[string]any) int { return strings.Compare(a["id"].(string), b["id"].(string)) })
	return jsonReply(http.StatusOK, map[string]any{"@odata.context": graphContext + "#subscriptions", "value": value})
}

// GET /subscriptions/{id}
func (s *Server) getSubscription(c *call) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, rep := s.subscriptionFor(c)
	if rep != nil {
		return *rep
	}
	body := sub.json()
	body["@odata.context"] = graphContext + "#subscriptions/$entity"
	return jsonReply(http.StatusOK, body)
}

// PATCH /subscriptions/{id}: renew (expirationDateTime) or move
// (notificationUrl, validated again). lifecycleNotificationUrl cannot be
// added or changed this way: delete and recreate.
func (s *Server) patchSubscription(c *call) reply {
	var req struct {
		ExpirationDateTime *string `json:"expirationDateTime"`
		NotificationURL    *string `json:"notificationUrl"`
		ODataType          *string `json:"@odata.type"`
	}
	if err := decodeStrict(c.body, &req); err != nil {
		return subError(http.StatusBadRequest, codeExtension, fmt.Sprintf("Only expirationDateTime and notificationUrl can be updated: %v.", err))
	}
	var exp time.Time
	if req.ExpirationDateTime != nil {
		var rep *reply
		if exp, rep = s.checkExpiration(*req.ExpirationDateTime); rep != nil {
			return *rep
		}
	}
	s.mu.Lock()
	_, rep := s.subscriptionFor(c)
	s.mu.Unlock()
	if rep != nil {
		return *rep
	}
	if req.NotificationURL != nil {
		if rep := s.checkNotificationURL(*req.NotificationURL); rep != nil {
			return *rep
		}
		if rep := s.validateEndpoint(c.done, *req.NotificationURL); rep != nil {
			return *rep
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, rep := s.subscriptionFor(c) // again: it may have gone during the handshake
	if rep != nil {
		return *rep
	}
	if !exp.IsZero() {
		sub.Expiration = exp
	}
	if req.NotificationURL != nil {
		sub.NotificationURL = *req.NotificationURL
	}
	body := sub.json()
	body["@odata.context"] = graphContext + "#subscriptions/$entity"
	return jsonReply(http.StatusOK, body)
}

// DELETE /subscriptions/{id}
func (s *Server) deleteSubscription(c *call) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, rep := s.subscriptionFor(c)
	if rep != nil {
		return *rep
	}
	delete(s.subs, sub.ID)
	return emptyReply(http.StatusNoContent)
}

// POST /subscriptions/{id}/reauthorize
func (s *Server) reauthorizeSubscription(c *call) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, rep := s.subscriptionFor(c)
	if rep != nil {
		return *rep
	}
	sub.reauthorized = time.Now()
	return emptyReply(http.StatusNoContent)
}

// Subscription is a read-only view of a subscription, for tests.
type Subscription struct {
	ID, Resource, ChangeType, NotificationURL, LifecycleNotificationURL, ClientState string
	Expiration                                                                       time.Time
	Reauthorized                                                                     time.Time // last reauthorize call
}

// Subscriptions returns the live subscriptions, sorted by ID.
func (s *Server) Subscriptions() []Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireSubscriptions(time.Now())
	var out []Subscription
	for _, sub := range s.subs {
		out = append(out, Subscription{ID: sub.ID, Resource: sub.Resource, ChangeType: sub.ChangeType, NotificationURL: sub.NotificationURL,
			LifecycleNotificationURL: sub.LifecycleURL, ClientState: sub.ClientState, Expiration: sub.Expiration, Reauthorized: sub.reauthorized})
	}
	slices.SortFunc(out, func(a, b Subscription) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// RemoveSubscription deletes a subscription as Graph may do on its own;
// with notify, a subscriptionRemoved lifecycle notification goes to its
// lifecycleNotificationUrl first. False when there is no such subscription.
func (s *Server) RemoveSubscription(id string, notify bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, ok := s.subs[strings.ToLower(id)]
	if !ok {
		return false
	}
	if notify {
		s.enqueueLifecycle(sub, "subscriptionRemoved")
	}
	delete(s.subs, sub.ID)
	return true
}

// SendLifecycleNotification sends a lifecycle event (reauthorizationRequired,
// missed, subscriptionRemoved) for a subscription to its
// lifecycleNotificationUrl; false when it has none or does not exist.
func (s *Server) SendLifecycleNotification(id, event string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, ok := s.subs[strings.ToLower(id)]
	if !ok || sub.LifecycleURL == "" {
		return false
	}
	s.enqueueLifecycle(sub, event)
	return true
}
