// Package lease runs singleton work (the AD watcher, the subscription
// manager, the delta poller, schedulers) on exactly one replica at a time,
// using a NATS KV bucket whose TTL expires the lease of a replica that died.
package lease

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/metrics"
)

// Lease is one named lease. The bucket's TTL (MaxAge) is the lease duration:
// the holder rewrites the key every Renew; when it stops, the key expires
// and another replica's Create succeeds.
type Lease struct {
	kv     jetstream.KeyValue
	key    string
	holder string
	renew  time.Duration
	log    zerolog.Logger
	held   atomic.Bool
	// standby: the last attempt found the lease held by another replica.
	standby atomic.Bool
}

// DefaultHolder names this process as a lease holder when the config names
// none: host and pid, so that an operator reading a lease knows where it is
// held.
func DefaultHolder() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// New returns a lease on key for holder (e.g. DefaultHolder). renew must be
// well below the bucket's TTL (a third is usual).
func New(kv jetstream.KeyValue, key, holder string, renew time.Duration, log zerolog.Logger) *Lease {
	return &Lease{kv: kv, key: key, holder: holder, renew: renew,
		log: log.With().Str("lease", key).Str("holder", holder).Logger()}
}

// Held reports whether this replica holds the lease now.
func (l *Lease) Held() bool { return l.held.Load() }

// Standby reports whether this replica is waiting while another one holds
// the lease (false while holding it, and before the first attempt).
func (l *Lease) Standby() bool { return l.standby.Load() }

// Holder returns the current holder recorded in KV, or "".
func (l *Lease) Holder(ctx context.Context) (string, error) {
	e, err := l.kv.Get(ctx, l.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading lease %s: %w", l.key, err)
	}
	return string(e.Value()), nil
}

// Run waits for the lease, runs fn while it is held, and starts waiting again
// when it is lost (fn's context is cancelled then). It returns when ctx ends,
// releasing the lease so that another replica takes over at once.
func (l *Lease) Run(ctx context.Context, fn func(context.Context) error) error {
	for {
		rev, err := l.acquire(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		l.held.Store(true)
		metrics.Lease(l.key, l.holder, true)
		l.log.Info().Msg("lease acquired")
		workCtx, cancel := context.WithCancel(ctx)
		fnErr := make(chan error, 1)
		go func() { fnErr <- fn(workCtx) }()
		lost := l.keep(workCtx, rev, fnErr)
		cancel()
		err = <-fnErr
		l.held.Store(false)
		metrics.Lease(l.key, l.holder, false)
		switch {
		case ctx.Err() != nil:
			l.release()
			return nil
		case lost:
			l.log.Warn().Msg("lease lost; work stopped")
		case err != nil:
			// The work failed: give the lease up so another replica can try.
			l.log.Error().Err(err).Msg("singleton work failed; releasing lease")
			l.release()
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(l.renew):
			}
		default:
			l.release()
			return nil
		}
	}
}

// acquire polls until Create succeeds (the key is absent or expired), or
// until it finds the lease recorded under its own holder name: a replica
// restarted with the same stable name (config instance:) after a kill -9
// takes its own lease back at once instead of waiting out the TTL. Holder
// names must therefore be unique per replica.
func (l *Lease) acquire(ctx context.Context) (uint64, error) {
	for {
		rev, err := l.kv.Create(ctx, l.key, []byte(l.holder))
		if err == nil {
			l.standby.Store(false)
			return rev, nil
		}
		if errors.Is(err, jetstream.ErrKeyExists) {
			if rev, ok := l.reclaim(ctx); ok {
				l.standby.Store(false)
				return rev, nil
			}
			if !l.standby.Swap(true) {
				l.log.Info().Msg("lease held by another replica; standing by")
			}
		} else {
			l.log.Warn().Err(err).Msg("acquiring lease failed; retrying")
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(l.renew / 2):
		}
	}
}

// reclaim takes over the lease when KV names this holder: the previous
// incarnation of this replica died holding it. The update is conditional on
// the revision read, so a lease that changed hands meanwhile is left alone.
func (l *Lease) reclaim(ctx context.Context) (uint64, bool) {
	e, err := l.kv.Get(ctx, l.key)
	if err != nil || string(e.Value()) != l.holder {
		return 0, false
	}
	rev, err := l.kv.Update(ctx, l.key, []byte(l.holder), e.Revision())
	if err != nil {
		return 0, false
	}
	l.log.Info().Msg("lease still recorded under this replica's name (a restart); reclaimed at once")
	return rev, true
}

// keep renews the lease until ctx ends (false), fn returns (false), or a
// renewal shows someone else holds it (true). A renewal that fails for
// transport reasons is retried until the lease would have expired.
func (l *Lease) keep(ctx context.Context, rev uint64, fnErr chan error) (lost bool) {
	t := time.NewTicker(l.renew)
	defer t.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-ctx.Done():
			return false
		case err := <-fnErr:
			fnErr <- err // hand it back to Run
			return false
		case <-t.C:
			next, err := l.kv.Update(ctx, l.key, []byte(l.holder), rev)
			switch {
			case err == nil:
				rev, lastOK = next, time.Now()
			case isWrongSequence(err) || errors.Is(err, jetstream.ErrKeyNotFound):
				return true
			case time.Since(lastOK) > 2*l.renew:
				// Could not renew for too long: assume another replica may have
				// taken over, and stop rather than run twice.
				l.log.Warn().Err(err).Msg("lease renewal failing; giving it up")
				return true
			default:
				l.log.Warn().Err(err).Msg("lease renewal failed; retrying")
			}
		}
	}
}

func (l *Lease) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	e, err := l.kv.Get(ctx, l.key)
	switch {
	case natsNotFound(err):
	case err != nil:
		l.log.Warn().Err(err).Msg("could not release the lease; it expires after its TTL")
	case string(e.Value()) != l.holder:
	default:
		if err := l.kv.Delete(ctx, l.key, jetstream.LastRevision(e.Revision())); err != nil {
			l.log.Warn().Err(err).Msg("could not release the lease; it expires after its TTL")
			return
		}
		l.log.Info().Msg("lease released")
	}
}

func natsNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted)
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}
