package evaluator

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/lease"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/shared/retry"
)

// GateLeaseKey is the singleton lease of the backfill gate loop and the
// re-evaluation pass (one replica counts, holds and re-evaluates).
const GateLeaseKey = natsx.LeaseBackfillGate

// fingerprintKey holds the fingerprint of the rules policy last re-evaluated.
const fingerprintKey = "policy.fingerprint"

// ReevaluateConfig configures the pass that re-evaluates every known user
// when the rules policy changed between two starts.
type ReevaluateConfig struct {
	Enabled bool
	// Rate: users re-evaluated per second (the pass is paced so that a big
	// users bucket does not starve the live events).
	Rate float64
}

// savedFingerprint is what fingerprintKey holds.
type savedFingerprint struct {
	Fingerprint string    `json:"fingerprint"`
	At          time.Time `json:"at"`
}

// Fingerprint identifies a rules policy: any change of what the rules read
// (a rule turned on, a wider scope, dry run ended) changes it. The Entra
// group membership is data, not policy: left out.
func Fingerprint(p rules.Policy) string {
	p.EntraMembers = nil
	data, err := json.Marshal(p)
	if err != nil {
		return "unencodable"
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func holderName(h string) string {
	if h != "" {
		return h
	}
	// unique per Service: two evaluators in one process must not share a lease
	return lease.DefaultHolder() + "-" + rand.Text()[:8]
}

// runGate holds the gate lease: on one replica at a time, the re-evaluation
// pass runs (when the policy changed) and complete batches are counted.
func (s *Service) runGate(ctx context.Context) {
	l := lease.New(s.leases, GateLeaseKey, s.holder, natsx.LeaseRenew, s.log)
	if err := l.Run(ctx, s.gateWork); err != nil {
		s.log.Error().Err(err).Msg("backfill gate stopped")
	}
}

func (s *Service) gateWork(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := s.gate.check(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn().Err(err).Msg("backfill gate: checking batches failed; retrying")
			}
		}
	})
	if !s.reeval.Enabled {
		<-ctx.Done()
		return nil
	}
	// A failed pass does not save the fingerprint: it runs again, deciding
	// nothing twice for the users it already did.
	_ = retry.Until(ctx, retry.Constant(30*time.Second), s.reevaluateIfChanged, retry.Notify(func(err error, _ time.Duration) {
		s.log.Error().Err(err).Msg("re-evaluation pass failed; retrying in 30s")
	}))
	<-ctx.Done()
	return nil
}

// reevaluateIfChanged compares the policy in force with the one last
// re-evaluated and, when it differs, re-evaluates every known user. The new
// fingerprint is saved only after the pass: a restart during it runs it again.
func (s *Service) reevaluateIfChanged(ctx context.Context) error {
	p := s.currentPolicy()
	fp := Fingerprint(p)
	var saved savedFingerprint
	e, err := s.gate.kv.Get(ctx, fingerprintKey)
	switch {
	case natsx.IsNotFound(err):
		// First start, or an upgrade from a version without the pass: what
		// the previous policy was is unknown; this one is the baseline.
		s.log.Info().Str("fingerprint", fp[:12]).Msg("rules policy fingerprint recorded (baseline; no re-evaluation)")
		if err := s.audit.Write(ctx, events.AuditRecord{Kind: "reevaluate", EventID: "reevaluate." + fp[:12], Rule: rules.RuleReevaluate,
			Outcome: "baseline", Detail: "rules policy " + fp[:12] + " recorded; users are re-evaluated when it changes"}); err != nil {
			return err
		}
		return s.saveFingerprint(ctx, fp)
	case err != nil:
		return fmt.Errorf("reading %s: %w", fingerprintKey, err)
	}
	if err := json.Unmarshal(e.Value(), &saved); err != nil {
		s.log.Warn().Err(err).Msg("unreadable policy fingerprint; re-evaluating")
	}
	if saved.Fingerprint == fp {
		s.log.Info().Str("fingerprint", fp[:12]).Msg("rules policy unchanged; no re-evaluation")
		return nil
	}
	if err := s.reevaluateAll(ctx, p, fp, saved.Fingerprint); err != nil {
		return err
	}
	return s.saveFingerprint(ctx, fp)
}

func (s *Service) saveFingerprint(ctx context.Context, fp string) error {
	data, err := json.Marshal(savedFingerprint{Fingerprint: fp, At: s.now().UTC()})
	if err != nil {
		return fmt.Errorf("encoding the policy fingerprint: %w", err)
	}
	if _, err := s.gate.kv.Put(ctx, fingerprintKey, data); err != nil {
		return fmt.Errorf("saving the policy fingerprint: %w", err)
	}
	return nil
}

