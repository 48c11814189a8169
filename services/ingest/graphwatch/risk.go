package graphwatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/lease"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/shared/retry"
)

// The risk poller reads Entra ID Protection: risky users updated since its
// cursor and the detections of the lookback window, and publishes one
// events.graph.risk per user whose risk changed (or who has a detection
// newer than the cursor), with the user's cloud identity. Neither resource
// supports change notifications, hence the poll. One replica polls (lease
// natsx.LeaseGraphRisk); the cursor lives in natsx.BucketCursors, saved
// after a round's events are published, so a crash re-reads, never skips.

// RiskCursorKey holds the risk poller's cursor in natsx.BucketCursors.
const RiskCursorKey = "graph.risk"

// RiskConfig configures the risk poller.
type RiskConfig struct {
	Interval   time.Duration // between rounds (default 1m)
	Lookback   time.Duration // first round's window and each round's overlap for detections (default 1h)
	EventTypes []string      // riskEventTypes read; empty = all
	Holder     string        // this replica in the lease (default hostname-pid)
	Now        func() time.Time
}

// RiskPoller polls Identity Protection. Create it with NewRiskPoller and
// run it once with Run.
type RiskPoller struct {
	cfg     RiskConfig
	risk    graph.RiskReader
	users   graph.Client
	cursors jetstream.KeyValue
	pub     *natsx.Publisher
	lease   *lease.Lease
	log     zerolog.Logger

	rounds     atomic.Uint64
	published  atomic.Uint64
	unlicensed atomic.Bool // the last round got Graph's 403
}

type riskCursor struct {
	Users      time.Time `json:"users"`      // newest riskLastUpdatedDateTime read
	Detections time.Time `json:"detections"` // newest detectedDateTime read
}

