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
	"github.com/pwsync/pwsync/shared/natsx"
)

// Deps is what the evaluator needs from the process.
type Deps struct {
	JS     jetstream.JetStream
	Policy rules.Policy
	Log    zerolog.Logger
}

// Service evaluates events.
type Service struct {
	js     jetstream.JetStream
	users  jetstream.KeyValue
	pub    *natsx.Publisher
	audit  *audit.Writer
	policy rules.Policy
	log    zerolog.Logger
}

// New opens the evaluator's buckets.
func New(ctx context.Context, d Deps) (*Service, error) {
	users, err := natsx.Bucket(ctx, d.JS, natsx.BucketUsers)
	if err != nil {
		return nil, err
	}
	pub := natsx.NewPublisher(d.JS)
	return &Service{js: d.JS, users: users, pub: pub, audit: audit.NewWriter(pub, nil), policy: d.Policy, log: d.Log}, nil
}

// Run consumes the EVENTS stream until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	s.log.Info().Bool("dry_run", s.policy.DryRun).Msg("evaluator started")
	h := natsx.Process(context.WithoutCancel(ctx), s.log, 20*time.Second, s.Handle)
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
		return s.handleADUser(ctx, ev, u)
	default:
		// Other sources are handled by later rules; acknowledging keeps the
		// stream moving and the event stays in EVENTS for replay.
		zerolog.Ctx(ctx).Debug().Str("event_id", ev.ID).Str("source", ev.Source).Str("type", ev.Type).Msg("no rule for event")
		return nil
	}
}

// handleADUser retries at once when another event of the same user saved its
// state in between (optimistic concurrency), instead of waiting for a
// redelivery: a must-change reset is two modifies that often arrive together.
func (s *Service) handleADUser(ctx context.Context, ev events.Envelope, u events.ADUser) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = s.evaluateADUser(ctx, ev, u); !errors.Is(err, errConflict) {
			return err
		}
	}
	return err
}

var errConflict = errors.New("concurrent update")

func (s *Service) evaluateADUser(ctx context.Context, ev events.Envelope, u events.ADUser) error {
	key := events.KeySafe(u.ObjectGUID)
	state, rev, err := s.load(ctx, key)
	if err != nil {
		return err
	}
	res := rules.EvaluateAD(s.policy, state, ev, u)

	// Actions first, state last: a crash in between redelivers the event,
	// which decides the same actions with the same IDs (deduplicated by
	// JetStream), whereas state saved first would lose them.
	for _, a := range res.Actions {
		if _, err := s.pub.PublishJSON(ctx, a.Subject(), a.ID, a); err != nil {
			return fmt.Errorf("publishing action %s: %w", a.ID, err)
		}
		zerolog.Ctx(ctx).Info().Str("event_id", ev.ID).Str("rule", a.Rule).Str("action", string(a.Kind)).
			Str("action_id", a.ID).Str("upn", u.UPN).Bool("dry_run", a.DryRun).Msg("action decided")
	}
	for _, d := range res.Decisions {
		rec := events.AuditRecord{Kind: "decision", EventID: ev.ID, Rule: d.Rule, User: rules.Ref(u),
			Outcome: d.Outcome, Detail: d.Reason}
		if d.Outcome == "act" && len(res.Actions) > 0 {
			rec.ActionID, rec.Action = res.Actions[0].ID, string(res.Actions[0].Kind)
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
