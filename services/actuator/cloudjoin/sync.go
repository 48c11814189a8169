package cloudjoin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
)

// Source is what the index reads from Graph (*msgraph.Client implements it).
type Source interface {
	ListUsers(ctx context.Context) ([]graph.User, error)
	UsersDelta(ctx context.Context, link string) (graph.DeltaPage, error)
}

// Sync says how the index is loaded and kept current.
type Sync struct {
	Source Source
	// Poll is the interval of the index's own delta poll, for when nothing
	// else follows delta (the Graph side is off); 0 = no poll of its own.
	Poll time.Duration
	// NC, when set, takes the events.graph.user events graphwatch publishes
	// (from whichever replica holds its lease), webhook-fast.
	NC  *nats.Conn
	Log zerolog.Logger
}

// subjectCloudUser is where graphwatch publishes delta items.
const subjectCloudUser = "events." + events.SourceGraph + "." + events.TypeCloudUser

// loadRetry is the pause after a failed load or delta round.
const loadRetry = 5 * time.Second

// Run loads the index and keeps it current until ctx ends. Failures are
// logged and retried: until loaded, every lookup misses and the actuator
// reads Graph as it did without the index.
func (ix *Index) Run(ctx context.Context, s Sync) error {
	log := s.Log.With().Str("component", "cloud_join").Logger()
	if s.NC != nil {
		sub, err := s.NC.Subscribe(subjectCloudUser, func(m *nats.Msg) {
			var env events.Envelope
			var cu events.CloudUser
			if json.Unmarshal(m.Data, &env) != nil || env.Decode(&cu) != nil {
				return
			}
			ix.ApplyCloud(cu)
		})
		if err != nil {
			return fmt.Errorf("subscribing to %s: %w", subjectCloudUser, err)
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	var link string
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		wait := s.Poll
		switch {
		case !ix.Loaded() || s.Poll > 0 && link == "":
			start := time.Now()
			l, n, err := ix.load(ctx, s)
			if err != nil {
				log.Error().Err(err).Dur("retry_in", loadRetry).Msg("loading the cloud join failed; lookups read Graph meanwhile")
				wait = loadRetry
				break
			}
			link = l
			log.Info().Int("users", n).Dur("took", time.Since(start)).Bool("delta_poll", s.Poll > 0).Msg("cloud join loaded")
		case s.Poll > 0:
			l, err := ix.follow(ctx, s.Source, link)
			switch {
			case graph.IsSyncStateNotFound(err) || graph.StatusOf(err) == http.StatusBadRequest:
				log.Warn().Err(err).Msg("delta link unusable; reloading the cloud join")
				link, wait = "", time.Millisecond
			case err != nil:
				log.Warn().Err(err).Msg("cloud join delta round failed; retrying from the same link")
				wait = max(s.Poll, loadRetry)
			default:
				link = l
			}
		}
		if wait == 0 {
			<-ctx.Done() // loaded and nothing to poll: the events keep it current
			return nil
		}
		timer.Reset(wait)
	}
}

// load takes a delta link from now (when polling), then reads every user:
// a change after the link is replayed by the next round, so none falls
// between the two reads.
func (ix *Index) load(ctx context.Context, s Sync) (link string, n int, err error) {
	if s.Poll > 0 {
		if link, err = ix.follow(ctx, s.Source, graph.DeltaLatest); err != nil {
			return "", 0, fmt.Errorf("starting delta: %w", err)
		}
	}
	users, err := s.Source.ListUsers(ctx)
	if err != nil {
		return "", 0, fmt.Errorf("listing users: %w", err)
	}
	ix.mu.Lock()
	for _, u := range users {
		ix.put(FromUser(u))
	}
	ix.loaded = true
	ix.mu.Unlock()
	return link, len(users), nil
}

// follow reads one delta round from link and applies it; it returns the
// round's deltaLink.
func (ix *Index) follow(ctx context.Context, src Source, link string) (string, error) {
	for {
		page, err := src.UsersDelta(ctx, link)
		if err != nil {
			return "", err
		}
		for _, d := range page.Users {
			ix.ApplyDelta(d)
		}
		if page.DeltaLink != "" {
			return page.DeltaLink, nil
		}
		if page.NextLink == "" {
			return "", fmt.Errorf("delta page with neither nextLink nor deltaLink")
		}
		link = page.NextLink
	}
}

// DefaultPoll is the delta poll interval when nothing else follows delta:
// a user's kind rarely changes, and a write Graph refuses for it is
// settled by reading the user (see the actuator), so this bounds how long
// a reset may take the old strategy.
const DefaultPoll = 10 * time.Second

// Keeper runs an index's sync as one of the process's services.
type Keeper struct {
	Index *Index
	Sync  Sync
}

// Run keeps the index until ctx ends.
func (k Keeper) Run(ctx context.Context) error { return k.Index.Run(ctx, k.Sync) }
