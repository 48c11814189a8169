// Package evaluator consumes events, keeps per-user state in KV and publishes
// the actions that the pure rules decide.
package evaluator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/metrics"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/shared/userstate"
)

// Deps is what the evaluator needs from the process.
type Deps struct {
	JS     jetstream.JetStream
	Policy rules.Policy
	Log    zerolog.Logger
	// Now is the clock (time.Now when nil): tests and the e2e harness move it.
	Now func() time.Time
	// Groups resolves Entra group membership for scope.include_entra_groups;
	// nil when none is configured.
	Groups *EntraGroups
	// Backfill: the brake on mass actions (backfill.go); Reevaluate: the
	// pass after a policy change (reevaluate.go); Holder names this replica
	// in their lease.
	Backfill   GateConfig
	Reevaluate ReevaluateConfig
	Holder     string
	// RiskHourlyCap: risk actions per hour published at once; more are held (risk.go).
	RiskHourlyCap int
	// Parking records the events parked on purpose (timers) for the
	// process's readiness; nil = not recorded.
	Parking *natsx.Parking
}

// Service evaluates events.
type Service struct {
	js       jetstream.JetStream
	users    jetstream.KeyValue
	identity jetstream.KeyValue
	now      func() time.Time
	pub      *natsx.Publisher
	audit    *audit.Writer
	policy   rules.Policy
	groups   *EntraGroups
	log      zerolog.Logger
	gate     *Gate
	leases   jetstream.KeyValue
	reeval   ReevaluateConfig
	holder   string
	riskCap  int
	parking  *natsx.Parking
}

// New opens the evaluator's buckets.
func New(ctx context.Context, d Deps) (*Service, error) {
	users, err := natsx.Bucket(ctx, d.JS, natsx.BucketUsers)
	if err != nil {
		return nil, err
	}
	identity, err := natsx.Bucket(ctx, d.JS, natsx.BucketIdentity)
	if err != nil {
		return nil, err
	}
	pub := natsx.NewPublisher(d.JS)
	now := d.Now
	if now == nil {
		now = time.Now
	}
	gate, err := NewGate(ctx, d.JS, d.Backfill, now, d.Log)
	if err != nil {
		return nil, err
	}
	leases, err := natsx.Bucket(ctx, d.JS, natsx.BucketLeases)
	if err != nil {
		return nil, err
	}
	return &Service{js: d.JS, users: users, identity: identity, now: now, pub: pub, audit: audit.NewWriter(pub, nil),
		policy: d.Policy, groups: d.Groups, log: d.Log, gate: gate, leases: leases, reeval: d.Reevaluate,
		holder: holderName(d.Holder), riskCap: d.RiskHourlyCap, parking: d.Parking}, nil
}

// Run consumes the EVENTS stream until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	s.log.Info().Bool("dry_run", s.policy.DryRun).Bool("expiry", s.policy.Expiry.Enabled).Msg("evaluator started")
	if s.groups != nil {
		go s.groups.Run(ctx)
	}
	go s.runGate(ctx)
	h := natsx.Process(context.WithoutCancel(ctx), s.log, 20*time.Second, s.parking, s.Handle)
	return natsx.Consume(ctx, s.js, natsx.StreamEvents, natsx.ConsumerEvaluator, 8, h)
}

// Handle evaluates one event.
func (s *Service) Handle(ctx context.Context, ev events.Envelope, _ natsx.Meta) error {
	switch {
	case ev.Source == events.SourceAD && ev.Type == events.TypeADUser:
		var u events.ADUser
		if err := ev.Decode(&u); err != nil {
			return natsx.Permanent(err)
		}
		if u.ObjectGUID == "" {
			return natsx.Permanent(fmt.Errorf("event %s: AD user without objectGUID", ev.ID))
		}
		if err := s.indexUPN(ctx, u); err != nil {
			return err
		}
		decide := func(st rules.State) rules.Result { return rules.EvaluateAD(s.currentPolicy(), st, ev, u) }
		var err error
		if u.FullSync {
			err = s.evaluateFullSync(ctx, ev, u, decide)
		} else {
			err = s.evaluate(ctx, ev, u.ObjectGUID, decide)
		}
		if err != nil {
			return err
		}
		return s.joinParked(ctx, u)
	case ev.Source == events.SourceAD && ev.Type == events.TypeADFullSync:
		var f events.ADFullSync
		if err := ev.Decode(&f); err != nil {
			return natsx.Permanent(err)
		}
		return s.gate.fullSyncDone(ctx, f)
	case ev.Source == events.SourceGraph && ev.Type == events.TypeCloudUser:
		var c events.CloudUser
		if err := ev.Decode(&c); err != nil {
			return natsx.Permanent(err)
		}
		guid, err := s.join(ctx, c)
		if err != nil {
			return err
		}
		if guid == "" {
			return s.park(ctx, ev, c)
		}
		return s.evaluate(ctx, ev, guid, func(st rules.State) rules.Result {
			return rules.EvaluateCloud(s.currentPolicy(), st, ev, c)
		})
	case ev.Source == events.SourceGraph && ev.Type == events.TypeGraphRisk:
		return s.handleRisk(ctx, ev)
	case ev.Source == events.SourceTimer && (ev.Type == events.TypeWriteback || ev.Type == events.TypeUndoBound):
		var t events.Timer
		if err := ev.Decode(&t); err != nil {
			return natsx.Permanent(err)
		}
		if wait := t.Due.Sub(s.now()); wait > 0 {
			return &natsx.RetryLater{After: wait, Err: errNotDue}
		}
		due := rules.EvaluateTimer // the writeback check
		if ev.Type == events.TypeUndoBound {
			due = rules.EvaluateUndoBound
		}
		return s.evaluate(ctx, ev, t.ObjectGUID, func(st rules.State) rules.Result {
			return due(s.currentPolicy(), st, ev, t)
		})
	case ev.Source == events.SourceTimer && ev.Type == events.TypeExpiry:
		var t events.ExpiryTimer
		if err := ev.Decode(&t); err != nil {
			return natsx.Permanent(err)
		}
		now := s.now()
		if wait := t.Due.Sub(now); wait > 0 {
			return &natsx.RetryLater{After: wait, Err: errNotDue}
		}
		return s.evaluate(ctx, ev, t.ObjectGUID, func(st rules.State) rules.Result {
			return rules.EvaluateExpiry(s.currentPolicy(), st, ev, t, now)
		})
	default:
		// Notifications only trigger delta rounds (ingest); the event stays in
		// EVENTS for replay and audit.
		zerolog.Ctx(ctx).Debug().Str("event_id", ev.ID).Str("source", ev.Source).Str("type", ev.Type).Msg("no rule for event")
		return nil
	}
}

