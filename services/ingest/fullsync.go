package ingest

import (
	"context"

	"github.com/pwsync/pwsync/shared/events"
)

// PublishFullSync publishes the end-of-full-sync marker (adwatch.FullSyncSink),
// after every user state of the scan was stored.
func (s *EventSink) PublishFullSync(ctx context.Context, f events.ADFullSync) error {
	return s.publishOne(ctx, f.EventID(), events.TypeADFullSync, f)
}
