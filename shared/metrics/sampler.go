package metrics

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Sampler reads, on an interval, what only NATS knows: every consumer's lag
// and the holder of every lease. Any replica may run it; the figures are the
// cluster's, not the replica's.
type Sampler struct {
	JS           jetstream.JetStream
	LeasesBucket string        // KV bucket of the leases; "" = no lease sampling
	Interval     time.Duration // default 15 s
	Log          zerolog.Logger
}

// Run samples until ctx ends.
func (s Sampler) Run(ctx context.Context) {
	if s.Interval <= 0 {
		s.Interval = 15 * time.Second
	}
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	for {
		if err := s.Sample(ctx); err != nil && ctx.Err() == nil {
			s.Log.Debug().Err(err).Msg("sampling nats metrics")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sample takes one sample. Only durable consumers of pwsync's streams are
// sampled: KV buckets' streams (KV_*) carry short-lived ordered consumers for
// every watch and Get, and an ephemeral consumer's name is new each time, so
// either would add a series per read that is never updated again. Series of
// consumers (or streams) that are gone are deleted.
func (s Sampler) Sample(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var errs []error
	// seen holds the series set now; skipped the streams whose consumers
	// could not be read, whose series are kept as they are.
	seen := map[series]bool{}
	skipped := map[string]bool{}
	names := s.JS.StreamNames(ctx)
	for name := range names.Name() {
		if strings.HasPrefix(name, "KV_") {
			continue
		}
		st, err := s.JS.Stream(ctx, name)
		if err != nil {
			errs = append(errs, fmt.Errorf("stream %s: %w", name, err))
			skipped[name] = true
			continue
		}
		infos := st.ListConsumers(ctx)
		for ci := range infos.Info() {
			if ci.Config.Durable == "" {
				continue
			}
			seen[series{name, ci.Name}] = true
			ConsumerPending.WithLabelValues(name, ci.Name).Set(float64(ci.NumPending))
			ConsumerAckPending.WithLabelValues(name, ci.Name).Set(float64(ci.NumAckPending))
		}
		if err := infos.Err(); err != nil {
			errs = append(errs, fmt.Errorf("consumers of %s: %w", name, err))
			skipped[name] = true
		}
	}
	if err := names.Err(); err != nil {
		errs = append(errs, fmt.Errorf("listing streams: %w", err))
	} else {
		forgetStale(seen, skipped)
	}
	if s.LeasesBucket != "" {
		if err := s.sampleLeases(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// series is one (stream, consumer) pair of the consumer gauges.
type series struct{ stream, consumer string }

// sampled is every series the samplers of this process have set (the gauges
// are process-wide, so is this).
var sampled = struct {
	sync.Mutex
	set map[series]bool
}{set: map[series]bool{}}

// forgetStale records seen and deletes the series set before that are no
// longer there, except those of a stream that could not be read.
func forgetStale(seen map[series]bool, skipped map[string]bool) {
	sampled.Lock()
	defer sampled.Unlock()
	for k := range sampled.set {
		if !seen[k] && !skipped[k.stream] {
			ConsumerPending.DeleteLabelValues(k.stream, k.consumer)
			ConsumerAckPending.DeleteLabelValues(k.stream, k.consumer)
			delete(sampled.set, k)
		}
	}
	for k := range seen {
		sampled.set[k] = true
	}
}

func (s Sampler) sampleLeases(ctx context.Context) error {
	holders, err := LeaseHolders(ctx, s.JS, s.LeasesBucket)
	if err != nil {
		return err
	}
	LeaseHolder.Reset()
	for name, holder := range holders {
		LeaseHolder.WithLabelValues(name, holder).Set(1)
	}
	return nil
}

// LeaseHolders reads every lease and its holder from the leases bucket.
func LeaseHolders(ctx context.Context, js jetstream.JetStream, bucket string) (map[string]string, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", bucket, err)
	}
	// One pass over the latest values; a lease whose TTL expired is gone.
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("reading leases: %w", err)
	}
	defer w.Stop()
	out := map[string]string{}
	for e := range w.Updates() {
		if e == nil { // initial values done
			return out, nil
		}
		out[e.Key()] = string(e.Value())
	}
	return out, fmt.Errorf("reading leases: %w", ctx.Err())
}
