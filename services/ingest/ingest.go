// Package ingest turns what happens in AD (and, later, in Entra) into events
// on the EVENTS stream.
package ingest

import (
	"context"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/ingest/adwatch"
	"github.com/pwsync/pwsync/shared/natsx"
)

// Deps is what ingest needs from the process.
type Deps struct {
	JS      jetstream.JetStream
	Domains []adwatch.Config
	Log     zerolog.Logger
}

// Service runs one AD watcher per domain.
type Service struct {
	watchers []*adwatch.Watcher
	log      zerolog.Logger
}

// New builds the watchers; a configuration error names the domain.
func New(ctx context.Context, d Deps) (*Service, error) {
	cursorsKV, err := natsx.Bucket(ctx, d.JS, natsx.BucketCursors)
	if err != nil {
		return nil, err
	}
	sink := NewEventSink(d.JS)
	s := &Service{log: d.Log}
	for _, dc := range d.Domains {
		w, err := adwatch.New(dc, sink, adwatch.KVCursors(cursorsKV), d.Log.With().Str("domain", dc.Domain).Logger())
		if err != nil {
			return nil, fmt.Errorf("domain %s: %w", dc.Domain, err)
		}
		s.watchers = append(s.watchers, w)
	}
	return s, nil
}

// Run runs every watcher until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(s.watchers))
	for _, w := range s.watchers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.Run(ctx); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// Ready reports whether every watcher finished its first sync.
func (s *Service) Ready() bool {
	for _, w := range s.watchers {
		if !w.Ready() {
			return false
		}
	}
	return true
}
