// Collecting a backfill batch: staging, seen marks, a full sync's end, closing and counting.

package evaluator

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
)

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
