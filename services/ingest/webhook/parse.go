package webhook

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/pwsync/pwsync/shared/events"
)

// ErrMalformed marks a body that is not a well-formed changeNotificationCollection.
var ErrMalformed = errors.New("malformed notification collection")

// maxSubscriptionID bounds subscriptionId: Graph's are GUIDs, and the value
// ends up in event IDs and logs.
const maxSubscriptionID = 128

// ParseNotifications decodes a notification POST body. It is strict about
// structure and types (one JSON object, a non-empty "value" array of
// notifications, every field of the documented type, nothing after the
// object) and tolerant of fields it does not know, because Graph adds fields
// over time and rejecting them would make Graph retry for hours.
//
// It does not check clientState: that is authentication, decided per
// notification by the handler. A nil error means every notification has a
// subscriptionId and is either a lifecycle notification or a change
// notification with a known changeType and a resource.
func ParseNotifications(body []byte) ([]events.GraphNotification, error) {
	var c events.GraphNotificationCollection
	// Unmarshal (not a Decoder) because it also rejects trailing data.
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if len(c.Value) == 0 {
		return nil, fmt.Errorf("%w: no notifications in value", ErrMalformed)
	}
	for i, n := range c.Value {
		if err := check(n); err != nil {
			return nil, fmt.Errorf("%w: value[%d]: %w", ErrMalformed, i, err)
		}
	}
	return c.Value, nil
}

func check(n events.GraphNotification) error {
	switch {
	case n.SubscriptionID == "":
		return errors.New("missing subscriptionId")
	case len(n.SubscriptionID) > maxSubscriptionID:
		return fmt.Errorf("subscriptionId longer than %d bytes", maxSubscriptionID)
	case n.IsLifecycle():
		// Unknown lifecycle events are let through to the subscription
		// manager: rejecting one would only make Graph redeliver it for hours.
		if !isWord(n.LifecycleEvent) {
			return errors.New("lifecycleEvent is not a word")
		}
	case n.ChangeType != events.GraphChangeCreated && n.ChangeType != events.GraphChangeUpdated &&
		n.ChangeType != events.GraphChangeDeleted:
		return errors.New("changeType is not created, updated or deleted")
	case n.Resource == "":
		return errors.New("missing resource")
	}
	if rd := n.ResourceData; rd != nil && len(rd.SequenceNumber) > 0 && !isScalar(rd.SequenceNumber) {
		return errors.New("resourceData.sequenceNumber is neither a number nor a string")
	}
	return nil
}

// isWord reports whether s is a short ASCII identifier like "missed".
func isWord(s string) bool {
	if len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return s != ""
}

// isScalar reports whether raw (valid JSON, as Unmarshal checked) is a
// number or a string.
func isScalar(raw json.RawMessage) bool {
	c := raw[0]
	return c == '"' || c == '-' || '0' <= c && c <= '9'
}
