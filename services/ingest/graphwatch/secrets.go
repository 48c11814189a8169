package graphwatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/shared/natsx"
)

// Keys of the subscriptions bucket.
const (
	keyCurrent = "current" // value: ID of the current /users subscription
	keyPrefix  = "sub."    // "sub.<id>": that subscription's record
)

const (
	// retiredGrace is how long a replaced subscription's clientState is still
	// accepted: notifications Graph had already sent (or is retrying) when it
	// was recreated. What they would trigger, a delta round, runs anyway
	// after a recreate, so the grace can be short.
	retiredGrace = 10 * time.Minute
	// missTTL remembers an unknown subscription ID briefly, so that a flood
	// of forged notifications does not become a flood of KV reads. The KV
	// watch clears an entry as soon as the subscription appears.
	missTTL   = 2 * time.Second
	maxMisses = 1024
	// lookupTimeout bounds the KV read on a cache miss: the webhook answers
	// Graph within 3 s.
	lookupTimeout = time.Second
)

// record is what the bucket keeps per subscription. ClientState is a secret:
// a record is never logged (String leaves it out).
type record struct {
	ID              string    `json:"id"`
	ClientState     string    `json:"client_state"`
	Expiration      time.Time `json:"expiration"`
	Resource        string    `json:"resource"`
	NotificationURL string    `json:"notification_url"`
	LifecycleURL    string    `json:"lifecycle_url"`
	Created         time.Time `json:"created"`
	RetiredAt       time.Time `json:"retired_at,omitzero"` // replaced by a new subscription
}

func (r record) String() string {
	return fmt.Sprintf("subscription %s (expires %s)", r.ID, r.Expiration.Format(time.RFC3339))
}

func subKey(id string) string { return keyPrefix + id }

// getRecord reads a subscription's record; nil, nil when there is none.
func getRecord(ctx context.Context, kv jetstream.KeyValue, id string) (*record, error) {
	e, err := kv.Get(ctx, subKey(id))
	if natsx.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading subscription %s: %w", id, err)
	}
	var r record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, fmt.Errorf("decoding subscription %s: %w", id, err)
	}
	return &r, nil
}

func putRecord(ctx context.Context, kv jetstream.KeyValue, r record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding subscription %s: %w", r.ID, err)
	}
	if _, err := kv.Put(ctx, subKey(r.ID), b); err != nil {
		return fmt.Errorf("storing subscription %s: %w", r.ID, err)
	}
	return nil
}

// secretCache answers clientState lookups from memory: a KV watch keeps it
// current on every replica, and a miss reads KV once, for a subscription
// created a moment ago whose update the watch has not delivered yet.
type secretCache struct {
	kv  jetstream.KeyValue
	now func() time.Time

	mu      sync.RWMutex
	byID    map[string]cachedSecret
	misses  map[string]time.Time // unknown ID -> when it was looked up (real time)
	current string
	loaded  bool // the watch delivered the bucket's initial content
}

type cachedSecret struct {
	secret    string
	retiredAt time.Time
}

func (c *secretCache) init(kv jetstream.KeyValue, now func() time.Time) {
	c.kv, c.now = kv, now
	c.byID, c.misses = map[string]cachedSecret{}, map[string]time.Time{}
}

func (c *secretCache) lookup(id string) (string, bool) {
	if id == "" {
		return "", false
	}
	c.mu.RLock()
	e, ok := c.byID[id]
	missAt, missed := c.misses[id]
	c.mu.RUnlock()
	if !ok {
		if missed && time.Since(missAt) < missTTL {
			return "", false
		}
		ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
		r, err := getRecord(ctx, c.kv, id)
		cancel()
		if err != nil {
			return "", false // NATS trouble: the webhook could not publish either
		}
		if r == nil {
			c.mu.Lock()
			if len(c.misses) >= maxMisses {
				clear(c.misses)
			}
			c.misses[id] = time.Now()
			c.mu.Unlock()
			return "", false
		}
		e = c.store(*r)
	}
	if !e.retiredAt.IsZero() && c.now().Sub(e.retiredAt) > retiredGrace {
		return "", false
	}
	return e.secret, true
}

func (c *secretCache) store(r record) cachedSecret {
	e := cachedSecret{secret: r.ClientState, retiredAt: r.RetiredAt}
	c.mu.Lock()
	c.byID[r.ID] = e
	delete(c.misses, r.ID)
	c.mu.Unlock()
	return e
}

// follow applies the bucket's changes to the cache until ctx ends or the
// watch fails. loaded is called once the initial content is in;
// currentChanged whenever, after that, the current subscription changes.
func (c *secretCache) follow(ctx context.Context, loaded, currentChanged func()) error {
	kw, err := c.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watching bucket %s: %w", natsx.BucketSubscriptions, err)
	}
	defer func() { _ = kw.Stop() }()
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case e, ok = <-kw.Updates():
		}
		switch {
		case !ok:
			return errors.New("watch of the subscriptions bucket ended")
		case e == nil: // end of the initial values
			c.mu.Lock()
			c.loaded = true
			c.mu.Unlock()
			loaded()
			continue
		}
		deleted := e.Operation() != jetstream.KeyValuePut
		switch key := e.Key(); {
		case key == keyCurrent:
			id := string(e.Value())
			if deleted {
				id = ""
			}
			c.mu.Lock()
			changed := c.loaded && id != c.current
			c.current = id
			c.mu.Unlock()
			if changed && id != "" {
				currentChanged()
			}
		case strings.HasPrefix(key, keyPrefix) && deleted:
			c.mu.Lock()
			delete(c.byID, strings.TrimPrefix(key, keyPrefix))
			c.mu.Unlock()
		case strings.HasPrefix(key, keyPrefix):
			var r record
			if json.Unmarshal(e.Value(), &r) == nil && r.ID != "" {
				c.store(r)
			}
		}
	}
}

// watchSecrets keeps the cache current until ctx ends.
func (w *Watcher) watchSecrets(ctx context.Context) {
	w.keep(ctx, "subscriptions watch failed; cached secrets may be stale", func(ctx context.Context) error {
		return w.secrets.follow(ctx, func() { w.ready.Store(true) }, w.kick)
	})
}
