package graphwatch

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/natsx"
)

// The one subscription pwsync keeps. Users only support updated (which also
// fires on create and soft delete) and deleted.
const (
	subResource   = "/users"
	subChangeType = "updated,deleted"
)

// lifecycleLookback: the manager reads lifecycle events from the stream
// starting this far before it took the lease, so that an event that arrived
// while the previous holder was dying is still seen. Handling is idempotent
// (events about a subscription that is no longer current are ignored).
const lifecycleLookback = time.Minute

// manage is the subscription manager's work while it holds the lease.
func (w *Watcher) manage(ctx context.Context) error {
	lifecycle := make(chan events.GraphNotification, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.followLifecycle(ctx, lifecycle)
	}()
	defer func() { <-done }()

	tick := time.NewTicker(w.cfg.CheckEvery)
	defer tick.Stop()
	for {
		if err := w.check(ctx); err != nil && ctx.Err() == nil {
			w.log.Error().Err(err).Dur("retry_in", w.cfg.CheckEvery).Msg("subscription check failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case n := <-lifecycle:
			if err := w.onLifecycle(ctx, n); err != nil && ctx.Err() == nil {
				w.log.Error().Err(err).Str("lifecycle_event", n.LifecycleEvent).Msg("handling lifecycle notification failed")
			}
		}
	}
}

// check makes sure the current subscription exists at Graph, points at the
// configured URLs and is renewed in time; otherwise it (re)creates one.
func (w *Watcher) check(ctx context.Context) error {
	rec, err := w.currentRecord(ctx)
	switch {
	case err != nil:
		return err
	case rec == nil:
		return w.recreate(ctx, nil, "no subscription yet")
	case rec.NotificationURL != w.cfg.NotificationURL || rec.LifecycleURL != w.cfg.LifecycleURL:
		// lifecycleNotificationUrl cannot be PATCHed: delete and recreate.
		return w.recreate(ctx, rec, "notification URLs changed")
	}
	var sub graph.Subscription
	err = w.call(ctx, "get subscription", func(ctx context.Context) (err error) {
		sub, err = w.tracker.GetSubscription(ctx, rec.ID)
		return err
	})
	switch {
	case graph.IsNotFound(err):
		return w.recreate(ctx, rec, "subscription gone at graph")
	case err != nil:
		return fmt.Errorf("reading subscription %s: %w", rec.ID, err)
	}
	if !sub.Expiration.IsZero() && !sub.Expiration.Equal(rec.Expiration) {
		rec.Expiration = sub.Expiration // Graph's word counts
		if err := putRecord(ctx, w.subs, *rec); err != nil {
			return err
		}
	}
	if err := w.sweepRetired(ctx); err != nil {
		w.log.Warn().Err(err).Msg("removing retired subscription records failed")
	}
	if left := rec.Expiration.Sub(w.cfg.Now()); left < w.cfg.RenewBefore {
		return w.renew(ctx, rec)
	}
	return nil
}

// renew extends the subscription to a full Lifetime from now.
func (w *Watcher) renew(ctx context.Context, rec *record) error {
	exp := w.cfg.Now().Add(w.cfg.Lifetime).UTC()
	var sub graph.Subscription
	err := w.call(ctx, "renew subscription", func(ctx context.Context) (err error) {
		sub, err = w.tracker.RenewSubscription(ctx, rec.ID, exp)
		return err
	})
	switch {
	case graph.IsNotFound(err):
		return w.recreate(ctx, rec, "subscription gone at graph on renewal")
	case err != nil:
		return fmt.Errorf("renewing subscription %s: %w", rec.ID, err)
	}
	if !sub.Expiration.IsZero() {
		exp = sub.Expiration
	}
	rec.Expiration = exp
	if err := putRecord(ctx, w.subs, *rec); err != nil {
		return err
	}
	w.stats.renewed.Add(1)
	w.log.Info().Str("subscription_id", rec.ID).Time("expiration", exp).Msg("subscription renewed")
	return nil
}

// recreate replaces old (nil: there is none) with a new subscription with a
// fresh clientState. old is deleted at Graph first: Graph refuses a second
// subscription with the same resource and change types (409).
func (w *Watcher) recreate(ctx context.Context, old *record, reason string) error {
	log := w.log.With().Str("reason", reason).Logger()
	if old != nil {
		log = log.With().Str("old_subscription_id", old.ID).Logger()
		err := w.call(ctx, "delete subscription", func(ctx context.Context) error {
			return w.tracker.DeleteSubscription(ctx, old.ID)
		})
		if err != nil && !graph.IsNotFound(err) {
			return fmt.Errorf("deleting subscription %s before recreating it: %w", old.ID, err)
		}
	}
	secret, err := newClientState()
	if err != nil {
		return err
	}
	want := graph.Subscription{Resource: subResource, ChangeType: subChangeType,
		NotificationURL: w.cfg.NotificationURL, LifecycleNotificationURL: w.cfg.LifecycleURL,
		ClientState: secret, Expiration: w.cfg.Now().Add(w.cfg.Lifetime).UTC()}
	sub, err := w.create(ctx, want)
	if err != nil {
		return err
	}
	rec := record{ID: sub.ID, ClientState: secret, Expiration: sub.Expiration, Resource: subResource,
		NotificationURL: w.cfg.NotificationURL, LifecycleURL: w.cfg.LifecycleURL, Created: w.cfg.Now().UTC()}
	if rec.Expiration.IsZero() {
		rec.Expiration = want.Expiration
	}
	// The record first, so the receiver accepts the new subscription's
	// notifications; then the pointer, whose change triggers a delta round
	// (via the KV watch) to catch what happened while there was none.
	if err := putRecord(ctx, w.subs, rec); err != nil {
		return err
	}
	if _, err := w.subs.Put(ctx, keyCurrent, []byte(rec.ID)); err != nil {
		return fmt.Errorf("storing current subscription %s: %w", rec.ID, err)
	}
	if old != nil {
		old.RetiredAt = w.cfg.Now().UTC()
		if err := putRecord(ctx, w.subs, *old); err != nil {
			log.Warn().Err(err).Msg("marking the old subscription retired failed")
		}
	}
	w.stats.created.Add(1)
	log.Info().Str("subscription_id", rec.ID).Time("expiration", rec.Expiration).Msg("subscription created")
	return nil
}

// create POSTs the subscription. On 409 (a subscription on /users already
// exists for this app, e.g. after the bucket was lost) it deletes the
// existing one if it is ours, i.e. delivers to our notification URL, and
// tries once more; one delivering elsewhere belongs to someone else (another
// installation sharing the app registration) and is left alone.
func (w *Watcher) create(ctx context.Context, want graph.Subscription) (graph.Subscription, error) {
	var sub graph.Subscription
	post := func(ctx context.Context) (err error) {
		sub, err = w.tracker.CreateSubscription(ctx, want)
		return err
	}
	err := w.call(ctx, "create subscription", post)
	if graph.StatusOf(err) != http.StatusConflict {
		if err != nil {
			return sub, fmt.Errorf("creating subscription: %w", err)
		}
		return sub, nil
	}
	// Graph names the existing subscription only in the message.
	id := guidPattern.FindString(errorMessage(err))
	if id == "" {
		return sub, fmt.Errorf("creating subscription: conflict with an unnamed subscription: %w", err)
	}
	var other graph.Subscription
	if gerr := w.call(ctx, "get subscription", func(ctx context.Context) (err error) {
		other, err = w.tracker.GetSubscription(ctx, id)
		return err
	}); gerr != nil && !graph.IsNotFound(gerr) {
		return sub, fmt.Errorf("creating subscription: reading conflicting subscription %s: %w", id, gerr)
	} else if gerr == nil && other.NotificationURL != want.NotificationURL {
		return sub, fmt.Errorf("creating subscription: subscription %s on %s already delivers to %s; delete it or use another app registration: %w",
			id, subResource, other.NotificationURL, err)
	} else if gerr == nil {
		w.log.Warn().Str("old_subscription_id", id).Msg("deleting an unknown subscription of ours that blocks creation")
		if err := w.call(ctx, "delete subscription", func(ctx context.Context) error {
			return w.tracker.DeleteSubscription(ctx, id)
		}); err != nil && !graph.IsNotFound(err) {
			return sub, fmt.Errorf("creating subscription: deleting conflicting subscription %s: %w", id, err)
		}
	}
	if err := w.call(ctx, "create subscription", post); err != nil {
		return sub, fmt.Errorf("creating subscription: %w", err)
	}
	return sub, nil
}

var guidPattern = regexp.MustCompile(`[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`)

func errorMessage(err error) string {
	var ge *graph.Error
	if errors.As(err, &ge) {
		return ge.Message
	}
	return ""
}

// newClientState returns 32 random bytes, base64url: 43 characters, within
// Graph's 128.
func newClientState() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating clientState: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// currentRecord reads the current subscription's record; nil, nil if none.
func (w *Watcher) currentRecord(ctx context.Context) (*record, error) {
	e, err := w.subs.Get(ctx, keyCurrent)
	if natsx.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading current subscription: %w", err)
	}
	return getRecord(ctx, w.subs, string(e.Value()))
}

