package adwatch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pwsync/pwsync/shared/retry"
)

// notifyHealthy is how long a notification search must have lasted for its
// end to count as an interruption rather than a failure to set it up.
const notifyHealthy = time.Minute

// listen keeps a change-notification search open and turns every push into a
// poll trigger, until ctx ends. Polling goes on at PollInterval meanwhile, so
// a notification search that fails costs latency, never changes.
func (w *Watcher) listen(ctx context.Context) {
	retry.Forever(ctx, retry.Exponential(time.Second, time.Minute, 0), func(ctx context.Context) (bool, error) {
		start := time.Now()
		err := w.listenOnce(ctx)
		return time.Since(start) > notifyHealthy, err
	}, retry.Notify(func(err error, d time.Duration) {
		w.log.Warn().Err(err).Dur("retry_in", d).Msg("change notifications interrupted; polling meanwhile")
	}))
}

// listenOnce runs one notification search on a connection of its own (a
// persistent search must not share the request timeout of the polling one).
func (w *Watcher) listenOnce(ctx context.Context) error {
	c, err := w.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	// AD allows a subtree notification search only at a naming context root
	// (Samba accepts any base): watch the whole domain even when BaseDN is an
	// OU; a change elsewhere costs one cheap poll.
	base := w.cfg.BaseDN
	if dse, err := readRootDSE(c); err == nil && dse.DefaultNamingContext != "" {
		base = dse.DefaultNamingContext
	}
	c.SetTimeout(0) // the search lasts as long as the session
	res := c.SearchAsync(ctx, NotificationRequest(base), 64)
	w.notifying.Store(true)
	defer w.notifying.Store(false)
	w.log.Debug().Str("base", base).Msg("change notifications on")
	for res.Next() {
		if res.Entry() == nil {
			continue // the final result, handled below
		}
		w.lastPush.Store(time.Now().UnixNano())
		select {
		case w.trigger <- struct{}{}:
		default: // a poll is already due; it will see this change too
		}
	}
	if err := res.Err(); err != nil {
		return fmt.Errorf("change notification search at %s: %w", base, err)
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("the DC ended the change notification search")
}