// reevaluateAll re-evaluates every user of the users bucket, paced, staging
// what it decides in one batch, which the brake then releases or holds.
func (s *Service) reevaluateAll(ctx context.Context, p rules.Policy, fp, was string) error {
	short, wasShort := fp[:12], "none"
	if len(was) >= 12 {
		wasShort = was[:12]
	}
	id := "re-" + short
	b, err := s.gate.Get(ctx, id)
	switch {
	case errors.Is(err, ErrBatchNotFound):
		b = Batch{ID: id, Kind: BatchReevaluate, Status: BatchCollecting, Threshold: s.gate.cfg.Threshold, Created: s.now().UTC()}
		if err := s.gate.create(ctx, b); err != nil {
			return err
		}
	case err != nil:
		return err
	case b.Status != BatchCollecting:
		// decided before a restart that came before the fingerprint was saved
		s.log.Info().Str("batch", id).Str("status", b.Status).Msg("re-evaluation already done for this policy")
		return nil
	}
	keys, err := s.userKeys(ctx)
	if err != nil {
		return err
	}
	log := s.log.With().Str("batch", id).Str("fingerprint", short).Str("was", wasShort).Logger()
	log.Info().Int("users", len(keys)).Float64("rate", s.reeval.Rate).Bool("dry_run", p.DryRun).
		Msg("rules policy changed: re-evaluating every known user")
	started := time.Now()
	pace := time.NewTicker(time.Duration(float64(time.Second) / max(s.reeval.Rate, 0.1)))
	defer pace.Stop()
	acted, changed := 0, 0
	for _, key := range keys {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-pace.C:
		}
		ev := events.Envelope{ID: events.KeySafe("reevaluate." + short + "." + key), Source: "evaluator", Type: "reevaluate", Time: s.now().UTC()}
		var res rules.Result
		decide := func(st rules.State) rules.Result {
			res = rules.Reevaluate(s.currentPolicy(), st, ev)
			return res
		}
		lctx := log.WithContext(ctx)
		if err := s.evaluateInto(lctx, ev, key, decide, func(rules.State) string { return id }); err != nil {
			return fmt.Errorf("re-evaluating %s: %w", key, err)
		}
		if len(res.Actions) > 0 {
			acted++
		}
		if res.Changed {
			changed++
		}
	}
	detail := fmt.Sprintf("rules policy %s (was %s): %d users re-evaluated in %s, %d with actions, %d states changed",
		short, wasShort, len(keys), time.Since(started).Round(time.Millisecond), acted, changed)
	b, err = s.gate.Close(ctx, id, detail)
	if err != nil {
		return err
	}
	if err := s.audit.Write(ctx, events.AuditRecord{Kind: "reevaluate", EventID: "reevaluate." + short, Rule: rules.RuleReevaluate,
		Outcome: b.Status, Detail: detail + "; batch " + id + " " + b.Status}); err != nil {
		return err
	}
	log.Info().Int("users", len(keys)).Int("acted", acted).Str("status", b.Status).Msg("re-evaluation done")
	return nil
}

func (s *Service) userKeys(ctx context.Context) ([]string, error) {
	l, err := s.users.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing bucket %s: %w", natsx.BucketUsers, err)
	}
	var out []string
	for k := range l.Keys() {
		out = append(out, k)
	}
	return out, nil
}

// evaluateFullSync evaluates a user read by a full sync: what it decides for
// a user never seen before (backfill) is staged in the domain's full-sync
// batch, and the user is counted as evaluated for the batch's completeness.
func (s *Service) evaluateFullSync(ctx context.Context, ev events.Envelope, u events.ADUser, decide func(rules.State) rules.Result) error {
	id, err := s.gate.fullSyncBatch(ctx, u.Domain)
	if err != nil {
		return err
	}
	err = s.evaluateInto(ctx, ev, u.ObjectGUID, decide, func(st rules.State) string {
		if st.Seen {
			return "" // a known user: a change, not a backfill
		}
		return id
	})
	if err != nil {
		return err
	}
	return s.gate.seen(ctx, id, u.ObjectGUID)
}

// brake stages a when a batch is given (alerts are never held), and drops a
// clear_password_change whose require_password_change is still staged:
// nothing was written, so there is nothing to undo. It reports whether a
// was taken care of (not to be published).
func (s *Service) brake(ctx context.Context, batch string, a events.Action) (bool, error) {
	if a.Kind == events.ActionClearChange && a.Undoes != "" {
		dropped, err := s.gate.unstage(ctx, a.Undoes)
		if err != nil {
			return false, err
		}
		if dropped {
			zerolog.Ctx(ctx).Info().Str("action_id", a.ID).Str("undoes", a.Undoes).Str("upn", a.User.UPN).
				Msg("password set while the backfill was held: the staged action is dropped, nothing to undo")
			return true, nil
		}
	}
	if batch == "" || a.Kind == events.ActionAlert {
		return false, nil
	}
	if err := s.gate.stage(ctx, batch, a); err != nil {
		return false, err
	}
	zerolog.Ctx(ctx).Info().Str("batch", batch).Str("rule", a.Rule).Str("action", string(a.Kind)).
		Str("action_id", a.ID).Str("upn", a.User.UPN).Bool("dry_run", a.DryRun).Msg("action staged (backfill brake)")
	return true, nil
}
