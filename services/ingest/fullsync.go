package ingest

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/shared/events"
)

// PublishFullSync publishes the end-of-full-sync marker (adwatch.FullSyncSink),
// after every user state of the scan was stored.
func (s *EventSink) PublishFullSync(ctx context.Context, f events.ADFullSync) error {
	ev, err := events.NewEnvelope(f.EventID(), events.SourceAD, events.TypeADFullSync, s.now().UTC(), f)
	if err != nil {
		return err
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encoding event %s: %w", ev.ID, err)
	}
	if _, err := s.js.Publish(ctx, ev.Subject(), data, jetstream.WithMsgID(ev.ID)); err != nil {
		return fmt.Errorf("publishing event %s: %w", ev.ID, err)
	}
	return nil
}
