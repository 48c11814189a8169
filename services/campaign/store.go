package campaign

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/shared/mustchange"
	"github.com/pwsync/pwsync/shared/natsx"
)

// Errors the API maps to statuses.
var (
	ErrNotFound  = errors.New("campaign not found")
	ErrConflict  = errors.New("conflict")
	ErrForbidden = errors.New("forbidden")
)

// KV layout of the campaigns bucket (natsx.BucketCampaigns), per campaign:
//
//	c.<id>           the Campaign document (state changes by CAS on its revision)
//	t.<id>.<chunk>   targets, targetChunk per key, fixed at preview
//	x.<id>           preview details: excluded users, unmatched UPNs
//	p.<id>.<idx>     one user's progress: each step's status and answer
//	b.<id>.<seq>     a $batch's intent, written before it is sent, deleted
//	                 once its items' results are in p.*
//	s.<id>           run counters, for status
const targetChunk = 500

// Store reads and writes campaigns in KV.
type Store struct {
	kv jetstream.KeyValue
}

// OpenStore opens the campaigns bucket.
func OpenStore(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	kv, err := natsx.Bucket(ctx, js, natsx.BucketCampaigns)
	if err != nil {
		return nil, err
	}
	return &Store{kv: kv}, nil
}

func keyCampaign(id string) string       { return "c." + id }
func keyTargets(id string, n int) string { return "t." + id + "." + strconv.Itoa(n) }
func keyDetails(id string) string        { return "x." + id }
func keyProgress(id string, i int) string {
	return "p." + id + "." + strconv.Itoa(i)
}
func keyIntent(id, seq string) string { return "b." + id + "." + seq }
func keyStats(id string) string       { return "s." + id }

// Get returns a campaign and its revision.
func (s *Store) Get(ctx context.Context, id string) (Campaign, uint64, error) {
	e, err := s.kv.Get(ctx, keyCampaign(id))
	if natsx.IsNotFound(err) || errors.Is(err, jetstream.ErrInvalidKey) {
		return Campaign{}, 0, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Campaign{}, 0, fmt.Errorf("reading campaign %s: %w", id, err)
	}
	var c Campaign
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		return Campaign{}, 0, fmt.Errorf("decoding campaign %s: %w", id, err)
	}
	return c, e.Revision(), nil
}

// Create stores a new campaign; its ID must be new.
func (s *Store) Create(ctx context.Context, c Campaign) error {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encoding campaign %s: %w", c.ID, err)
	}
	if _, err := s.kv.Create(ctx, keyCampaign(c.ID), b); err != nil {
		return fmt.Errorf("creating campaign %s: %w", c.ID, err)
	}
	return nil
}

// Update applies fn to the current campaign and stores it if the revision
// did not move meanwhile (retrying a few times when it did). fn's error
// aborts the update.
func (s *Store) Update(ctx context.Context, id string, fn func(*Campaign) error) (Campaign, error) {
	for range 5 {
		c, rev, err := s.Get(ctx, id)
		if err != nil {
			return Campaign{}, err
		}
		if err := fn(&c); err != nil {
			return c, err
		}
		b, err := json.Marshal(c)
		if err != nil {
			return c, fmt.Errorf("encoding campaign %s: %w", id, err)
		}
		_, err = s.kv.Update(ctx, keyCampaign(id), b, rev)
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			continue // someone else wrote in between: redo on the new state
		}
		if err != nil {
			return c, fmt.Errorf("updating campaign %s: %w", id, err)
		}
		return c, nil
	}
	return Campaign{}, fmt.Errorf("%w: campaign %s changed concurrently; retry", ErrConflict, id)
}

// List returns every campaign, newest first.
func (s *Store) List(ctx context.Context) ([]Campaign, error) {
	var out []Campaign
	err := s.watch(ctx, "c.*", func(e jetstream.KeyValueEntry) error {
		var c Campaign
		if err := json.Unmarshal(e.Value(), &c); err != nil {
			return fmt.Errorf("decoding %s: %w", e.Key(), err)
		}
		out = append(out, c)
		return nil
	})
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, err
}

// watch calls fn for the current value of every key matching filter.
func (s *Store) watch(ctx context.Context, filter string, fn func(jetstream.KeyValueEntry) error) error {
	w, err := s.kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("reading %s: %w", filter, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("reading %s: watcher closed", filter)
			}
			if e == nil {
				return nil // initial values done
			}
			if err := fn(e); err != nil {
				return err
			}
		}
	}
}

