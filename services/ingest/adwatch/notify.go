package adwatch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// notifyHealthy is how long a notification search must have lasted for its
// end to count as an interruption rather than a failure to set it up.
const notifyHealthy = time.Minute

// listen keeps a change-notification search open and turns every push into a
// poll trigger, until ctx ends. Polling goes on at PollInterval meanwhile, so
// a notification search that fails costs latency, never changes.
func (w *Watcher) listen(ctx context.Context) {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = time.Second
	bo.MaxInterval = time.Minute
	bo.MaxElapsedTime = 0
	for {
		start := time.Now()
		err := w.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > notifyHealthy {
			bo.Reset()
		}
		delay := bo.NextBackOff()
		w.log.Warn().Err(err).Dur("retry_in", delay).Msg("change notifications interrupted; polling meanwhile")
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
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
