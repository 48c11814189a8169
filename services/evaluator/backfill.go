package evaluator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/shared/userstate"
)

// The backfill brake. Like Entra Connect's export deletion threshold, a mass
// action is counted whole before anything of it is written: the actions a
// domain's full sync decides for users pwsync had never seen (backfill), and
// those of a re-evaluation pass after a policy change, are staged in KV in a
// batch instead of published. When the batch is complete (the full sync's
// end marker and every user it announced evaluated; the pass finished) the
// gate counts the users: at most the threshold, the batch is released as
// though published at once; above it, the batch is held, the admins are
// alerted with the count and a sample, and nothing is written until an
// approver approves it (or rejects it). Batches live in KV: a restart keeps
// a hold.

// Batch statuses.
const (
	BatchCollecting = "collecting" // actions being staged; not counted yet
	BatchHeld       = "held"       // above the threshold; waits for an approver
	BatchReleased   = "released"   // at most the threshold (or dry run): published
	BatchApproved   = "approved"   // held, then approved: published
	BatchRejected   = "rejected"   // held, then rejected: dropped
)

// Batch kinds.
const (
	BatchFullSync   = "full_sync"
	BatchReevaluate = "reevaluate"
)

// RuleBackfill names the brake in alerts and the audit trail.
const RuleBackfill = "backfill"

// sampleSize is how many users an alert and the status name.
const sampleSize = 10

// GateConfig configures the brake.
type GateConfig struct {
	// Threshold: a batch acting on more users than this is held for approval.
	Threshold int
	// Settle bounds the wait for a full sync's users after its end marker:
	// a user event that never gets evaluated (dead-lettered) must not keep
	// the batch open forever; it is then counted with what it has.
	Settle time.Duration
}

// Batch is one staged mass action.
type Batch struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	Domain string `json:"domain,omitempty"`
	Status string `json:"status"`
	// Expect: users the full sync announced (its end marker); 0 before it.
	Expect   int       `json:"expect,omitempty"`
	MarkedAt time.Time `json:"marked_at,omitzero"`
	// Users and Actions staged, counted when the batch was closed.
	Users     int       `json:"users"`
	Actions   int       `json:"actions"`
	Sample    []string  `json:"sample,omitempty"`
	Threshold int       `json:"threshold"`
	DryRun    bool      `json:"dry_run,omitempty"`
	Created   time.Time `json:"created"`
	Closed    time.Time `json:"closed,omitzero"`
	Decided   time.Time `json:"decided,omitzero"`
	DecidedBy string    `json:"decided_by,omitempty"`
	// Released: actions published; Superseded: staged actions dropped at
	// release because the user changed since (e.g. set a password).
	Released   int `json:"released"`
	Superseded int `json:"superseded,omitempty"`
	// Releasing: the release started and has staged actions left (a crash
	// in between; the gate loop finishes it).
	Releasing bool   `json:"releasing,omitempty"`
	Detail    string `json:"detail,omitempty"`
}

// Gate stages, counts, holds and releases batches.
type Gate struct {
	kv    jetstream.KeyValue
	users jetstream.KeyValue
	pub   *natsx.Publisher
	audit *audit.Writer
	cfg   GateConfig
	now   func() time.Time
	log   zerolog.Logger
}

// Errors of the approval API.
var (
	ErrBatchNotFound = errors.New("no such backfill batch")
	ErrBatchState    = errors.New("backfill batch is not held")
)

// NewGate opens the brake's bucket.
func NewGate(ctx context.Context, js jetstream.JetStream, cfg GateConfig, now func() time.Time, log zerolog.Logger) (*Gate, error) {
	kv, err := natsx.Bucket(ctx, js, natsx.BucketBackfill)
	if err != nil {
		return nil, err
	}
	users, err := natsx.Bucket(ctx, js, natsx.BucketUsers)
	if err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	if cfg.Settle <= 0 {
		cfg.Settle = 10 * time.Minute
	}
	pub := natsx.NewPublisher(js)
	return &Gate{kv: kv, users: users, pub: pub, audit: audit.NewWriter(pub, now), cfg: cfg, now: now,
		log: log.With().Str("component", "backfill_gate").Logger()}, nil
}