// sweepRetired deletes the records of replaced subscriptions past their
// grace period.
func (w *Watcher) sweepRetired(ctx context.Context) error {
	kl, err := w.subs.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("listing subscriptions: %w", err)
	}
	defer func() { _ = kl.Stop() }()
	var stale []string
	for key := range kl.Keys() {
		if !strings.HasPrefix(key, keyPrefix) {
			continue
		}
		r, err := getRecord(ctx, w.subs, strings.TrimPrefix(key, keyPrefix))
		if err != nil || r == nil || r.RetiredAt.IsZero() {
			continue
		}
		if w.cfg.Now().Sub(r.RetiredAt) > retiredGrace {
			stale = append(stale, key)
		}
	}
	for _, key := range stale {
		if err := w.subs.Delete(ctx, key); err != nil {
			return fmt.Errorf("deleting %s: %w", key, err)
		}
	}
	return nil
}

// onLifecycle acts on a lifecycle notification about the current
// subscription; events about older ones (replays, retries) are ignored.
// "missed" needs nothing here: the delta poller runs a round on every
// lifecycle event.
func (w *Watcher) onLifecycle(ctx context.Context, n events.GraphNotification) error {
	rec, err := w.currentRecord(ctx)
	if err != nil {
		return err
	}
	log := w.log.With().Str("subscription_id", n.SubscriptionID).Str("lifecycle_event", n.LifecycleEvent).Logger()
	if rec == nil || rec.ID != n.SubscriptionID {
		log.Debug().Msg("lifecycle notification about a subscription that is not current; ignored")
		return nil
	}
	log.Info().Msg("lifecycle notification")
	switch n.LifecycleEvent {
	case events.GraphLifecycleReauthorizationRequired:
		err := w.call(ctx, "reauthorize subscription", func(ctx context.Context) error {
			return w.tracker.ReauthorizeSubscription(ctx, rec.ID)
		})
		switch {
		case graph.IsNotFound(err):
			return w.recreate(ctx, rec, "subscription gone at graph on reauthorization")
		case err != nil:
			return fmt.Errorf("reauthorizing subscription %s: %w", rec.ID, err)
		}
		w.stats.reauthorized.Add(1)
		// Renewing also reauthorizes, and the event may mean that the
		// subscription itself is about to expire.
		return w.renew(ctx, rec)
	case events.GraphLifecycleSubscriptionRemoved:
		return w.recreate(ctx, rec, "subscription removed by graph")
	}
	return nil
}

