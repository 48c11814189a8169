package adwatch

import (
	"context"
	"fmt"
	"time"

	"github.com/pwsync/pwsync/shared/events"
)

// FullSyncSink records the end of a full sync. A Sink may implement it; the
// evaluator's backfill brake waits for it before counting what the scan
// would act on.
type FullSyncSink interface {
	PublishFullSync(ctx context.Context, f events.ADFullSync) error
}

// fullSyncDone publishes the end-of-full-sync marker when the sink takes it.
func (w *Watcher) fullSyncDone(ctx context.Context, users int, started time.Time) error {
	fs, ok := w.sink.(FullSyncSink)
	if !ok {
		return nil
	}
	if err := fs.PublishFullSync(ctx, events.ADFullSync{Domain: w.cfg.Domain, Users: users, Started: started}); err != nil {
		return fmt.Errorf("full sync of %s: %w", w.cfg.Domain, err)
	}
	return nil
}
