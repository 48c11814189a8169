package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/natsx"
)

// storageHealth logs when JetStream's storage becomes full and when it has
// room again (/readyz reports it too, see health.Checker.StoreLimit), so that
// the cause is in the log, not only publishes failing with "insufficient
// resources" (which lose nothing: AD changes wait in AD behind the cookie,
// Graph gets 503 and redelivers, actions are redelivered).
type storageHealth struct {
	js    jetstream.JetStream
	limit int64 // the embedded server's limit; 0 with an external NATS (the account's applies)
	log   zerolog.Logger

	mu   sync.Mutex
	full bool
}

// storageCheckEvery is how often the store is checked without probes.
const storageCheckEvery = 10 * time.Second

// Run checks the store periodically until ctx ends, logging changes.
func (h *storageHealth) Run(ctx context.Context) error {
	t := time.NewTicker(storageCheckEvery)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = h.check(cctx)
		cancel()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// check returns an error naming the cause when the store is (nearly) full.
// An unreadable account is left to the readiness checks.
func (h *storageHealth) check(ctx context.Context) error {
	st, err := natsx.StorageUse(ctx, h.js, h.limit)
	if err != nil {
		return nil
	}
	full := st.Full()
	h.mu.Lock()
	changed := full != h.full
	h.full = full
	h.mu.Unlock()
	switch {
	case changed && full:
		h.log.Error().Int64("used_bytes", st.Used).Int64("limit_bytes", st.Limit).
			Msg("jetstream storage full: new events cannot be stored (AD changes wait in AD, Graph notifications get 503); free space or raise nats.embedded.max_store / the account's limit")
	case changed:
		h.log.Info().Int64("used_bytes", st.Used).Int64("limit_bytes", st.Limit).Msg("jetstream storage has room again")
	}
	if full {
		return fmt.Errorf("jetstream storage full: %s", st)
	}
	return nil
}