// followLifecycle feeds lifecycle notifications from the EVENTS stream into
// out until ctx ends. An ordered consumer suffices: it is read only while
// holding the lease, and a new holder starts with a full check anyway.
func (w *Watcher) followLifecycle(ctx context.Context, out chan<- events.GraphNotification) {
	w.keep(ctx, "reading lifecycle notifications failed", func(ctx context.Context) error {
		return w.consumeLifecycle(ctx, out)
	})
}

func (w *Watcher) consumeLifecycle(ctx context.Context, out chan<- events.GraphNotification) error {
	start := time.Now().Add(-lifecycleLookback) // stream time, not the injectable clock
	cons, err := w.js.OrderedConsumer(ctx, natsx.StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subjectLifecycle},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
	})
	if err != nil {
		return fmt.Errorf("opening lifecycle consumer: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var env events.Envelope
		var n events.GraphNotification
		if err := json.Unmarshal(m.Data(), &env); err != nil {
			w.log.Warn().Err(err).Msg("undecodable lifecycle event; skipped")
			return
		}
		if err := env.Decode(&n); err != nil {
			w.log.Warn().Err(err).Msg("undecodable lifecycle event; skipped")
			return
		}
		select {
		case out <- n:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return fmt.Errorf("consuming lifecycle notifications: %w", err)
	}
	<-ctx.Done()
	cc.Stop()
	return nil
}
