// Package actuator turns actions into Graph writes: it finds the user's cloud
// account, picks the strategy for its kind (cloud-managed or synced), runs
// each step once (idempotency records in KV), retries what may succeed later
// and audits every outcome.
package actuator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/actuator/budget"
	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/metrics"
	"github.com/pwsync/pwsync/shared/mustchange"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/shared/userstate"
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
	// Notifier: notify and alert actions are delivered by services/actuator/notifier
	// through its own consumer (one replica at a time, paced); the
	// actuator acks them without doing anything.
	Notifier bool
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
	newPass  func() (string, error)
	notifier bool
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
		budget: d.Budget, newPass: mustchange.TemporaryPassword, notifier: d.Notifier,
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
	h := natsx.Process(context.WithoutCancel(ctx), s.log, 50*time.Second, s.Handle)
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
	u, err := s.resolve(ctx, a.User)
	if err != nil {
		if errors.Is(err, ErrNoCloudAccount) || errors.Is(err, natsx.ErrPermanent) {
			_ = run.finish(ctx, events.OutcomeDeadLetter, err.Error(), nil)
			return natsx.Permanent(err)
		}
		return err
	}
	run.user = u
	switch a.Kind {
	case events.ActionRequireChange:
		err = run.requireChange(ctx)
	case events.ActionClearChange:
		err = run.clearChange(ctx)
	case events.ActionSetPasswordPolicies:
		err = run.setPolicies(ctx)
	default:
		err = natsx.Permanent(fmt.Errorf("unknown action kind %q", a.Kind))
	}
	var later *natsx.RetryLater
	switch {
	case errors.As(err, &later):
		return err // waiting (audited when the wait began), not failing
	case err == nil:
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

// execution is one action being carried out.
type execution struct {
	s        *Service
	a        events.Action
	user     *graph.User
	done     []string // steps carried out (now or before a redelivery)
	delivery uint64   // JetStream's delivery count of the action
	prio     budget.Priority
}

// requireChange makes the cloud account demand a new password.
func (x *execution) requireChange(ctx context.Context) error {
	set := x.s.set
	if x.user.SyncEnabled && !set.Synced.TryCloudFlag {
		return x.syncedChain(ctx)
	}
	switch {
	case x.user.ForceChangeNextSignIn:
		x.audit(ctx, "set_force_change", events.OutcomeSkipped, 0, "already required in the cloud")
	default:
		// A PATCH whose answer was lost (Graph may apply a write and answer
		// 5xx, or never answer) is read back before it is sent again.
		err := x.stepChecked(ctx, "set_force_change", func(ctx context.Context, _ time.Time) (bool, error) {
			u, err := x.s.graph.GetUser(ctx, x.user.ID)
			if err != nil {
				return false, err
			}
			return u.ForceChangeNextSignIn && (!set.CloudManaged.WithMFA || u.ForceChangeWithMFA), nil
		}, func(ctx context.Context) error {
			return x.s.graph.SetForceChange(ctx, x.user.ID, true, set.CloudManaged.WithMFA)
		})
		if graph.IsOnPremMastered(err) && x.user.SyncEnabled {
			// Mastered on-prem, by Graph's own words and by the user's
			// onPremisesSyncEnabled: Graph will refuse this write every
			// time, so record it as settled and take the chain instead.
			if err := x.markDone(ctx, "set_force_change"); err != nil {
				return err
			}
			return x.syncedChain(ctx)
		}
		if err != nil {
			// Any other refusal (another 400, or "on-premises mastered" for
			// a user Graph itself reports as cloud-managed) is not the
			// synced case: a dead letter that quotes Graph's message.
			return refused(err)
		}
		if set.CloudManaged.Verify && !x.a.DryRun {
			took, err := x.verifyFlag(ctx)
			if err != nil {
				return err
			}
			if !took {
				if err := x.fallback(ctx); err != nil {
					return err
				}
			}
		}
	}
	if set.CloudManaged.RevokeSessions {
		return x.revoke(ctx)
	}
	return nil
}

// refused turns Graph's 4xx refusal of a step into a dead letter whose
// detail quotes Graph's code and message; other errors pass unchanged (a
// 4xx is permanent already, see retry; this only says why).
func refused(err error) error {
	var ge *graph.Error
	if !errors.As(err, &ge) || ge.Status < 400 || ge.Status >= 500 || ge.Status == http.StatusTooManyRequests ||
		ge.Status == http.StatusRequestTimeout {
		return err
	}
	return natsx.Permanent(fmt.Errorf("refused by Graph (%d %s): %q: %w", ge.Status, ge.Code, ge.Message, err))
}

// revoke signs the user out everywhere, once. A second revoke is not
// harmless (it signs out again whoever signed in between), and Graph cannot
// tell it from the first, so a lost answer (timeout, reset, a crash right
// after Graph answered) is settled by reading signInSessionsValidFromDateTime.
func (x *execution) revoke(ctx context.Context) error {
	return x.stepChecked(ctx, "revoke_sessions", func(ctx context.Context, since time.Time) (bool, error) {
		u, err := x.s.graph.GetUser(ctx, x.user.ID)
		if err != nil {
			return false, err
		}
		return !u.SessionsValidFrom.IsZero() && !u.SessionsValidFrom.Before(since.Add(-revokeClockSkew)), nil
	}, func(ctx context.Context) error {
		return x.s.graph.RevokeSessions(ctx, x.user.ID)
	})
}

// revokeClockSkew is how far Graph's clock may be behind ours when checking
// whether an earlier revoke took effect.
const revokeClockSkew = 5 * time.Second

// verifyFlag reads passwordProfile back: a PATCH of the flag alone has been
// reported to answer 204 and change nothing (microsoft-graph-docs#4267).
func (x *execution) verifyFlag(ctx context.Context) (bool, error) {
	var took bool
	err := x.s.retry(ctx, "verify_force_change", func(ctx context.Context) error {
		u, err := x.s.graph.GetUser(ctx, x.user.ID)
		if err != nil {
			return err
		}
		took = mustchange.Took(*u)
		return nil
	})
	if err != nil {
		return false, err
	}
	outcome, detail := events.OutcomeOK, "flag confirmed by read-back"
	if !took {
		outcome, detail = events.OutcomeFailed, mustchange.MissingDetail(x.s.set.CloudManaged.Fallback)
	}
	x.audit(ctx, "verify_force_change", outcome, 0, detail)
	return took, nil
}

func (x *execution) fallback(ctx context.Context) error {
	switch x.s.set.CloudManaged.Fallback {
	case mustchange.FallbackTemporaryPassword:
		// The password itself is never logged or audited; the user gets a
		// new one through the helpdesk or self-service reset.
		// Sent twice, a second random password would replace the first:
		// a lost answer is settled by lastPasswordChangeDateTime.
		return x.stepChecked(ctx, string(mustchange.WriteTemporaryPassword), func(ctx context.Context, since time.Time) (bool, error) {
			u, err := x.s.graph.GetUser(ctx, x.user.ID)
			if err != nil {
				return false, err
			}
			return !u.LastPasswordChange.IsZero() && !u.LastPasswordChange.Before(since.Add(-revokeClockSkew)), nil
		}, func(ctx context.Context) error {
			pw, err := x.s.newPass()
			if err != nil {
				return natsx.Permanent(err)
			}
			return x.s.graph.SetPassword(ctx, x.user.ID, pw, true)
		})
	case mustchange.FallbackChain:
		return x.syncedChain(ctx)
	default:
		return natsx.Permanent(errors.New("forceChangePasswordNextSignIn did not take and no fallback is configured"))
	}
}

// syncedChain is the must-change strategy where Graph refuses passwordProfile
// writes: sign the user out everywhere and put them in the group a
// Conditional Access policy blocks until the password is changed.
func (x *execution) syncedChain(ctx context.Context) error {
	set := x.s.set
	if !set.Synced.RevokeSessions && set.Synced.PendingGroupID == "" {
		return natsx.Permanent(errors.New("synced user and no chain configured (actuator.synced.revoke_sessions, actuator.synced.pending_group_id)"))
	}
	if set.Synced.RevokeSessions {
		if err := x.revoke(ctx); err != nil {
			return err
		}
	}
	if g := set.Synced.PendingGroupID; g != "" {
		// An add whose answer was lost is settled by asking Graph whether
		// the user is a member; a client that cannot ask sends it again,
		// and Graph's "already exist" answer is success.
		return x.stepChecked(ctx, "add_pending_group", func(ctx context.Context, _ time.Time) (bool, error) {
			mc, ok := x.s.graph.(graph.MemberChecker)
			if !ok {
				return false, nil
			}
			return mc.IsGroupMember(ctx, g, x.user.ID)
		}, func(ctx context.Context) error {
			return x.s.graph.AddGroupMember(ctx, g, x.user.ID)
		})
	}
	return nil
}

// clearChange undoes what requireChange did that is no longer wanted.
func (x *execution) clearChange(ctx context.Context) error {
	if g := x.a.AwaitCloud; g != nil && !x.a.DryRun {
		if done, err := x.awaitCloud(ctx, *g); done || err != nil {
			return err
		}
	}
	set := x.s.set
	if set.Undo.ClearCloudFlag && !x.user.SyncEnabled && (x.user.ForceChangeNextSignIn || x.user.ForceChangeWithMFA) {
		if err := x.step(ctx, "clear_force_change", func(ctx context.Context) error {
			return x.s.graph.SetForceChange(ctx, x.user.ID, false, false)
		}); err != nil {
			return err
		}
	}
	if g := set.Synced.PendingGroupID; g != "" && set.Undo.RemoveFromPendingGroup {
		added, err := x.undoneDid(ctx, "add_pending_group")
		if err != nil {
			return err
		}
		if !added {
			x.audit(ctx, "remove_pending_group", events.OutcomeSkipped, 0, "pwsync did not add this user to the group")
			return nil
		}
		return x.step(ctx, "remove_pending_group", func(ctx context.Context) error {
			return x.s.graph.RemoveGroupMember(ctx, g, x.user.ID)
		})
	}
	return nil
}

// awaitCloud holds an undo decided without the user's cloud state until
// Entra has the new password (see events.UndoGate), reading the user on
// each delivery. done means the undo is over without undoing anything.
func (x *execution) awaitCloud(ctx context.Context, g events.UndoGate) (done bool, err error) {
	u, since, what := x.user, g.ADPasswordSet, "the AD password set at "+g.ADPasswordSet.UTC().Format(time.RFC3339)+" (password hash sync)"
	if !u.SyncEnabled {
		// pwsync's own temporary password (fallback) comes seconds after
		since, what = g.RequiredAt.Add(30*time.Second), "a cloud password change after pwsync required one"
		if since.IsZero() {
			return false, nil // not known when it was required: undo as before
		}
	}
	has := !u.LastPasswordChange.IsZero() && !u.LastPasswordChange.Before(since.Add(-undoClockSkew))
	now := x.s.now()
	// the last deliveries are kept for the bound's outcome: JetStream stops
	// redelivering after natsx.MaxDeliver
	bound := !now.Before(g.Until) || x.delivery+2 >= natsx.MaxDeliver
	switch {
	case has:
		x.audit(ctx, "await_cloud", events.OutcomeOK, 0, "Entra has "+what+": lastPasswordChangeDateTime "+u.LastPasswordChange.UTC().Format(time.RFC3339))
		return false, nil
	case !bound:
		if x.delivery <= 1 {
			x.audit(ctx, "await_cloud", events.OutcomeWaiting, 0, "undo waits until Entra has "+what+", at most until "+g.Until.UTC().Format(time.RFC3339))
		}
		wait := max(min(g.Until.Sub(now), undoPoll(g)), time.Second)
		return false, &natsx.RetryLater{After: wait, Err: errAwaitingCloud}
	case u.SyncEnabled:
		msg := "password hash sync did not carry " + what + " to Entra by " + g.Until.UTC().Format(time.RFC3339) +
			": lifting the block anyway (until it arrives, Entra still accepts the previous password); check Entra Connect's password hash sync"
		x.audit(ctx, "await_cloud", events.OutcomeFailed, 0, msg)
		return false, x.s.alert(ctx, x.a, msg)
	default:
		x.audit(ctx, "await_cloud", events.OutcomeSkipped, 0, "the user has not changed the cloud password by "+g.Until.UTC().Format(time.RFC3339)+
			": the must-change flag and the pending group stay until they do (or an admin lifts them)")
		return true, nil
	}
}

var errAwaitingCloud = errors.New("waiting for Entra to have the new password")

// undoClockSkew absorbs clock differences between the DC and Entra.
const undoClockSkew = 5 * time.Second

// undoPoll spreads a gate's reads over the wait: a few reads, not a storm.
func undoPoll(g events.UndoGate) time.Duration {
	return max(g.Until.Sub(g.ADPasswordSet)/6, 15*time.Second)
}

// alert publishes an admin alert about action a (delivered by the notifier).
func (s *Service) alert(ctx context.Context, a events.Action, msg string) error {
	al := events.Action{ID: events.KeySafe("alert." + a.ID), Kind: events.ActionAlert, Rule: "password-hash-sync", Reason: msg,
		EventID: a.EventID, EventTime: a.EventTime, User: a.User, Seq: a.Seq}
	if _, err := natsx.NewPublisher(s.js).PublishJSON(ctx, al.Subject(), al.ID, al); err != nil {
		return fmt.Errorf("publishing alert %s: %w", al.ID, err)
	}
	return nil
}

func resultKey(actionID string) string { return events.KeySafe("result." + actionID) }

// recordResult keeps which steps an action carried out, so that undoing it
// writes only what it did.
func (x *execution) recordResult(ctx context.Context) error {
	if x.a.DryRun {
		return nil
	}
	data, _ := json.Marshal(x.done)
	if _, err := x.s.done.Put(ctx, resultKey(x.a.ID), data); err != nil {
		return fmt.Errorf("recording result of %s: %w", x.a.ID, err)
	}
	return nil
}

// undoneDid reports whether the action being undone carried out step. When
// that is unknown (no Undoes, or its record expired) it answers true: an
// extra idempotent removal is better than a user left blocked.
func (x *execution) undoneDid(ctx context.Context, step string) (bool, error) {
	if x.a.Undoes == "" {
		return true, nil
	}
	e, err := x.s.done.Get(ctx, resultKey(x.a.Undoes))
	switch {
	case natsx.IsNotFound(err):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("reading result of %s: %w", x.a.Undoes, err)
	}
	var steps []string
	if json.Unmarshal(e.Value(), &steps) != nil {
		return true, nil
	}
	return slices.Contains(steps, step), nil
}

// setPolicies writes passwordPolicies unless the cloud already has it (our
// own earlier write, or someone fixed it meanwhile).
func (x *execution) setPolicies(ctx context.Context) error {
	if events.HasPolicy(x.user.PasswordPolicies, events.PolicyDisablePasswordExpiration) ==
		events.HasPolicy(x.a.Policies, events.PolicyDisablePasswordExpiration) {
		x.audit(ctx, "set_password_policies", events.OutcomeSkipped, 0, "already "+x.user.PasswordPolicies)
		return nil
	}
	want := events.HasPolicy(x.a.Policies, events.PolicyDisablePasswordExpiration)
	return x.stepChecked(ctx, "set_password_policies", func(ctx context.Context, _ time.Time) (bool, error) {
		u, err := x.s.graph.GetUser(ctx, x.user.ID)
		if err != nil {
			return false, err
		}
		return events.HasPolicy(u.PasswordPolicies, events.PolicyDisablePasswordExpiration) == want, nil
	}, func(ctx context.Context) error {
		return x.s.graph.SetPasswordPolicies(ctx, x.user.ID, x.a.Policies)
	})
}

// step runs one Graph write at most once per action: the idempotency record
// is checked before and written after. In dry-run it only audits.
func (x *execution) step(ctx context.Context, name string, fn func(context.Context) error) error {
	if _, err := x.s.done.Get(ctx, stepKey(x.a.ID, name)); err == nil {
		x.done = append(x.done, name)
		return nil // done before a crash or redelivery
	} else if !natsx.IsNotFound(err) {
		return fmt.Errorf("checking step %s: %w", name, err)
	}
	if x.a.DryRun {
		x.audit(ctx, name, events.OutcomeDryRun, 0, "would call Graph")
		return nil
	}
	err := x.s.retry(ctx, name, func(ctx context.Context) error {
		return x.paced(ctx, fn)
	})
	if err != nil {
		x.audit(ctx, name, events.OutcomeFailed, graph.StatusOf(err), err.Error())
		return err
	}
	x.audit(ctx, name, events.OutcomeOK, 0, "")
	x.done = append(x.done, name)
	return x.markDone(ctx, name)
}

// paced sends one write under the budget at the action's priority; a 429
// pauses the lower priorities for its Retry-After.
func (x *execution) paced(ctx context.Context, fn func(context.Context) error) error {
	b := x.s.budget
	if b == nil {
		return fn(ctx)
	}
	if _, err := b.Acquire(ctx, x.prio, 1); err != nil {
		return err
	}
	err := fn(ctx)
	var ge *graph.Error
	if errors.As(err, &ge) && ge.Status == http.StatusTooManyRequests {
		b.Throttled(x.prio, ge.RetryAfter)
		b.Done(1, 0)
		return err
	}
	b.Done(1, 1) // applied, refused or unknown: it may have counted
	return err
}

func stepKey(actionID, step string) string { return events.KeySafe("step." + actionID + "." + step) }

func attemptKey(actionID, step string) string {
	return events.KeySafe("attempt." + actionID + "." + step)
}

// stepChecked is step for a write that Graph cannot deduplicate: the first
// attempt's time is recorded before the call, and every later attempt (an
// in-process retry after an ambiguous failure, or a redelivery after a crash)
// first asks took whether an earlier one took effect since then.
func (x *execution) stepChecked(ctx context.Context, name string, took func(context.Context, time.Time) (bool, error), fn func(context.Context) error) error {
	if x.a.DryRun {
		return x.step(ctx, name, fn)
	}
	if _, err := x.s.done.Get(ctx, stepKey(x.a.ID, name)); err == nil {
		x.done = append(x.done, name)
		return nil
	} else if !natsx.IsNotFound(err) {
		return fmt.Errorf("checking step %s: %w", name, err)
	}
	key := attemptKey(x.a.ID, name)
	var since time.Time
	retried := false
	switch e, err := x.s.done.Get(ctx, key); {
	case err == nil:
		since, err = time.Parse(time.RFC3339Nano, string(e.Value()))
		retried = err == nil
	case !natsx.IsNotFound(err):
		return fmt.Errorf("checking attempts of step %s: %w", name, err)
	}
	if !retried {
		since = x.s.now().UTC()
		if _, err := x.s.done.Put(ctx, key, []byte(since.Format(time.RFC3339Nano))); err != nil {
			return fmt.Errorf("recording attempt of step %s: %w", name, err)
		}
	}
	return x.step(ctx, name, func(ctx context.Context) error {
		if retried {
			ok, err := took(ctx, since)
			if err != nil {
				return err
			}
			if ok {
				zerolog.Ctx(ctx).Info().Str("step", name).Time("attempted", since).
					Msg("an earlier attempt took effect; not sending it again")
				return nil
			}
		}
		retried = true
		return fn(ctx)
	})
}

// markDone records that a step needs no further attempt.
func (x *execution) markDone(ctx context.Context, name string) error {
	if _, err := x.s.done.Put(ctx, stepKey(x.a.ID, name), []byte(x.s.now().UTC().Format(time.RFC3339Nano))); err != nil {
		return fmt.Errorf("recording step %s: %w", name, err)
	}
	return nil
}

func (x *execution) audit(ctx context.Context, step, outcome string, status int, detail string) {
	rec := events.AuditRecord{Kind: "step", EventID: x.a.EventID, ActionID: x.a.ID, Rule: x.a.Rule,
		Action: string(x.a.Kind), Step: step, User: x.a.User, Outcome: outcome, HTTPStatus: status, Detail: detail,
		LatencyMS: x.latencyMS()}
	if x.user != nil {
		rec.CloudID = x.user.ID
	}
	if err := x.s.audit.Write(ctx, rec); err != nil {
		zerolog.Ctx(ctx).Error().Err(err).Str("step", step).Msg("audit write failed")
	}
	ev := zerolog.Ctx(ctx).Info()
	if outcome == events.OutcomeFailed {
		ev = zerolog.Ctx(ctx).Warn()
	}
	ev.Str("step", step).Str("outcome", outcome).Int("http_status", status).Str("detail", detail).
		Float64("latency_ms", rec.LatencyMS).Msg("step")
}

// finish audits the action's outcome; cause is the error, if any.
func (x *execution) finish(ctx context.Context, outcome, detail string, cause error) error {
	rec := events.AuditRecord{Kind: "action", EventID: x.a.EventID, ActionID: x.a.ID, Rule: x.a.Rule,
		Action: string(x.a.Kind), User: x.a.User, Outcome: outcome, Detail: detail, HTTPStatus: graph.StatusOf(cause),
		LatencyMS: x.latencyMS()}
	if x.user != nil {
		rec.CloudID = x.user.ID
	}
	start := x.a.EventTime
	if x.a.Kind == events.ActionAlert {
		start = time.Time{} // no Graph write: not part of the AD -> Graph latency
	}
	metrics.Action(string(x.a.Kind), outcome, start, x.s.now())
	return x.s.audit.Write(ctx, rec)
}

func (x *execution) latencyMS() float64 {
	if x.a.EventTime.IsZero() {
		return 0
	}
	return float64(x.s.now().Sub(x.a.EventTime).Microseconds()) / 1000
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

// resolve finds the cloud account of an AD user: by onPremisesImmutableId
// (base64 of the objectGUID), then by userPrincipalName when allowed; the
// result is cached in KV. It always returns fresh state from Graph.
func (s *Service) resolve(ctx context.Context, ref events.UserRef) (*graph.User, error) {
	if ref.CloudID != "" { // joined by the evaluator from delta query
		var u *graph.User
		err := s.retry(ctx, "get_user", func(ctx context.Context) error {
			var err error
			u, err = s.graph.GetUser(ctx, ref.CloudID)
			return err
		})
		if graph.IsNotFound(err) {
			return nil, fmt.Errorf("%w: %s was deleted", ErrNoCloudAccount, ref.CloudID)
		}
		return u, err
	}
	rec, joined, err := s.identity.Join(ctx, ref.ObjectGUID)
	if err != nil {
		return nil, err
	}
	if joined {
		var u *graph.User
		err := s.retry(ctx, "get_user", func(ctx context.Context) error {
			var err error
			u, err = s.graph.GetUser(ctx, rec.CloudID)
			return err
		})
		switch {
		case err == nil:
			return u, nil
		case !graph.IsNotFound(err):
			return nil, err
		}
		_ = s.identity.DeleteJoin(ctx, ref.ObjectGUID) // the cloud account is gone: join again
	}

	var found *graph.User
	via := userstate.JoinedViaImmutableID
	if ref.ImmutableID != "" {
		if err := s.retry(ctx, "find_by_immutable_id", func(ctx context.Context) error {
			var err error
			found, err = s.graph.FindByImmutableID(ctx, ref.ImmutableID)
			return err
		}); err != nil {
			return nil, err
		}
	}
	if found == nil && s.set.Identity.UPNFallback && ref.UPN != "" {
		via = userstate.JoinedViaUPN
		upn := s.cloudUPN(ref.UPN)
		err := s.retry(ctx, "get_user_by_upn", func(ctx context.Context) error {
			var err error
			found, err = s.graph.GetUser(ctx, upn)
			return err
		})
		switch {
		case graph.IsNotFound(err):
			found = nil
		case err != nil:
			return nil, err
		case found.ImmutableID != "" && ref.ImmutableID != "" && found.ImmutableID != ref.ImmutableID:
			// Same UPN, but joined to another AD object: never guess.
			return nil, natsx.Permanent(fmt.Errorf("%w: %s matches a cloud account anchored to another AD object", ErrNoCloudAccount, upn))
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w for %s (immutable id %s)", ErrNoCloudAccount, ref.UPN, ref.ImmutableID)
	}
	// The look-up may not carry passwordProfile: read the full state.
	u := found
	if err := s.retry(ctx, "get_user", func(ctx context.Context) error {
		var err error
		u, err = s.graph.GetUser(ctx, found.ID)
		return err
	}); err != nil {
		return nil, err
	}
	if err := s.identity.PutJoin(ctx, ref.ObjectGUID, userstate.Join{CloudID: u.ID, UPN: u.UPN, Via: via}); err != nil {
		return nil, err
	}
	return u, nil
}

func (s *Service) cloudUPN(upn string) string {
	for i := len(upn) - 1; i >= 0; i-- {
		if upn[i] == '@' {
			if to, ok := s.set.Identity.UPNSuffixMap[upn[i+1:]]; ok {
				return upn[:i+1] + to
			}
			break
		}
	}
	return upn
}
