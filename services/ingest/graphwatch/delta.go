package graphwatch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/metrics"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/shared/retry"
)

// Subjects the webhook receiver publishes on: the poller's triggers.
const (
	subjectNotification = "events." + events.SourceGraph + "." + events.TypeGraphNotification
	subjectLifecycle    = "events." + events.SourceGraph + "." + events.TypeGraphLifecycle
)

const (
	// publishTimeout bounds the wait for one batch of JetStream acks: during
	// a NATS outage the round fails and is retried (same IDs) instead of
	// hanging.
	publishTimeout = 30 * time.Second
	// publishBatch caps the async publishes in flight at once, well below
	// the client's limit of pending acks.
	publishBatch = 256
)

// poll is the delta poller's work while it holds the lease: it consumes the
// trigger consumer (only the lease holder may: it is durable and shared) and
// runs a round at once, on every trigger (coalesced) and every DeltaInterval.
func (w *Watcher) poll(ctx context.Context) error {
	stop := w.consumeTriggers(ctx)
	defer stop()

	next := time.NewTimer(0) // a new holder starts with a round: triggers may have gone unserved
	defer next.Stop()
	for {
		triggered := false
		select {
		case <-ctx.Done():
			return nil
		case <-w.trigger:
			triggered = true
		case <-next.C:
		}
		// Everything that asked for a round up to here is served by this one;
		// what arrives during it makes the next one.
		select {
		case <-w.trigger:
		default:
		}
		if !w.roundUntilDone(ctx) {
			return nil
		}
		wait := w.cfg.DeltaInterval
		if triggered && w.cfg.FollowUp > 0 && w.cfg.FollowUp < wait {
			wait = w.cfg.FollowUp
		}
		next.Reset(wait)
	}
}

// roundUntilDone runs a delta round, retrying a failed one with backoff
// until it completes (true) or ctx ends (false).
func (w *Watcher) roundUntilDone(ctx context.Context) bool {
	// loopBackoff never gives up: an error here means ctx ended.
	return retry.Until(ctx, loopBackoff(), w.round, retry.Notify(func(err error, d time.Duration) {
		w.log.Error().Err(err).Dur("retry_in", d).Msg("delta round failed; retrying from the saved delta link")
	})) == nil
}

// round follows the users delta query from the saved deltaLink (or from
// scratch) to the next deltaLink, publishing every user page by page, and
// saves the new deltaLink once everything is acked. A round that fails
// midway is repeated from the saved link: its events carry the same IDs, so
// JetStream drops what was already stored.
func (w *Watcher) round(ctx context.Context) error {
	start := time.Now()
	saved, err := w.loadDeltaLink(ctx)
	if err != nil {
		return err
	}
	link, resync, pages, users := saved, saved == "", 0, 0
	log := w.log.With().Bool("full_sync", resync).Logger()
	for {
		var page graph.DeltaPage
		err := w.call(ctx, "users delta", func(ctx context.Context) (err error) {
			page, err = w.tracker.UsersDelta(ctx, link)
			return err
		})
		if err != nil && !resync && (graph.IsSyncStateNotFound(err) || (link == saved && graph.StatusOf(err) == http.StatusBadRequest)) {
			// An expired token (7 days for identity resources), or a saved
			// link Graph no longer understands: start over with a full sync.
			// Unchanged users come out with the IDs they had, so JetStream
			// deduplicates them, and the evaluator's rules are idempotent.
			log.Warn().Err(err).Msg("delta link unusable; full resync")
			w.stats.resyncs.Add(1)
			link, resync, pages, users = "", true, 0, 0
			log = w.log.With().Bool("full_sync", true).Logger()
			continue
		}
		if err != nil {
			return fmt.Errorf("delta page %d: %w", pages+1, err)
		}
		if err := w.publishUsers(ctx, page.Users, roundKey(saved, resync)); err != nil {
			return fmt.Errorf("delta page %d: %w", pages+1, err)
		}
		pages++
		users += len(page.Users)
		if page.DeltaLink != "" {
			if err := w.saveDeltaLink(ctx, page.DeltaLink); err != nil {
				return err
			}
			w.stats.rounds.Add(1)
			w.synced.Store(true)
			lvl := zerolog.DebugLevel
			if resync || users > 0 {
				lvl = zerolog.InfoLevel
			}
			log.WithLevel(lvl).Int("pages", pages).Int("users", users).Dur("took", time.Since(start)).Msg("delta round done")
			return nil
		}
		link = page.NextLink
	}
}

