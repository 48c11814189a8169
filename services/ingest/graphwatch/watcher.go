// Package graphwatch keeps pwsync informed of changes in Entra ID: the
// subscription manager keeps one change notification subscription on /users
// alive (create, renew well before expiry, reauthorize, recreate when gone),
// and the delta poller runs users delta rounds whenever a notification or
// lifecycle event arrives (coalesced) and on an interval, publishing every
// changed user as an events.graph.user event.
//
// Each is a singleton under its own lease, so that with several replicas
// exactly one manages the subscription and one polls; every replica answers
// the webhook receiver's clientState lookups from the subscriptions bucket.
//
// State in NATS: the subscriptions bucket holds one record per subscription
// (key "sub.<id>": its clientState, expiry, URLs) and the ID of the current
// one (key "current"); the cursors bucket holds the deltaLink.
package graphwatch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/lease"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/shared/retry"
)

// Names in NATS.
const (
	LeaseSubscription = natsx.LeaseGraphSubscription
	LeaseDelta        = natsx.LeaseGraphDelta
	CursorKey         = "graph.delta.users" // deltaLink in natsx.BucketCursors
)

// Watcher runs the subscription manager and the delta poller. Create it with
// New, run it once with Run; ClientState may be called concurrently from the
// webhook receiver.
type Watcher struct {
	cfg     Config
	tracker graph.Tracker
	js      jetstream.JetStream
	subs    jetstream.KeyValue // natsx.BucketSubscriptions
	cursors jetstream.KeyValue // natsx.BucketCursors
	leases  jetstream.KeyValue // natsx.BucketLeases
	log     zerolog.Logger

	subLease, deltaLease *lease.Lease

	// trigger asks the delta poller for a round; capacity 1, so that a burst
	// of notifications during a round makes exactly one more round.
	trigger chan struct{}
	secrets secretCache
	ready   atomic.Bool
	synced  atomic.Bool // a delta round completed since start: the cloud side is stored
	stats   counters
}

// New checks cfg and opens the buckets; it fails when the topology
// (natsx.Topology.Ensure) is missing.
func New(cfg Config, t graph.Tracker, js jetstream.JetStream, log zerolog.Logger) (*Watcher, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if t == nil || js == nil {
		return nil, errors.New("graphwatch: New needs a graph.Tracker and JetStream")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	log = log.With().Str("component", "graphwatch").Logger()
	w := &Watcher{cfg: cfg, tracker: t, js: js, trigger: make(chan struct{}, 1),
		log: log.With().Str("holder", cfg.Holder).Logger()}
	for name, dst := range map[string]*jetstream.KeyValue{
		natsx.BucketSubscriptions: &w.subs, natsx.BucketCursors: &w.cursors, natsx.BucketLeases: &w.leases,
	} {
		kv, err := natsx.Bucket(ctx, js, name)
		if err != nil {
			return nil, fmt.Errorf("graphwatch: %w", err)
		}
		*dst = kv
	}
	w.secrets.init(w.subs, cfg.Now)
	// The leases log the holder themselves.
	w.subLease = lease.New(w.leases, LeaseSubscription, cfg.Holder, natsx.LeaseRenew, log)
	w.deltaLease = lease.New(w.leases, LeaseDelta, cfg.Holder, natsx.LeaseRenew, log)
	if strings.HasPrefix(cfg.NotificationURL, "http:") {
		w.log.Warn().Str("notification_url", cfg.NotificationURL).Msg("notification URL is plain http: Graph refuses it (simulator only)")
	}
	return w, nil
}

// Run runs until ctx ends, then returns nil: the secrets cache on every
// replica, and the manager and the poller on the replicas holding their
// leases. Nothing here ends the process: Graph and NATS failures are logged
// and retried.
func (w *Watcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { w.watchSecrets(ctx) })
	wg.Go(func() { w.runLease(ctx, w.subLease, w.manage) })
	wg.Go(func() { w.runLease(ctx, w.deltaLease, w.poll) })
	wg.Wait()
	return nil
}

// Ready reports whether the clientState cache is loaded. It does not wait
// for a subscription: Graph validates the receiver before it creates one, so
// a receiver that waited for the subscription would never get one.
func (w *Watcher) Ready() bool { return w.ready.Load() }

// Synced reports whether the cloud side is stored: this replica's delta
// poller completed a round since start (the first one of a new deployment
// reads every user), or another replica polls. Until then a reset may wait
// behind the initial read's events.
func (w *Watcher) Synced() bool {
	if w.deltaLease.Held() {
		return w.synced.Load()
	}
	return w.deltaLease.Standby()
}