func batchKey(id string) string { return "batch." + id }
func openKey(domain string) string {
	return "open." + strings.ReplaceAll(events.KeySafe(domain), ".", "_")
}
func stagePrefix(id string) string        { return "stage." + id + "." }
func stageKey(id, actionID string) string { return stagePrefix(id) + actionID }
func seenPrefix(id string) string         { return "seen." + id + "." }

// fullSyncBatch is the collecting batch of a domain's current full sync,
// created by whichever comes first: a user event of the scan or its marker.
func (g *Gate) fullSyncBatch(ctx context.Context, domain string) (string, error) {
	key := openKey(domain)
	for range 3 {
		e, err := g.kv.Get(ctx, key)
		if err == nil {
			return string(e.Value()), nil
		}
		if !natsx.IsNotFound(err) {
			return "", fmt.Errorf("reading %s: %w", key, err)
		}
		now := g.now().UTC()
		id := fmt.Sprintf("fs-%s-%d", strings.ReplaceAll(events.KeySafe(domain), ".", "_"), now.UnixNano())
		b := Batch{ID: id, Kind: BatchFullSync, Domain: domain, Status: BatchCollecting, Threshold: g.cfg.Threshold, Created: now}
		if err := g.create(ctx, b); err != nil {
			return "", err
		}
		if _, err := g.kv.Create(ctx, key, []byte(id)); err == nil {
			g.log.Info().Str("batch", id).Str("domain", domain).Msg("full sync: backfill staged until counted")
			return id, nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return "", fmt.Errorf("opening %s: %w", key, err)
		}
		_ = g.kv.Delete(ctx, batchKey(id)) // another worker opened one first
	}
	return "", fmt.Errorf("opening the full sync batch of %s: lost three races", domain)
}

func (g *Gate) create(ctx context.Context, b Batch) error {
	data, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("encoding batch %s: %w", b.ID, err)
	}
	if _, err := g.kv.Create(ctx, batchKey(b.ID), data); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("creating batch %s: %w", b.ID, err)
	}
	return nil
}

// Get reads a batch.
func (g *Gate) Get(ctx context.Context, id string) (Batch, error) {
	b, _, err := g.get(ctx, id)
	return b, err
}

func (g *Gate) get(ctx context.Context, id string) (Batch, uint64, error) {
	var b Batch
	e, err := g.kv.Get(ctx, batchKey(id))
	if natsx.IsNotFound(err) {
		return b, 0, fmt.Errorf("%w: %s", ErrBatchNotFound, id)
	}
	if err != nil {
		return b, 0, fmt.Errorf("reading batch %s: %w", id, err)
	}
	if err := json.Unmarshal(e.Value(), &b); err != nil {
		return b, 0, fmt.Errorf("decoding batch %s: %w", id, err)
	}
	return b, e.Revision(), nil
}

// update applies fn to the batch under optimistic concurrency; fn returns
// false to leave it unchanged.
func (g *Gate) update(ctx context.Context, id string, fn func(*Batch) (bool, error)) (Batch, error) {
	for range 10 {
		b, rev, err := g.get(ctx, id)
		if err != nil {
			return b, err
		}
		ok, err := fn(&b)
		if err != nil || !ok {
			return b, err
		}
		data, err := json.Marshal(b)
		if err != nil {
			return b, fmt.Errorf("encoding batch %s: %w", id, err)
		}
		if _, err := g.kv.Update(ctx, batchKey(id), data, rev); err == nil {
			return b, nil
		} else if !isWrongSequence(err) {
			return b, fmt.Errorf("saving batch %s: %w", id, err)
		}
	}
	return Batch{}, fmt.Errorf("saving batch %s: %w", id, errConflict)
}

