// Package audit writes pwsync's audit trail to the AUDIT stream.
package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/pwsync/pwsync/shared/events"
)

// Publisher is the part of natsx.Publisher the writer needs.
type Publisher interface {
	PublishJSON(ctx context.Context, subject, msgID string, v any) (bool, error)
}

// Writer appends records to the audit stream. A record's message ID is derived
// from what it says, so the same outcome written again on a redelivery is
// stored once.
type Writer struct {
	pub Publisher
	now func() time.Time
}

// NewWriter returns a Writer. now may be nil (time.Now).
func NewWriter(pub Publisher, now func() time.Time) *Writer {
	if now == nil {
		now = time.Now
	}
	return &Writer{pub: pub, now: now}
}

// Write stores one record; it fills Time when empty.
func (w *Writer) Write(ctx context.Context, r events.AuditRecord) error {
	if r.Time.IsZero() {
		r.Time = w.now().UTC()
	}
	if _, err := w.pub.PublishJSON(ctx, r.Subject(), recordID(r), r); err != nil {
		return fmt.Errorf("writing audit record for %s: %w", r.User.ObjectGUID, err)
	}
	return nil
}

func recordID(r events.AuditRecord) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s|%s|%s|%s|%s|%s|%s|%s|%d|%s", r.Kind, r.EventID, r.ActionID, r.Rule, r.Action, r.Step,
		r.User.ObjectGUID, r.Outcome, r.HTTPStatus, r.Detail)
	return "audit." + hex.EncodeToString(h.Sum(nil)[:16])
}