// SaveTargets replaces the target set of a campaign (at preview).
func (s *Store) SaveTargets(ctx context.Context, id string, targets []Target, details Details) error {
	old := 0
	_ = s.watch(ctx, "t."+id+".*", func(jetstream.KeyValueEntry) error { old++; return nil })
	n := 0
	for i := 0; i < len(targets); i += targetChunk {
		b, err := json.Marshal(targets[i:min(i+targetChunk, len(targets))])
		if err != nil {
			return fmt.Errorf("encoding targets: %w", err)
		}
		if _, err := s.kv.Put(ctx, keyTargets(id, n), b); err != nil {
			return fmt.Errorf("storing targets of %s: %w", id, err)
		}
		n++
	}
	for ; n < old; n++ {
		if err := s.kv.Purge(ctx, keyTargets(id, n)); err != nil {
			return fmt.Errorf("removing old targets of %s: %w", id, err)
		}
	}
	b, err := json.Marshal(details)
	if err != nil {
		return fmt.Errorf("encoding preview details: %w", err)
	}
	if _, err := s.kv.Put(ctx, keyDetails(id), b); err != nil {
		return fmt.Errorf("storing preview details of %s: %w", id, err)
	}
	return nil
}

// Targets loads the target set, in index order.
func (s *Store) Targets(ctx context.Context, id string, count int) ([]Target, error) {
	out := make([]Target, 0, count)
	for n := 0; len(out) < count; n++ {
		e, err := s.kv.Get(ctx, keyTargets(id, n))
		if err != nil {
			return nil, fmt.Errorf("reading targets of %s (chunk %d): %w", id, n, err)
		}
		var chunk []Target
		if err := json.Unmarshal(e.Value(), &chunk); err != nil {
			return nil, fmt.Errorf("decoding targets of %s: %w", id, err)
		}
		out = append(out, chunk...)
	}
	for i, t := range out {
		if t.Idx != i {
			return nil, fmt.Errorf("targets of %s out of order at %d", id, i)
		}
	}
	return out, nil
}

// Details loads the preview's details.
func (s *Store) Details(ctx context.Context, id string) (Details, error) {
	var d Details
	e, err := s.kv.Get(ctx, keyDetails(id))
	if natsx.IsNotFound(err) {
		return d, nil
	}
	if err != nil {
		return d, fmt.Errorf("reading preview details of %s: %w", id, err)
	}
	return d, json.Unmarshal(e.Value(), &d)
}

// StepStatus values. A step without a record has not been sent.
const (
	// StatusUncertain: sent (or about to be) without a known result: read
	// back before writing again.
	StatusUncertain = "uncertain"
	StatusDone      = "done"
	StatusFailed    = "failed"
	// StatusSkipped: nothing to do (a read-back of a must-change that failed).
	StatusSkipped = "skipped"
	// StatusFallback: the must-change flag was missing on read-back; the
	// fallback write named in Fallback is due (not sent yet).
	StatusFallback = "fallback"
	// StatusExcluded: not sent because the account became break-glass after
	// the preview (Detail says which list); the user's outcome is "excluded".
	StatusExcluded = "excluded"
)

// StepResult is what happened to one step of one user.
type StepResult struct {
	Status   string    `json:"status"`
	At       time.Time `json:"at"`             // sent (uncertain) or answered
	HTTP     int       `json:"http,omitempty"` // Graph's status
	Code     string    `json:"code,omitempty"` // Graph's error code
	LDAP     string    `json:"ldap,omitempty"` // LDAP's answer
	Detail   string    `json:"detail,omitempty"`
	Attempts int       `json:"attempts,omitempty"`
	Verified bool      `json:"verified,omitempty"` // learned by reading back after an uncertain write
	// Fallback is the fallback write due or in flight (verify_must_change);
	// FallbackDone the ones applied, in order.
	Fallback     mustchange.Write   `json:"fallback,omitempty"`
	FallbackDone []mustchange.Write `json:"fallback_done,omitempty"`
}

// Terminal reports whether the step needs nothing more.
func (r *StepResult) Terminal() bool {
	return r != nil && (r.Status == StatusDone || r.Status == StatusFailed || r.Status == StatusSkipped || r.Status == StatusExcluded)
}

// Progress is one user's record.
type Progress struct {
	Idx   int                  `json:"i"`
	Steps map[Step]*StepResult `json:"steps"`
}