var errNotDue = errors.New("timer not due yet")

// currentPolicy is the policy with the latest Entra group membership.
func (s *Service) currentPolicy() rules.Policy {
	p := s.policy
	if s.groups != nil {
		p.EntraMembers = s.groups.Members()
	}
	return p
}

// indexUPN keeps the indexes that join cloud accounts to AD users: the
// immutable ID (whatever the source anchor) and the UPN (organisations
// without sync) -> objectGUID.
func (s *Service) indexUPN(ctx context.Context, u events.ADUser) error {
	if u.Deleted {
		return nil
	}
	for _, key := range []string{userstate.UPNKey(u.UPN), userstate.ImmKey(u.ImmutableID)} {
		if key == "" {
			continue
		}
		if e, err := s.identity.Get(ctx, key); err == nil && string(e.Value()) == u.ObjectGUID {
			continue
		}
		if _, err := s.identity.Put(ctx, key, []byte(u.ObjectGUID)); err != nil {
			return fmt.Errorf("indexing %s: %w", key, err)
		}
	}
	return nil
}

// join finds the AD user of a cloud account: the objectGUID inside the
// onPremisesImmutableId, else the AD user with the same UPN. A cloud account
// with neither is reported, never guessed.
func (s *Service) join(ctx context.Context, c events.CloudUser) (string, error) {
	if c.ImmutableID != "" {
		// The index knows ms-DS-ConsistencyGuid anchors too; before the AD
		// user was seen, the objectGUID inside the default anchor will do.
		if g, err := s.lookup(ctx, userstate.ImmKey(c.ImmutableID)); g != "" || err != nil {
			return g, err
		}
		if g := events.GUIDFromImmutableID(c.ImmutableID); g != "" {
			return g, nil
		}
	}
	if c.UPN != "" {
		if g, err := s.lookup(ctx, userstate.UPNKey(c.UPN)); g != "" || err != nil {
			return g, err
		}
	}
	if !c.Removed {
		zerolog.Ctx(ctx).Debug().Str("cloud_id", c.ID).Str("upn", c.UPN).Msg("cloud account without an AD user")
	}
	return "", nil
}

// park keeps the event of a cloud account without an AD user (at
// userstate.ParkedKey: delta often runs before AD's full sync), to be joined
// when an AD user with its UPN is indexed.
func (s *Service) park(ctx context.Context, ev events.Envelope, c events.CloudUser) error {
	if c.Removed || c.UPN == "" {
		return nil
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encoding parked cloud user %s: %w", c.ID, err)
	}
	if _, err := s.identity.Put(ctx, userstate.ParkedKey(c.UPN), data); err != nil {
		return fmt.Errorf("parking cloud user %s: %w", c.ID, err)
	}
	return nil
}

// joinParked evaluates the parked cloud state of an AD user just indexed.
func (s *Service) joinParked(ctx context.Context, u events.ADUser) error {
	if u.UPN == "" || u.Deleted {
		return nil
	}
	key := userstate.ParkedKey(u.UPN)
	e, err := s.identity.Get(ctx, key)
	switch {
	case natsx.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("reading %s: %w", key, err)
	}
	var ev events.Envelope
	var c events.CloudUser
	if json.Unmarshal(e.Value(), &ev) == nil && ev.Decode(&c) == nil {
		if err := s.evaluate(ctx, ev, u.ObjectGUID, func(st rules.State) rules.Result {
			return rules.EvaluateCloud(s.currentPolicy(), st, ev, c)
		}); err != nil {
			return err
		}
	}
	// a newer parked state written meanwhile stays for the next AD event
	if err := s.identity.Delete(ctx, key, jetstream.LastRevision(e.Revision())); err != nil && !isWrongSequence(err) {
		return fmt.Errorf("deleting %s: %w", key, err)
	}
	return nil
}

