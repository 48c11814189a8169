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
//
// With the embedded server it also watches for a store that cannot be
// written at all (disk full: ENOSPC; unwritable: EACCES, EROFS, EIO), which
// nats-server reports only in its log: the failed stream keeps refusing
// writes, or JetStream shuts itself down, until the server restarts.
type storageHealth struct {
	js    jetstream.JetStream
	limit int64 // the embedded server's limit; 0 with an external NATS (the account's applies)
	log   zerolog.Logger
	emb   *natsx.Embedded // nil with an external NATS

	mu     sync.Mutex
	full   bool
	failed bool
}

// storageCheckEvery is how often the store is checked without probes.
const storageCheckEvery = 10 * time.Second

// Run checks the store periodically until ctx ends, logging changes.
func (h *storageHealth) Run(ctx context.Context) error {
	t := time.NewTicker(storageCheckEvery)
	defer t.Stop()
	var storeFailed <-chan struct{}
	if h.emb != nil {
		storeFailed = h.emb.StorageFailed()
	}
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = h.check(cctx)
		cancel()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-storeFailed:
			storeFailed = nil // closed for good: check at once, then on the ticker
		}
	}
}

// check returns an error naming the cause when the store is (nearly) full.
// An unreadable account is left to the readiness checks.
func (h *storageHealth) check(ctx context.Context) error {
	if err := h.storeError(); err != nil {
		return err
	}
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

// storeError logs, once, that the embedded server cannot write its store,
// and returns why. Nothing acknowledged is lost: what was stored before the
// failure is on disk, and what could not be stored was refused to its
// source, which retries (the AD watcher keeps its cookie, Graph's
// notifications get 503, actions are redelivered).
func (h *storageHealth) storeError() error {
	if h.emb == nil {
		return nil
	}
	cause := h.emb.StorageError()
	if cause == nil {
		return nil
	}
	h.mu.Lock()
	first := !h.failed
	h.failed = true
	h.mu.Unlock()
	if first {
		h.log.Error().Str("data_dir", h.emb.DataDir()).Str("cause", cause.Error()).
			Msg("jetstream store cannot be written: new events, actions and audit records are refused (AD changes wait in AD, Graph notifications get 503, nothing stored is lost); free space or restore write permission on nats.embedded.data_dir, then restart pwsync: the embedded server does not write to a failed store again before a restart")
	}
	return fmt.Errorf("jetstream store cannot be written: %w", cause)
}
