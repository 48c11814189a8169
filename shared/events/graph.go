package events

import (
	"encoding/json"
	"strings"
	"time"
)

// TypeGraphLifecycle is a lifecycle notification about a Graph subscription
// (Data: GraphNotification with LifecycleEvent set). It goes to its own
// subject because the subscription manager acts on it, not the evaluator.
const TypeGraphLifecycle = "lifecycle"

// Change types of a Graph change notification. Users only produce updated
// (which also fires on create and soft delete) and deleted.
const (
	GraphChangeCreated = "created"
	GraphChangeUpdated = "updated"
	GraphChangeDeleted = "deleted"
)

// Lifecycle events Graph sends to a subscription's lifecycleNotificationUrl.
const (
	GraphLifecycleReauthorizationRequired = "reauthorizationRequired" // renew or reauthorize the subscription
	GraphLifecycleSubscriptionRemoved     = "subscriptionRemoved"     // recreate it, then catch up with delta
	GraphLifecycleMissed                  = "missed"                  // catch up with delta
)

// GraphNotificationCollection is the body Graph POSTs to a notification URL
// (changeNotificationCollection). ValidationTokens only come with rich
// notifications, which users do not have.
type GraphNotificationCollection struct {
	Value            []GraphNotification `json:"value"`
	ValidationTokens []string            `json:"validationTokens,omitempty"`
}

// GraphNotification is one item of a changeNotificationCollection, with
// Graph's JSON names. A user notification never says what changed: it only
// triggers a delta query, which does.
//
// ClientState is the subscription's shared secret. Ingest compares it and
// clears it before the notification goes anywhere: it is never stored in an
// event.
type GraphNotification struct {
	ID                             string             `json:"id,omitempty"` // Graph's notification id, when it sends one
	SubscriptionID                 string             `json:"subscriptionId"`
	SubscriptionExpirationDateTime time.Time          `json:"subscriptionExpirationDateTime,omitzero"`
	ChangeType                     string             `json:"changeType,omitempty"`
	Resource                       string             `json:"resource,omitempty"` // "Users/{id}"
	ResourceData                   *GraphResourceData `json:"resourceData,omitempty"`
	TenantID                       string             `json:"tenantId,omitempty"`
	ClientState                    string             `json:"clientState,omitempty"`
	LifecycleEvent                 string             `json:"lifecycleEvent,omitempty"` // lifecycle notifications only
}

// GraphResourceData identifies the changed resource. For users it holds only
// ids; EventTime and SequenceNumber appear in some Graph deliveries (they are
// documented for the Event Grid form of the same payload) and, when present,
// tell two changes of the same user apart.
type GraphResourceData struct {
	ODataType      string    `json:"@odata.type,omitempty"` // "#Microsoft.Graph.User"
	ODataID        string    `json:"@odata.id,omitempty"`   // "Users/{id}"
	ODataEtag      string    `json:"@odata.etag,omitempty"`
	ID             string    `json:"id,omitempty"`
	OrganizationID string    `json:"organizationId,omitempty"`
	EventTime      time.Time `json:"eventTime,omitzero"`
	// SequenceNumber is kept verbatim: the docs show it both as a number and
	// as a string.
	SequenceNumber json.RawMessage `json:"sequenceNumber,omitempty"`
}

// IsLifecycle reports whether n is a lifecycle notification rather than a
// change notification.
func (n GraphNotification) IsLifecycle() bool { return n.LifecycleEvent != "" }

// UserID is the Entra object id of the user the notification is about, or ""
// when it is not about one user (lifecycle notifications, other resources).
func (n GraphNotification) UserID() string {
	if id, ok := userFromResource(n.Resource); ok {
		return id
	}
	if rd := n.ResourceData; rd != nil && strings.EqualFold(rd.ODataType, "#Microsoft.Graph.User") {
		return rd.ID
	}
	return ""
}

// userFromResource extracts {id} from "Users/{id}" (Graph's casing varies,
// and the subscription's own form "/users/{id}" may appear).
func userFromResource(resource string) (string, bool) {
	r := strings.TrimPrefix(resource, "/")
	if len(r) <= len("users/") || !strings.EqualFold(r[:len("users/")], "users/") {
		return "", false
	}
	id := r[len("users/"):]
	if strings.Contains(id, "/") {
		return "", false // a resource below a user (a message, ...), not the user
	}
	return id, true
}