// List returns every batch, newest first.
func (g *Gate) List(ctx context.Context) ([]Batch, error) {
	keys, err := g.keys(ctx, "batch.*")
	if err != nil {
		return nil, err
	}
	var out []Batch
	for _, k := range keys {
		b, err := g.Get(ctx, strings.TrimPrefix(k, "batch."))
		if errors.Is(err, ErrBatchNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b Batch) int { return b.Created.Compare(a.Created) })
	return out, nil
}

func (g *Gate) keys(ctx context.Context, filter string) ([]string, error) {
	l, err := g.kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing %s: %w", filter, err)
	}
	var out []string
	for k := range l.Keys() {
		out = append(out, k)
	}
	return out, nil
}

// stage keeps an action in a batch instead of publishing it.
func (g *Gate) stage(ctx context.Context, id string, a events.Action) error {
	data, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encoding action %s: %w", a.ID, err)
	}
	if _, err := g.kv.Put(ctx, stageKey(id, a.ID), data); err != nil {
		return fmt.Errorf("staging action %s in %s: %w", a.ID, id, err)
	}
	return nil
}

// seen records that a user of a full sync was evaluated.
func (g *Gate) seen(ctx context.Context, id, guid string) error {
	if _, err := g.kv.Put(ctx, seenPrefix(id)+events.KeySafe(guid), nil); err != nil {
		return fmt.Errorf("recording %s in %s: %w", guid, id, err)
	}
	return nil
}

// unstage drops a staged, unreleased action (the user set a password before
// the batch was released: nothing to undo). It reports whether it was staged.
func (g *Gate) unstage(ctx context.Context, actionID string) (bool, error) {
	keys, err := g.keys(ctx, "stage.*."+actionID)
	if err != nil || len(keys) == 0 {
		return false, err
	}
	for _, k := range keys {
		if err := g.kv.Delete(ctx, k); err != nil {
			return false, fmt.Errorf("dropping %s: %w", k, err)
		}
	}
	return true, nil
}

// staged reads a batch's staged actions.
func (g *Gate) staged(ctx context.Context, id string) ([]events.Action, error) {
	acts, _, err := g.stagedRevs(ctx, id)
	return acts, err
}

// stagedRevs is staged with each entry's revision.
func (g *Gate) stagedRevs(ctx context.Context, id string) ([]events.Action, []uint64, error) {
	keys, err := g.keys(ctx, stagePrefix(id)+">")
	if err != nil {
		return nil, nil, err
	}
	out := make([]events.Action, 0, len(keys))
	revs := make([]uint64, 0, len(keys))
	for _, k := range keys {
		e, err := g.kv.Get(ctx, k)
		if natsx.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading %s: %w", k, err)
		}
		var a events.Action
		if err := json.Unmarshal(e.Value(), &a); err != nil {
			return nil, nil, fmt.Errorf("decoding %s: %w", k, err)
		}
		out, revs = append(out, a), append(revs, e.Revision())
	}
	return out, revs, nil
}

// fullSyncDone records a full sync's end marker: the gate loop closes the
// batch once it has evaluated the users the marker announces.
func (g *Gate) fullSyncDone(ctx context.Context, f events.ADFullSync) error {
	id, err := g.fullSyncBatch(ctx, f.Domain)
	if err != nil {
		return err
	}
	_, err = g.update(ctx, id, func(b *Batch) (bool, error) {
		if b.Status != BatchCollecting || !b.MarkedAt.IsZero() {
			return false, nil
		}
		b.Expect, b.MarkedAt = f.Users, g.now().UTC()
		return true, nil
	})
	return err
}

