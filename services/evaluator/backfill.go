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

	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
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