func (s *Service) lookup(ctx context.Context, key string) (string, error) {
	e, err := s.identity.Get(ctx, key)
	switch {
	case err == nil:
		return string(e.Value()), nil
	case natsx.IsNotFound(err):
		return "", nil
	}
	return "", fmt.Errorf("reading identity index %s: %w", key, err)
}

// evaluate loads a user's state, applies decide, publishes what it decided
// and saves the state. It retries at once when another event of the same
// user saved in between (optimistic concurrency) instead of waiting for a
// redelivery: a must-change reset is two modifies that often arrive together.
func (s *Service) evaluate(ctx context.Context, ev events.Envelope, guid string, decide func(rules.State) rules.Result) error {
	return s.evaluateInto(ctx, ev, guid, decide, nil)
}

// evaluateInto is evaluate with the backfill brake: batch names, from the
// state before the event, the batch the decided actions are staged in
// instead of published ("" = publish; alerts are always published).
func (s *Service) evaluateInto(ctx context.Context, ev events.Envelope, guid string, decide func(rules.State) rules.Result, batch func(rules.State) string) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = s.evaluateOnce(ctx, ev, guid, decide, batch); !errors.Is(err, errConflict) {
			return err
		}
	}
	return err
}

var errConflict = errors.New("concurrent update")

func (s *Service) evaluateOnce(ctx context.Context, ev events.Envelope, guid string, decide func(rules.State) rules.Result, batch func(rules.State) string) error {
	key := userstate.UserKey(guid)
	state, rev, err := s.load(ctx, key)
	if err != nil {
		return err
	}
	res := decide(state)
	stageIn := ""
	if batch != nil {
		stageIn = batch(state)
	}

	// Actions first, state last: a crash in between redelivers the event,
	// which decides the same actions with the same IDs (deduplicated by
	// JetStream), whereas state saved first would lose them.
	for _, a := range res.Actions {
		if done, err := s.brake(ctx, stageIn, a); err != nil || done {
			if err != nil {
				return err
			}
			continue
		}
		if _, err := s.pub.PublishJSON(ctx, a.Subject(), a.ID, a); err != nil {
			return fmt.Errorf("publishing action %s: %w", a.ID, err)
		}
		zerolog.Ctx(ctx).Info().Str("event_id", ev.ID).Str("rule", a.Rule).Str("action", string(a.Kind)).
			Str("action_id", a.ID).Str("upn", a.User.UPN).Bool("dry_run", a.DryRun).Msg("action decided")
	}
	for _, t := range res.Timers {
		id := t.EventID()
		tev, err := events.NewEnvelope(id, events.SourceTimer, t.Type(), ev.Time, t)
		if err != nil {
			return err
		}
		if _, err := s.pub.PublishJSON(ctx, tev.Subject(), tev.ID, tev); err != nil {
			return fmt.Errorf("scheduling %s: %w", id, err)
		}
	}
	ref := rules.Ref(res.State.AD)
	for _, d := range res.Decisions {
		metrics.Decision(d.Rule, d.Outcome)
		rec := events.AuditRecord{Kind: "decision", EventID: ev.ID, Rule: d.Rule, User: ref, Outcome: d.Outcome, Detail: d.Reason}
		for _, a := range res.Actions {
			if d.Outcome == "act" && a.Rule == d.Rule {
				rec.ActionID, rec.Action = a.ID, string(a.Kind)
			}
		}
		if err := s.audit.Write(ctx, rec); err != nil {
			return err
		}
	}
	if !res.Changed {
		return nil
	}
	return s.save(ctx, key, rev, res.State)
}

func (s *Service) load(ctx context.Context, key string) (rules.State, uint64, error) {
	var st rules.State
	e, err := s.users.Get(ctx, key)
	switch {
	case natsx.IsNotFound(err):
		return st, 0, nil
	case err != nil:
		return st, 0, fmt.Errorf("loading state of %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		// A corrupt record must not block the user forever: start afresh.
		zerolog.Ctx(ctx).Error().Err(err).Str("user_key", key).Msg("corrupt user state; starting from empty state")
		return rules.State{}, e.Revision(), nil
	}
	return st, e.Revision(), nil
}

// save writes the state only if nobody else wrote it since load: a conflict
// redelivers the event, which is then evaluated against the newer state.
func (s *Service) save(ctx context.Context, key string, rev uint64, st rules.State) error {
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encoding state of %s: %w", key, err)
	}
	if rev == 0 {
		_, err = s.users.Create(ctx, key, data)
	} else {
		_, err = s.users.Update(ctx, key, data, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
		return fmt.Errorf("saving state of %s: %w: %w", key, errConflict, err)
	}
	if err != nil {
		return fmt.Errorf("saving state of %s: %w", key, err)
	}
	return nil
}

// isWrongSequence reports the server's "wrong last sequence" answer to an
// Update whose revision is no longer the latest.
func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}