// check closes the full-sync batches that are complete (or waited out
// Settle), and finishes releases a crash interrupted. The gate loop calls it.
func (g *Gate) check(ctx context.Context) error {
	bs, err := g.List(ctx)
	if err != nil {
		return err
	}
	for _, b := range bs {
		switch {
		case b.Releasing && g.now().Sub(b.Decided) > time.Minute:
			// a release a crash interrupted (the one running now is left alone)
			if _, err := g.release(ctx, b.ID); err != nil {
				return err
			}
		case b.Kind == BatchFullSync && b.Status == BatchCollecting && !b.MarkedAt.IsZero():
			seen, err := g.keys(ctx, seenPrefix(b.ID)+"*")
			if err != nil {
				return err
			}
			waited := g.now().Sub(b.MarkedAt)
			if len(seen) < b.Expect && waited < g.cfg.Settle {
				continue
			}
			detail := ""
			if len(seen) < b.Expect {
				detail = fmt.Sprintf("counted after %s with %d of the %d users the full sync announced evaluated", waited.Round(time.Second), len(seen), b.Expect)
			}
			if _, err := g.Close(ctx, b.ID, detail); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close counts a complete batch and releases or holds it.
func (g *Gate) Close(ctx context.Context, id, detail string) (Batch, error) {
	acts, err := g.staged(ctx, id)
	if err != nil {
		return Batch{}, err
	}
	users, sample := countUsers(acts)
	if len(acts) == 0 {
		if b, _, err := g.get(ctx, id); err == nil && b.Kind == BatchFullSync && b.Status == BatchCollecting {
			// a full sync that found no one to backfill (every later resync):
			// nothing to keep, nothing to audit
			g.forget(ctx, b)
			if err := g.kv.Delete(ctx, batchKey(id)); err != nil {
				return b, fmt.Errorf("dropping empty batch %s: %w", id, err)
			}
			return b, nil
		}
	}
	dry := len(acts) > 0
	for _, a := range acts {
		dry = dry && a.DryRun
	}
	b, err := g.update(ctx, id, func(b *Batch) (bool, error) {
		if b.Status != BatchCollecting {
			return false, nil
		}
		b.Users, b.Actions, b.Sample, b.DryRun, b.Closed = users, len(acts), sample, dry, g.now().UTC()
		b.Threshold = g.cfg.Threshold
		if detail != "" {
			b.Detail = detail
		}
		if users > g.cfg.Threshold && !dry {
			b.Status = BatchHeld
		} else {
			b.Status, b.Decided, b.Releasing = BatchReleased, b.Closed, true
		}
		return true, nil
	})
	if err != nil {
		return b, err
	}
	if b.Kind == BatchFullSync {
		g.forget(ctx, b)
	}
	switch {
	case b.Status == BatchHeld:
		g.log.Warn().Str("batch", b.ID).Str("kind", b.Kind).Int("users", b.Users).Int("threshold", b.Threshold).
			Strs("sample", b.Sample).Msg("backfill held: above the threshold; waiting for an approver")
		if err := g.alert(ctx, b); err != nil {
			return b, err
		}
		return b, g.record(ctx, b, "held", "")
	case b.Releasing:
		outcome := "released"
		if dry && users > g.cfg.Threshold {
			outcome = "would_hold" // dry run: nothing is written either way
		}
		if err := g.record(ctx, b, outcome, ""); err != nil {
			return b, err
		}
		return g.release(ctx, b.ID)
	}
	return b, nil
}

// forget drops what only counting needed: the domain's pointer (the next
// full sync opens a new batch) and the seen marks.
func (g *Gate) forget(ctx context.Context, b Batch) {
	key := openKey(b.Domain)
	if e, err := g.kv.Get(ctx, key); err == nil && string(e.Value()) == b.ID {
		_ = g.kv.Delete(ctx, key, jetstream.LastRevision(e.Revision()))
	}
	seen, _ := g.keys(ctx, seenPrefix(b.ID)+"*")
	for _, k := range seen {
		_ = g.kv.Purge(ctx, k)
	}
}

// Approve releases a held batch; by is the approver.
func (g *Gate) Approve(ctx context.Context, id, by string) (Batch, error) {
	b, err := g.update(ctx, id, func(b *Batch) (bool, error) {
		if b.Status != BatchHeld {
			return false, fmt.Errorf("%w: %s is %s", ErrBatchState, id, b.Status)
		}
		b.Status, b.Decided, b.DecidedBy, b.Releasing = BatchApproved, g.now().UTC(), by, true
		return true, nil
	})
	if err != nil {
		return b, err
	}
	if err := g.record(ctx, b, "approved", by); err != nil {
		return b, err
	}
	return g.release(ctx, id)
}

// Reject drops a held batch: its users are not acted on, and what pwsync
// had recorded as required of them is cleared, so that their next password
// change does not undo a write that never happened.
func (g *Gate) Reject(ctx context.Context, id, by string) (Batch, error) {
	b, err := g.update(ctx, id, func(b *Batch) (bool, error) {
		if b.Status != BatchHeld {
			return false, fmt.Errorf("%w: %s is %s", ErrBatchState, id, b.Status)
		}
		b.Status, b.Decided, b.DecidedBy = BatchRejected, g.now().UTC(), by
		return true, nil
	})
	if err != nil {
		return b, err
	}
	acts, err := g.staged(ctx, id)
	if err != nil {
		return b, err
	}
	for _, a := range acts {
		if a.Kind == events.ActionRequireChange {
			if err := g.clearRequired(ctx, a); err != nil {
				return b, err
			}
		}
		if err := g.kv.Delete(ctx, stageKey(id, a.ID)); err != nil {
			return b, fmt.Errorf("dropping %s: %w", a.ID, err)
		}
	}
	g.log.Warn().Str("batch", id).Str("by", by).Int("users", b.Users).Msg("backfill rejected: nothing written")
	return b, g.record(ctx, b, "rejected", by)
}

// release publishes a batch's staged actions (IDs are stable: a release
// that a crash interrupted publishes the rest, duplicates are dropped).
func (g *Gate) release(ctx context.Context, id string) (Batch, error) {
	acts, revs, err := g.stagedRevs(ctx, id)
	if err != nil {
		return Batch{}, err
	}
	released, superseded := 0, 0
	for i, a := range acts {
		live, err := g.stillWanted(ctx, a)
		if err != nil {
			return Batch{}, err
		}
		if live {
			if _, err := g.pub.PublishJSON(ctx, a.Subject(), a.ID, a); err != nil {
				return Batch{}, fmt.Errorf("releasing action %s: %w", a.ID, err)
			}
		}
		// Counted by whoever drops the entry: two releases of one batch (a
		// resumed one and a late original) publish an action twice under
		// one ID (deduplicated) but count it once.
		err = g.kv.Delete(ctx, stageKey(id, a.ID), jetstream.LastRevision(revs[i]))
		switch {
		case err == nil && live:
			released++
		case err == nil:
			superseded++
		case isWrongSequence(err) || natsx.IsNotFound(err):
		default:
			return Batch{}, fmt.Errorf("dropping %s: %w", a.ID, err)
		}
	}
	b, err := g.update(ctx, id, func(b *Batch) (bool, error) {
		b.Released += released
		b.Superseded += superseded
		b.Releasing = false
		return true, nil
	})
	if err != nil {
		return b, err
	}
	g.log.Info().Str("batch", id).Str("status", b.Status).Int("released", released).Int("superseded", superseded).
		Bool("dry_run", b.DryRun).Msg("backfill released")
	if released+superseded == 0 {
		return b, nil // another release did it
	}
	return b, g.record(ctx, b, "published", "")
}

// stillWanted: a staged require-change is released only while the user's
// state still records it as what pwsync requires (not a user who set a
// password, or was re-evaluated, since).
func (g *Gate) stillWanted(ctx context.Context, a events.Action) (bool, error) {
	if a.Kind != events.ActionRequireChange {
		return true, nil
	}
	e, err := g.users.Get(ctx, userstate.UserKey(a.User.ObjectGUID))
	if natsx.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading state of %s: %w", a.User.ObjectGUID, err)
	}
	var st rules.State
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return true, nil // unreadable: the actuator's own checks decide
	}
	return st.RequiredByAction == a.ID || st.DryRun.RequiredByAction == a.ID, nil
}

// clearRequired forgets a requirement that a rejected batch never wrote.
func (g *Gate) clearRequired(ctx context.Context, a events.Action) error {
	key := userstate.UserKey(a.User.ObjectGUID)
	for range 5 {
		e, err := g.users.Get(ctx, key)
		if natsx.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading state of %s: %w", key, err)
		}
		var st rules.State
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			return nil
		}
		switch a.ID {
		case st.RequiredByAction:
			st.ChangeRequired, st.RequiredByAction = false, ""
		case st.DryRun.RequiredByAction:
			st.DryRun.ChangeRequired, st.DryRun.RequiredByAction = false, ""
		default:
			return nil
		}
		data, err := json.Marshal(st)
		if err != nil {
			return fmt.Errorf("encoding state of %s: %w", key, err)
		}
		if _, err := g.users.Update(ctx, key, data, e.Revision()); err == nil {
			return nil
		} else if !isWrongSequence(err) {
			return fmt.Errorf("saving state of %s: %w", key, err)
		}
	}
	return fmt.Errorf("saving state of %s: %w", key, errConflict)
}

