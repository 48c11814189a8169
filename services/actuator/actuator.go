// Package actuator turns actions into Graph writes: it finds the user's cloud
// account, picks the strategy for its kind (cloud-managed or synced), runs
// each step once (idempotency records in KV), retries what may succeed later
// and audits every outcome.
package actuator

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/actuator/budget"
	"github.com/pwsync/pwsync/services/actuator/cloudjoin"
	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/mustchange"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/shared/userstore"
)

// Deps is what the actuator needs from the process.
type Deps struct {
	JS       jetstream.JetStream
	Graph    graph.Client
	Settings config.Actuator
	Log      zerolog.Logger
	Now      func() time.Time // nil = time.Now
	// Budget schedules Graph writes under the tenant's write budget, by
	// priority, shared with the campaign runner of the same process; nil =
	// unlimited.
	Budget *budget.Scheduler
	// Join is the AD <-> Entra join kept in memory (see cloudjoin): a
	// require-change action of a joined user writes without reading Graph
	// first. nil = every action looks its user up in Graph. The caller
	// runs its sync (cloudjoin.Index.Run).
	Join *cloudjoin.Index
	// Notifier: notify and alert actions are delivered by services/actuator/notifier
	// through its own consumer (one replica at a time, paced); the
	// actuator acks them without doing anything.
	Notifier bool
	// Parking records the actions parked on purpose (an undo waiting for
	// Entra, Retry-After) for the process's readiness; nil = not recorded.
	Parking *natsx.Parking
}

// Service executes actions.
type Service struct {
	js       jetstream.JetStream
	graph    graph.Client
	done     jetstream.KeyValue
	identity *userstore.Store
	audit    *audit.Writer
	set      config.Actuator
	log      zerolog.Logger
	now      func() time.Time
	budget   *budget.Scheduler
	join     *cloudjoin.Index
	newPass  func() (string, error)
	notifier bool
	parking  *natsx.Parking
	// Graph calls in flight, per class: live work has its own
	// actuator.concurrency, so that lower-priority actions waiting for the
	// budget never hold the slots a live reset needs.
	liveSlots, lowSlots chan struct{}
}

// New opens the actuator's buckets.
func New(ctx context.Context, d Deps) (*Service, error) {
	done, err := natsx.Bucket(ctx, d.JS, natsx.BucketDone)
	if err != nil {
		return nil, err
	}
	identity, err := userstore.Open(ctx, d.JS)
	if err != nil {
		return nil, err
	}
	now := d.Now
	if now == nil {
		now = time.Now
	}
	return &Service{js: d.JS, graph: d.Graph, done: done, identity: identity,
		audit: audit.NewWriter(natsx.NewPublisher(d.JS), now), set: d.Settings, log: d.Log, now: now,
		budget: d.Budget, join: d.Join, newPass: mustchange.TemporaryPassword, notifier: d.Notifier, parking: d.Parking,
		liveSlots: make(chan struct{}, max(d.Settings.Concurrency, 1)),
		lowSlots:  make(chan struct{}, max(d.Settings.Concurrency, 1))}, nil
}

// NewBudget sizes the process's one write-budget scheduler (actuator.write_budget
// per write_window; campaigns.write_share caps campaign work) and holds the
// campaign's AD follow-ups to what the actuator's slots can wait on.
func NewBudget(set config.Actuator, campaignShare float64) *budget.Scheduler {
	b := budget.New(budget.Config{Limit: set.WriteBudget, Window: set.WriteWindow, CampaignShare: campaignShare,
		Reserve: budget.DefaultReserve(set.WriteBudget)})
	b.HoldFollowUps(followUpHold(set.Concurrency))
	return b
}

// followUpHold: a campaign's AD follow-ups outstanding at once; consumeSlots
// leaves live work room beyond them.
func followUpHold(concurrency int) int { return 2 * max(concurrency, 1) }

func consumeSlots(concurrency int) int { return 4 * max(concurrency, 1) }

// bulkRules are rule passes over many users at once: expiry enforcement
// priority (the names are the evaluator's rules.RuleExpiry,
// rules.RuleNeverExpires and evaluator.RuleBackfill).
var bulkRules = map[string]bool{"expiry": true, "never-expires": true, "backfill": true}

// priority places an action in the write budget: a campaign's (its own
// writes' cloud follow-ups, which the campaign marked), a bulk rule pass's,
// or live.
func (s *Service) priority(a events.Action) budget.Priority {
	switch {
	case a.Campaign != "":
		return budget.Campaign
	case a.Kind == events.ActionRequireChange && s.budget != nil && s.budget.OwnWrite(a.User.ObjectGUID):
		return budget.Campaign
	case bulkRules[a.Rule]:
		return budget.Expiry
	}
	return budget.Live
}