// PutProgress stores one user's record.
func (s *Store) PutProgress(ctx context.Context, id string, p Progress) error {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encoding progress: %w", err)
	}
	if _, err := s.kv.Put(ctx, keyProgress(id, p.Idx), b); err != nil {
		return fmt.Errorf("storing progress of user %d of %s: %w", p.Idx, id, err)
	}
	return nil
}

// AllProgress loads every user's record of a campaign, by index.
func (s *Store) AllProgress(ctx context.Context, id string) (map[int]Progress, error) {
	out := map[int]Progress{}
	err := s.watch(ctx, "p."+id+".*", func(e jetstream.KeyValueEntry) error {
		var p Progress
		if err := json.Unmarshal(e.Value(), &p); err != nil {
			return fmt.Errorf("decoding %s: %w", e.Key(), err)
		}
		out[p.Idx] = p
		return nil
	})
	return out, err
}

// Intent is a $batch about to be sent.
type Intent struct {
	At    time.Time   `json:"at"`
	Items []IntentRef `json:"items"`
}

// IntentRef is one item of an Intent.
type IntentRef struct {
	Idx      int              `json:"i"`
	Step     Step             `json:"s"`
	Fallback mustchange.Write `json:"f,omitempty"` // a fallback write of verify_must_change
}

// PutIntent records a batch before it is sent.
func (s *Store) PutIntent(ctx context.Context, id, seq string, in Intent) error {
	b, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encoding intent: %w", err)
	}
	if _, err := s.kv.Put(ctx, keyIntent(id, seq), b); err != nil {
		return fmt.Errorf("recording batch intent: %w", err)
	}
	return nil
}

// DeleteIntent removes a batch's intent once its results are recorded.
func (s *Store) DeleteIntent(ctx context.Context, id, seq string) error {
	if err := s.kv.Purge(ctx, keyIntent(id, seq)); err != nil {
		return fmt.Errorf("removing batch intent: %w", err)
	}
	return nil
}

// Intents loads the intents left by a run that stopped, by key.
func (s *Store) Intents(ctx context.Context, id string) (map[string]Intent, error) {
	out := map[string]Intent{}
	err := s.watch(ctx, "b."+id+".*", func(e jetstream.KeyValueEntry) error {
		var in Intent
		if err := json.Unmarshal(e.Value(), &in); err != nil {
			return fmt.Errorf("decoding %s: %w", e.Key(), err)
		}
		out[strings.TrimPrefix(e.Key(), "b."+id+".")] = in
		return nil
	})
	return out, err
}

// Stats are the run's counters.
type Stats struct {
	Total  int `json:"total"`
	Done   int `json:"done"`   // every step done
	Failed int `json:"failed"` // some step failed for good
	// Excluded: users not (fully) written because they became break-glass
	// after the preview.
	Excluded  int `json:"excluded,omitempty"`
	Remaining int `json:"remaining"`
	Writes    int `json:"writes"`    // Graph writes answered 2xx
	Throttled int `json:"throttled"` // 429s seen
	Retries   int `json:"retries"`
	Verified  int `json:"verified"` // uncertain writes resolved by reading back
	// Fallbacks: users whose must-change flag was missing on read-back
	// (a 2xx that changed nothing) and who got the configured fallback.
	Fallbacks int `json:"fallbacks,omitempty"`
	LDAP      int `json:"ldap_writes"`
	// Confirmed and ConfirmFailed count the users marked compromised in
	// Entra ID Protection and those whose mark failed (confirm_compromised;
	// a failed mark does not make the user failed, see judged).
	Confirmed     int `json:"confirmed_compromised,omitempty"`
	ConfirmFailed int `json:"confirm_compromised_failed,omitempty"`
	// ADUnreachable: since when the DC cannot be reached (the AD lane
	// waits; zero when it can).
	ADUnreachable time.Time `json:"ad_unreachable_since,omitzero"`
	Started       time.Time `json:"started,omitzero"`
	Updated       time.Time `json:"updated,omitzero"`
	// Rate is users finished per second over the last stretch.
	Rate float64 `json:"rate"`
}

// PutStats stores the counters.
func (s *Store) PutStats(ctx context.Context, id string, st Stats) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encoding stats: %w", err)
	}
	_, err = s.kv.Put(ctx, keyStats(id), b)
	return err
}

// GetStats reads the counters (zero before a run).
func (s *Store) GetStats(ctx context.Context, id string) (Stats, error) {
	var st Stats
	e, err := s.kv.Get(ctx, keyStats(id))
	if natsx.IsNotFound(err) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("reading stats of %s: %w", id, err)
	}
	return st, json.Unmarshal(e.Value(), &st)
}