// alert tells the admins (notifier: Teams Workflows webhook) once per batch.
func (g *Gate) alert(ctx context.Context, b Batch) error {
	what := "the first full sync of " + b.Domain
	if b.Kind == BatchReevaluate {
		what = "re-evaluating every known user after the rules policy changed"
	}
	reason := fmt.Sprintf("backfill held: %s would act on %d users (threshold %d); nothing is written until approved. Sample: %s. "+
		"Approve with `pwsync backfill approve %s` (approver role) or in the console; reject with `pwsync backfill reject %s`.",
		what, b.Users, b.Threshold, sampleText(b), b.ID, b.ID)
	a := events.Action{ID: events.KeySafe("backfill." + b.ID + ".held"), Kind: events.ActionAlert, Rule: RuleBackfill,
		Reason: reason, EventID: "backfill." + b.ID, EventTime: g.now().UTC(), User: events.UserRef{Domain: b.Domain}}
	if _, err := g.pub.PublishJSON(ctx, a.Subject(), a.ID, a); err != nil {
		return fmt.Errorf("alerting the hold of %s: %w", b.ID, err)
	}
	return nil
}

func sampleText(b Batch) string {
	s := strings.Join(b.Sample, ", ")
	if more := b.Users - len(b.Sample); more > 0 {
		s += fmt.Sprintf(" and %d more", more)
	}
	return s
}