// publishUsers publishes one events.graph.user event per user and waits for
// JetStream to ack them all.
// roundKey tells rounds apart in event IDs: a retried round starts from the
// same saved link and keeps its IDs (JetStream drops what it stored), while a
// later round gets new ones, so a user who goes A -> B -> A within the
// duplicate window is not lost. Full syncs share one key: a resync after an
// expired token re-sends every unchanged user, and those must collapse.
func roundKey(savedLink string, full bool) string {
	if full {
		return "full"
	}
	sum := sha256.Sum256([]byte(savedLink))
	return hex.EncodeToString(sum[:4])
}

func (w *Watcher) publishUsers(ctx context.Context, users []graph.DeltaUser, round string) error {
	at := w.cfg.Now()
	for len(users) > 0 {
		n := min(len(users), publishBatch)
		if err := w.publishBatch(ctx, users[:n], at, round); err != nil {
			return err
		}
		users = users[n:]
	}
	return nil
}

func (w *Watcher) publishBatch(ctx context.Context, users []graph.DeltaUser, at time.Time, round string) error {
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	futures := make([]jetstream.PubAckFuture, 0, len(users))
	ids := make([]string, 0, len(users))
	for _, u := range users {
		cu := cloudUser(u)
		env, err := events.NewEnvelope(cu.EventID()+"."+round, events.SourceGraph, events.TypeCloudUser, at, cu)
		if err != nil {
			return err
		}
		data, err := json.Marshal(env)
		if err != nil {
			return fmt.Errorf("encoding event %s: %w", env.ID, err)
		}
		f, err := w.js.PublishAsync(env.Subject(), data, jetstream.WithMsgID(env.ID))
		if err != nil {
			return fmt.Errorf("publishing event %s: %w", env.ID, err)
		}
		futures = append(futures, f)
		ids = append(ids, env.ID)
	}
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			w.stats.users.Add(1)
			if ack.Duplicate {
				w.stats.duplicates.Add(1)
			} else {
				metrics.Ingested(events.SourceGraph, 1)
			}
		case err := <-f.Err():
			return fmt.Errorf("publishing event %s: %w", ids[i], err)
		case <-ctx.Done():
			return fmt.Errorf("publishing cloud user events: %w", ctx.Err())
		}
	}
	return nil
}

func cloudUser(u graph.DeltaUser) events.CloudUser {
	return events.CloudUser{
		ID: u.ID, UPN: u.UPN, Mail: u.Mail, ImmutableID: u.ImmutableID, SyncEnabled: u.SyncEnabled,
		AccountEnabled: u.AccountEnabled, PasswordPolicies: u.PasswordPolicies, LastPasswordChange: u.LastPasswordChange,
		PreferredLanguage: u.PreferredLanguage, Removed: u.Removed, Absent: u.Absent,
	}
}

func (w *Watcher) loadDeltaLink(ctx context.Context) (string, error) {
	e, err := w.cursors.Get(ctx, CursorKey)
	if natsx.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading delta link: %w", err)
	}
	return string(e.Value()), nil
}

// saveDeltaLink stores the link even when ctx has just ended: the round's
// events are stored, and recording that spares the next holder a repeat.
func (w *Watcher) saveDeltaLink(ctx context.Context, link string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := w.cursors.Put(ctx, CursorKey, []byte(link)); err != nil {
		return fmt.Errorf("saving delta link: %w", err)
	}
	return nil
}

// consumeTriggers consumes the durable trigger consumer until ctx ends (or
// stop is called), retrying when NATS is unavailable. Messages are acked on
// receipt: their only content is "run a round", which the kick records, and
// a replica taking over starts with a round anyway.
func (w *Watcher) consumeTriggers(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.keep(ctx, "consuming graph notifications failed", w.consumeTriggersOnce)
	}()
	return func() { cancel(); <-done }
}

func (w *Watcher) consumeTriggersOnce(ctx context.Context) error {
	cons, err := w.js.Consumer(ctx, natsx.StreamEvents, natsx.ConsumerGraphWatch)
	if err != nil {
		return fmt.Errorf("opening consumer %s: %w", natsx.ConsumerGraphWatch, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		w.stats.triggers.Add(1)
		w.kick()
		if err := m.Ack(); err != nil {
			w.log.Debug().Err(err).Msg("ack of a trigger failed; it will come again")
		}
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		w.log.Debug().Err(err).Msg("trigger consumer")
	}))
	if err != nil {
		return fmt.Errorf("consuming %s: %w", natsx.ConsumerGraphWatch, err)
	}
	<-ctx.Done()
	cc.Stop()
	return nil
}