// Run consumes the ACTIONS stream until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	s.log.Info().Int("concurrency", s.set.Concurrency).Msg("actuator started")
	h := natsx.Process(context.WithoutCancel(ctx), s.log, 50*time.Second, s.parking, s.Handle)
	// More messages in hand than Graph calls in flight: those waiting for
	// the budget at a lower priority leave room for live ones behind them.
	return natsx.Consume(ctx, s.js, natsx.StreamActions, natsx.ConsumerActuator, consumeSlots(s.set.Concurrency), h)
}

// ErrNoCloudAccount: the AD user has no cloud account that pwsync may act on.
var ErrNoCloudAccount = errors.New("no cloud account")

// Handle executes one action.
func (s *Service) Handle(ctx context.Context, a events.Action, meta natsx.Meta) error {
	log := zerolog.Ctx(ctx).With().Str("action_id", a.ID).Str("action", string(a.Kind)).Str("upn", a.User.UPN).Logger()
	ctx = log.WithContext(ctx)
	run := &execution{s: s, a: a, delivery: meta.NumDelivered, prio: s.priority(a)}

	if s.notifier && (a.Kind == events.ActionNotify || a.Kind == events.ActionAlert) {
		return nil // delivered and audited by the notifier
	}
	if a.Kind == events.ActionADRequireChange || a.Kind == events.ActionDismissRisk || a.Kind == events.ActionCheckRisk {
		return nil // the AD writer's (services/actuator/adwrite)
	}
	if a.Kind == events.ActionNotify {
		return run.finish(ctx, events.OutcomeSkipped, "notifications are off (notify.enabled, notify.workflows_webhook_url)", nil)
	}
	if a.Kind == events.ActionAlert {
		// No user write: the alert is the audit record (and the log line an
		// alerting pipeline picks up).
		log.Error().Str("rule", a.Rule).Str("alert", a.Reason).Msg("alert")
		return run.finish(ctx, events.OutcomeOK, a.Reason, nil)
	}
	slots := s.liveSlots
	if run.prio != budget.Live {
		slots = s.lowSlots
		if s.budget != nil && run.prio == budget.Campaign {
			defer s.budget.Settled(a.User.ObjectGUID)
		}
	}
	select {
	case slots <- struct{}{}:
		defer func() { <-slots }()
	case <-ctx.Done():
		return ctx.Err()
	}
	if superseded, err := s.superseded(ctx, a); err != nil {
		return err
	} else if superseded {
		return run.finish(ctx, events.OutcomeSkipped, "superseded by a newer action for this user", nil)
	}
	u, local, err := s.lookup(ctx, a)
	if err != nil {
		return run.unresolved(ctx, err)
	}
	run.user, run.local = u, local
	err = run.do(ctx)
	if local && graph.IsNotFound(err) {
		// The join is stale (the account deleted, or recreated under a new
		// ID): forget it, look the user up in Graph and try once more.
		log.Info().Str("cloud_id", u.ID).Msg("cloud account not found by its joined ID; looking it up again")
		s.join.Remove(u.ID)
		if u, err = s.resolve(ctx, a.User, u.ID); err != nil {
			return run.unresolved(ctx, err)
		}
		run.user, run.local = u, false
		err = run.do(ctx)
	}
	var later *natsx.RetryLater
	switch {
	case errors.As(err, &later):
		return err // waiting (audited when the wait began), not failing
	case err == nil:
		if run.local {
			s.rememberJoin(ctx, a.User, run.user)
		}
		if err := run.recordResult(ctx); err != nil {
			return err
		}
		if err := s.markSeq(ctx, a); err != nil {
			return err
		}
		outcome := events.OutcomeOK
		if a.DryRun {
			outcome = events.OutcomeDryRun
		}
		return run.finish(ctx, outcome, "", nil)
	case errors.Is(err, natsx.ErrPermanent):
		_ = run.finish(ctx, events.OutcomeDeadLetter, err.Error(), err)
		return err
	default:
		_ = run.finish(ctx, events.OutcomeFailed, err.Error(), err) // retried by JetStream
		return err
	}
}

// superseded reports whether a newer action of the same user was applied
// already: actions of one user may be delivered out of order.
func (s *Service) superseded(ctx context.Context, a events.Action) (bool, error) {
	e, err := s.done.Get(ctx, seqKey(a))
	switch {
	case natsx.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("reading applied sequence of %s: %w", a.User.ObjectGUID, err)
	}
	last, _ := strconv.ParseInt(string(e.Value()), 10, 64)
	return a.Seq < last, nil
}

func (s *Service) markSeq(ctx context.Context, a events.Action) error {
	if _, err := s.done.Put(ctx, seqKey(a), []byte(strconv.FormatInt(a.Seq, 10))); err != nil {
		return fmt.Errorf("recording applied sequence of %s: %w", a.User.ObjectGUID, err)
	}
	return nil
}

// seqKey orders actions per user and family: require/clear form one
// sequence, passwordPolicies writes another.
func seqKey(a events.Action) string {
	family := "password"
	if a.Kind == events.ActionSetPasswordPolicies {
		family = "policies"
	}
	return events.KeySafe("seq." + family + "." + a.User.ObjectGUID)
}