// record writes the batch's audit record: held, released, would_hold,
// approved or rejected (with by whom), with its counts.
func (g *Gate) record(ctx context.Context, b Batch, outcome, by string) error {
	detail := fmt.Sprintf("%s batch %s: %d users, %d actions, threshold %d", b.Kind, b.ID, b.Users, b.Actions, b.Threshold)
	if b.Domain != "" {
		detail += ", domain " + b.Domain
	}
	if by != "" {
		detail += ", by " + by
	}
	if outcome == "published" {
		detail += fmt.Sprintf(", %d actions published", b.Released)
		if b.Superseded > 0 {
			detail += fmt.Sprintf(", %d dropped (the user changed since)", b.Superseded)
		}
	}
	if b.Detail != "" {
		detail += "; " + b.Detail
	}
	return g.audit.Write(ctx, events.AuditRecord{Kind: "backfill", EventID: "backfill." + b.ID, Rule: RuleBackfill,
		Outcome: outcome, Detail: detail, User: events.UserRef{Domain: b.Domain}})
}

// countUsers counts the distinct users of staged actions and samples them.
func countUsers(acts []events.Action) (int, []string) {
	seen := map[string]bool{}
	var names []string
	for _, a := range acts {
		id := a.User.ObjectGUID
		if id == "" {
			id = a.User.UPN
		}
		if seen[id] {
			continue
		}
		seen[id] = true
		name := a.User.UPN
		if name == "" {
			name = a.User.DN
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return len(seen), names[:min(len(names), sampleSize)]
}
