package webhook

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"time"

	"github.com/pwsync/pwsync/shared/events"
)

// EventID derives the stable ID (and Nats-Msg-Id) of an accepted
// notification. data is the notification as it will be stored (clientState
// already removed), received is when ingest got it.
//
// What has to collapse: Graph redelivers a notification it thinks failed
// (5xx, timeout) as the same JSON object, possibly to a different replica
// and some time later. What must not collapse: two real changes of one user.
//
// The ID is readable parts (subscription, change type or lifecycle event,
// user) plus a hash of the whole stored notification. The hash covers every
// field Graph sends, so a redelivery hashes the same and anything that
// differs between two changes (Graph's notification id, resourceData's
// eventTime or sequenceNumber, a renewed subscriptionExpirationDateTime)
// separates them.
//
// User notifications usually carry none of those markers: two "updated" for
// the same user, minutes apart, are then byte-identical and indistinguishable
// from a redelivery. Only the arrival time tells them apart, so for
// notifications without a marker the hash also covers the arrival time
// truncated to window. The two possible mistakes are not equally bad: a
// notification only triggers a delta query, so a redelivery that crosses a
// window boundary costs one extra, idempotent delta round, whereas collapsing
// a real change would delay it until the next scheduled delta poll. A
// redelivery within the window (a timeout or a 503 retried promptly) still
// collapses. window <= 0 hashes content only.
func EventID(n events.GraphNotification, data []byte, received time.Time, window time.Duration) string {
	sum := sha256.Sum256(data)
	if window > 0 && !hasChangeMarker(n) {
		slot := binary.BigEndian.AppendUint64(sum[:], uint64(received.UnixNano()/int64(window)))
		sum = sha256.Sum256(slot) // hash of (content hash, arrival window)
	}

	kind, subject := n.ChangeType, n.UserID()
	if n.IsLifecycle() {
		kind, subject = n.LifecycleEvent, ""
	}
	var b strings.Builder
	b.Grow(len("graph.") + len(n.SubscriptionID) + len(kind) + len(subject) + 3 + 16)
	b.WriteString("graph.")
	b.WriteString(idPart(n.SubscriptionID))
	b.WriteByte('.')
	b.WriteString(idPart(kind))
	if subject != "" {
		b.WriteByte('.')
		b.WriteString(idPart(subject))
	}
	b.WriteByte('.')
	var hexSum [16]byte
	hex.Encode(hexSum[:], sum[:8]) // 64 bits: no collision within a dedup window
	b.Write(hexSum[:])
	return b.String()
}

// hasChangeMarker reports whether n carries something that differs between
// two changes of the same resource.
func hasChangeMarker(n events.GraphNotification) bool {
	if n.ID != "" {
		return true
	}
	rd := n.ResourceData
	return rd != nil && (!rd.EventTime.IsZero() || len(rd.SequenceNumber) > 0)
}

// idPart keeps an ID component short and usable as a KV key; the hash keeps
// the ID unique whatever was cut.
func idPart(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	for i := 0; i < len(s); i++ {
		if !keySafe(s[i]) {
			return events.KeySafe(s)
		}
	}
	return s // the usual GUID: no copy
}

// keySafe reports whether c is allowed as is by events.KeySafe.
func keySafe(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '_' || c == '=' || c == '.' || c == '/'
}