// NewRiskPoller opens the buckets.
func NewRiskPoller(ctx context.Context, cfg RiskConfig, r graph.RiskReader, users graph.Client, js jetstream.JetStream, log zerolog.Logger) (*RiskPoller, error) {
	if r == nil || users == nil || js == nil {
		return nil, errors.New("graphwatch: NewRiskPoller needs a graph.RiskReader, a graph.Client and JetStream")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.Lookback <= 0 {
		cfg.Lookback = time.Hour
	}
	if cfg.Holder == "" {
		cfg.Holder = lease.DefaultHolder()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cursors, err := natsx.Bucket(ctx, js, natsx.BucketCursors)
	if err != nil {
		return nil, fmt.Errorf("graphwatch: %w", err)
	}
	leases, err := natsx.Bucket(ctx, js, natsx.BucketLeases)
	if err != nil {
		return nil, fmt.Errorf("graphwatch: %w", err)
	}
	log = log.With().Str("component", "riskwatch").Logger()
	return &RiskPoller{cfg: cfg, risk: r, users: users, cursors: cursors, pub: natsx.NewPublisher(js),
		lease: lease.New(leases, natsx.LeaseGraphRisk, cfg.Holder, natsx.LeaseRenew, log), log: log}, nil
}

// Run polls while this replica holds the lease, until ctx ends.
func (p *RiskPoller) Run(ctx context.Context) error {
	retry.Forever(ctx, retry.Constant(natsx.LeaseRenew), func(ctx context.Context) (bool, error) {
		return false, p.lease.Run(ctx, p.loop)
	}, retry.Notify(func(err error, _ time.Duration) { p.log.Error().Err(err).Msg("risk lease loop ended; restarting") }))
	return nil
}

// Unlicensed reports whether the last round got Graph's 403: no Entra ID
// P2, or the app lacks IdentityRiskyUser.Read.All / IdentityRiskEvent.Read.All.
func (p *RiskPoller) Unlicensed() bool { return p.unlicensed.Load() }

// Rounds and Published count completed rounds and published events.
func (p *RiskPoller) Rounds() uint64    { return p.rounds.Load() }
func (p *RiskPoller) Published() uint64 { return p.published.Load() }

func (p *RiskPoller) loop(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := p.Round(ctx); err != nil && ctx.Err() == nil {
			if graph.IsUnlicensed(err) {
				if !p.unlicensed.Swap(true) {
					p.log.Error().Err(err).Msg("Identity Protection refused (403): the tenant needs Entra ID P2 and the app IdentityRiskyUser.Read.All and IdentityRiskEvent.Read.All; risk is not read")
				}
			} else {
				p.log.Warn().Err(err).Msg("risk round failed; next round at the interval")
			}
		}
		t.Reset(p.cfg.Interval)
	}
}

// Round reads once and publishes; it returns the number of events
// published (duplicates included).
func (p *RiskPoller) Round(ctx context.Context) (int, error) {
	cur, rev, err := p.loadCursor(ctx)
	if err != nil {
		return 0, err
	}
	now := p.cfg.Now().UTC()
	if cur.Users.IsZero() {
		cur.Users = now.Add(-p.cfg.Lookback)
	}
	if cur.Detections.IsZero() {
		cur.Detections = now.Add(-p.cfg.Lookback)
	}
	changed, err := p.risk.RiskyUsersSince(ctx, cur.Users)
	if err != nil {
		return 0, fmt.Errorf("reading risky users: %w", err)
	}
	dets, err := p.risk.RiskDetectionsSince(ctx, cur.Detections.Add(-p.cfg.Lookback), p.cfg.EventTypes)
	if err != nil {
		return 0, fmt.Errorf("reading risk detections: %w", err)
	}
	p.unlicensed.Store(false)

	next := cur
	byUser := map[string][]events.RiskDetection{}
	fresh := map[string]bool{} // users with a detection newer than the cursor
	for _, d := range dets {
		byUser[d.UserID] = append(byUser[d.UserID], d)
		if d.Detected.After(cur.Detections) {
			fresh[d.UserID] = true
		}
		if d.Detected.After(next.Detections) {
			next.Detections = d.Detected
		}
	}
	var order []events.RiskyUser
	seen := map[string]bool{}
	for _, u := range changed {
		order, seen[u.ID] = append(order, u), true
		if u.Updated.After(next.Users) {
			next.Users = u.Updated
		}
	}
	for id := range fresh {
		if seen[id] {
			continue
		}
		u, err := p.risk.RiskyUser(ctx, id)
		if err != nil {
			return 0, fmt.Errorf("reading risky user %s: %w", id, err)
		}
		order, seen[id] = append(order, *u), true
	}
	n := 0
	for _, u := range order {
		ev := events.RiskEvent{User: u, Detections: byUser[u.ID]}
		cu, err := p.users.GetUser(ctx, u.ID)
		switch {
		case graph.IsNotFound(err):
			// deleted since: published without a cloud identity (not joined)
		case err != nil:
			return n, fmt.Errorf("reading user %s: %w", u.ID, err)
		default:
			ev.Cloud = &events.CloudUser{ID: cu.ID, UPN: cu.UPN, Mail: cu.Mail, ImmutableID: cu.ImmutableID,
				SyncEnabled: cu.SyncEnabled, AccountEnabled: cu.AccountEnabled}
		}
		env, err := events.NewEnvelope(ev.EventID(), events.SourceGraph, events.TypeGraphRisk, now, ev)
		if err != nil {
			return n, err
		}
		dup, err := p.pub.PublishJSON(ctx, env.Subject(), env.ID, env)
		if err != nil {
			return n, fmt.Errorf("publishing %s: %w", env.ID, err)
		}
		n++
		p.published.Add(1)
		lvl := p.log.Info()
		if dup {
			lvl = p.log.Debug() // the same state read again: the cursor's second is inclusive
		}
		lvl.Str("event_id", env.ID).Str("cloud_id", u.ID).Str("upn", u.UPN).Str("risk_level", u.Level).
			Str("risk_state", u.State).Int("detections", len(ev.Detections)).Msg("risk event published")
	}
	if next != cur || rev == 0 {
		if err := p.saveCursor(ctx, next); err != nil {
			return n, err
		}
	}
	p.rounds.Add(1)
	return n, nil
}

func (p *RiskPoller) loadCursor(ctx context.Context) (riskCursor, uint64, error) {
	var c riskCursor
	e, err := p.cursors.Get(ctx, RiskCursorKey)
	switch {
	case natsx.IsNotFound(err):
		return c, 0, nil
	case err != nil:
		return c, 0, fmt.Errorf("reading %s: %w", RiskCursorKey, err)
	}
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		p.log.Error().Err(err).Msg("corrupt risk cursor; reading the lookback window again")
		return riskCursor{}, e.Revision(), nil
	}
	return c, e.Revision(), nil
}

func (p *RiskPoller) saveCursor(ctx context.Context, c riskCursor) error {
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encoding risk cursor: %w", err)
	}
	if _, err := p.cursors.Put(ctx, RiskCursorKey, data); err != nil {
		return fmt.Errorf("saving %s: %w", RiskCursorKey, err)
	}
	return nil
}