// ClientState implements webhook.SecretLookup: the clientState of a current
// subscription, or of a replaced one for a short grace period (notifications
// already in flight when it was recreated).
func (w *Watcher) ClientState(subscriptionID string) (string, bool) {
	return w.secrets.lookup(subscriptionID)
}

func (w *Watcher) runLease(ctx context.Context, l *lease.Lease, fn func(context.Context) error) {
	retry.Forever(ctx, retry.Constant(natsx.LeaseRenew), func(ctx context.Context) (bool, error) {
		return false, l.Run(ctx, fn)
	}, retry.Notify(func(err error, _ time.Duration) { w.log.Error().Err(err).Msg("lease loop ended; restarting") }))
}

// kick asks for a delta round without blocking.
func (w *Watcher) kick() {
	select {
	case w.trigger <- struct{}{}:
	default: // one is pending already: coalesced
	}
}

// Stats counts what this Watcher did since it was created.
type Stats struct {
	SubscriptionLease bool   `json:"subscription_lease"` // this replica manages the subscription
	DeltaLease        bool   `json:"delta_lease"`        // this replica polls
	Created           uint64 `json:"created"`            // subscriptions created
	Renewed           uint64 `json:"renewed"`
	Reauthorized      uint64 `json:"reauthorized"`
	Triggers          uint64 `json:"triggers"` // notification and lifecycle messages consumed
	Rounds            uint64 `json:"rounds"`   // delta rounds completed
	Resyncs           uint64 `json:"resyncs"`  // full resyncs after an expired delta token
	Users             uint64 `json:"users"`    // user events published (duplicates included)
	Duplicates        uint64 `json:"duplicates"`
}

type counters struct {
	created, renewed, reauthorized, triggers, rounds, resyncs, users, duplicates atomic.Uint64
}

// Stats returns a snapshot of the counters.
func (w *Watcher) Stats() Stats {
	return Stats{
		SubscriptionLease: w.subLease.Held(), DeltaLease: w.deltaLease.Held(),
		Created: w.stats.created.Load(), Renewed: w.stats.renewed.Load(), Reauthorized: w.stats.reauthorized.Load(),
		Triggers: w.stats.triggers.Load(), Rounds: w.stats.rounds.Load(), Resyncs: w.stats.resyncs.Load(),
		Users: w.stats.users.Load(), Duplicates: w.stats.duplicates.Load(),
	}
}

// Graph call retries: throttling and server errors are retried here with
// backoff (Retry-After honoured), for a bounded time; the loops above retry
// the whole operation later. The msgraph client does not retry itself, so
// retries do not multiply.
const (
	retryInitial  = 500 * time.Millisecond
	retryMax      = time.Minute
	retryDeadline = 5 * time.Minute
)

// call runs fn, retrying retryable Graph errors.
func (w *Watcher) call(ctx context.Context, op string, fn func(context.Context) error) error {
	err := retry.Until(ctx, retry.Exponential(retryInitial, retryMax, retryDeadline), func(ctx context.Context) error {
		err := fn(ctx)
		var ge *graph.Error
		if err != nil && (ctx.Err() != nil || !errors.As(err, &ge) || !ge.Retryable()) {
			return retry.Permanent(err)
		}
		return err
	}, retry.AtLeast(retryAfter), retry.Notify(func(err error, d time.Duration) {
		w.log.Warn().Err(err).Str("op", op).Dur("retry_in", d).Msg("graph call failed; retrying")
	}))
	var gaveUp *retry.GaveUpError
	if errors.As(err, &gaveUp) {
		return fmt.Errorf("%s: giving up after %v of retries: %w", op, retryDeadline, gaveUp.Err)
	}
	return err
}

// retryAfter is the wait Graph asked for in err, if any.
func retryAfter(err error) time.Duration {
	var ge *graph.Error
	if errors.As(err, &ge) {
		return ge.RetryAfter
	}
	return 0
}

// loopBackoff paces the retries of a whole failed operation (a delta round,
// a subscription check): quick at first, at most a minute apart, forever.
func loopBackoff() *backoff.ExponentialBackOff {
	return retry.Exponential(time.Second, time.Minute, 0)
}

// keep runs fn (a consumer that should not stop) again after it returns,
// paced by loopBackoff, until ctx ends; what it returned is logged as msg.
func (w *Watcher) keep(ctx context.Context, msg string, fn func(context.Context) error) {
	retry.Forever(ctx, loopBackoff(), func(ctx context.Context) (bool, error) { return false, fn(ctx) },
		retry.Notify(func(err error, d time.Duration) { w.log.Warn().Err(err).Dur("retry_in", d).Msg(msg) }))
}
