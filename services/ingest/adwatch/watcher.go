// Package adwatch watches one Active Directory domain and publishes every
// user's password-relevant state when it changes: DirSync deltas (or a
// uSNChanged poll where DirSync is not granted), polled on an interval and at
// once when the DC's change notification says something changed. Each changed
// user's full state is re-read, since deltas carry only the changed
// attributes, and handed to a durable Sink; the cursor is saved after each
// published batch, so a restart resumes without re-emitting.
package adwatch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/shared/retry"
)

// Sink stores users' states durably: Publish returns after JetStream acked
// every event (users[i].EventID() as Nats-Msg-Id).
type Sink interface {
	Publish(ctx context.Context, users []events.ADUser) error
}

// PolicySink records a domain's password policy when it changed. A Sink
// may implement it; the watcher then publishes policy events too.
type PolicySink interface {
	PublishPolicy(ctx context.Context, p events.ADPolicy) error
}

// Cursors persists the watcher's position per domain.
type Cursors interface {
	Load(ctx context.Context, key string) ([]byte, error) // nil, nil when there is none
	Save(ctx context.Context, key string, v []byte) error
}

// Auditor appends records to the audit trail (audit.Writer does).
type Auditor interface {
	Write(ctx context.Context, r events.AuditRecord) error
}

// Option adjusts a Watcher that New builds.
type Option func(*Watcher)

// WithAudit records in the audit trail what the watcher decides on its own
// and an operator must be able to find later (a restored DC's full resync).
func WithAudit(a Auditor) Option { return func(w *Watcher) { w.auditor = a } }

// Watcher watches one domain. Run it once.
type Watcher struct {
	cfg     Config
	sink    Sink
	cursors Cursors
	log     zerolog.Logger
	auditor Auditor // nil: nothing is audited (tests, one-off reads)

	dc           atomic.Pointer[string] // the DC in use (URL); nil before the first connect
	hung         atomic.Pointer[string] // a DC that stopped answering: tried last until it answers again
	dcInvocation atomic.Pointer[string] // its invocationId, stamped on every user event

	ready     atomic.Bool
	notifying atomic.Bool   // the change notification search is open
	lastPush  atomic.Int64  // when the last notification arrived (unix ns), for latency breakdowns
	trigger   chan struct{} // a notification arrived: poll now (capacity 1 coalesces bursts)
	mode      string        // ModeDirSync or ModeUSN once decided; auto decides on first connect

	policySink PolicySink   // nil when the sink does not record policies
	pol        *policyWatch // the password policy as last read (session goroutine only)
	policyRev  int64        // stamped on every user event (see policy.go)
	lastPolicy time.Time
}

// New checks cfg and returns a Watcher; errors name the setting to fix.
func New(cfg Config, sink Sink, cursors Cursors, log zerolog.Logger, opts ...Option) (*Watcher, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if sink == nil || cursors == nil {
		return nil, errors.New("adwatch: New needs a Sink and Cursors")
	}
	for _, u := range cfg.URLs {
		if _, err := cfg.tlsConfig(u); err != nil {
			return nil, fmt.Errorf("adwatch config for domain %q: %w", cfg.Domain, err)
		}
	}
	log = log.With().Str("component", "adwatch").Str("domain", cfg.Domain).Logger()
	if cfg.InsecureSkipVerify {
		log.Warn().Msg("InsecureSkipVerify is set: the DC's certificate is not verified")
	}
	if cfg.AllowPlain && !cfg.StartTLS {
		log.Warn().Msg("AllowPlain: plain LDAP without StartTLS; the bind password is sent in clear")
	}
	w := &Watcher{cfg: cfg, sink: sink, cursors: cursors, log: log, trigger: make(chan struct{}, 1)}
	w.policySink, _ = sink.(PolicySink)
	for _, o := range opts {
		o(w)
	}
	if cfg.Mode != ModeAuto {
		w.mode = cfg.Mode
	}
	return w, nil
}

// Ready reports whether the watcher is connected and its first sync is done.
func (w *Watcher) Ready() bool { return w.ready.Load() }

// Run watches until ctx ends, then returns nil. A DC that is unreachable, or
// lost midway, is retried with exponential backoff; nothing here ends the process.
func (w *Watcher) Run(ctx context.Context) error {
	// a session that got ready starts the delays over
	retry.Forever(ctx, retry.Exponential(500*time.Millisecond, time.Minute, 0), func(ctx context.Context) (bool, error) {
		reachedReady, err := w.session(ctx)
		w.ready.Store(false)
		return reachedReady, err
	}, retry.Notify(func(err error, d time.Duration) {
		w.log.Error().Err(err).Dur("retry_in", d).Msg("AD watch interrupted; retrying")
	}))
	return nil
}

// source is the change reader of one mode.
type source interface {
	start(ctx context.Context, c *ldap.Conn) error // resume from the cursor, or full sync
	// poll publishes what changed since; periodic is false for a poll that a
	// change notification triggered, where only latency matters.
	poll(ctx context.Context, c *ldap.Conn, periodic bool) error
}

// session connects, syncs and polls until an error or the end of ctx.
func (w *Watcher) session(ctx context.Context) (reachedReady bool, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(nil); wg.Wait() }()

	c, dc, earlier, err := w.pick(ctx)
	if err != nil {
		return false, err
	}
	defer c.Close()
	// LDAP calls do not take a context: closing the connection ends a long
	// search when ctx ends.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if len(earlier) > 0 {
		// Not on the preferred DC: go back to an earlier one once it answers.
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.probeEarlier(ctx, cancel, dc, earlier)
		}()
	}

	if err := w.readDCID(c); err != nil {
		return false, fmt.Errorf("reading the identity of %s: %w", dc, err)
	}
	src, err := w.source(c)
	if err != nil {
		return false, err
	}
	log := w.log.With().Str("mode", w.mode).Logger()
	done := w.watchRequest(ctx, &wg, cancel, dc)
	err = w.begin(ctx, c, src)
	done()
	if err != nil {
		return false, hungOr(ctx, err)
	}
	w.ready.Store(true)
	log.Info().Str("dc", dc).Dur("poll_interval", w.cfg.PollInterval).Bool("notifications", w.cfg.Notifications).Msg("watching AD")

	if w.cfg.Notifications {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.listen(ctx)
		}()
	}
	poll := time.NewTimer(0) // at once: catch what changed during a long full sync
	defer poll.Stop()
	for {
		periodic := false
		select {
		case <-ctx.Done():
			if err := context.Cause(ctx); errors.Is(err, errEarlierBack) || errors.Is(err, errDCHung) {
				return true, err // reconnect at once, to the earlier or the next DC
			}
			return true, nil
		case <-w.trigger:
		case <-poll.C:
			periodic = true
		}
		done := w.watchRequest(ctx, &wg, cancel, dc)
		err := w.round(ctx, c, src, periodic)
		done()
		if err != nil {
			return true, hungOr(ctx, err)
		}
		// only a periodic poll restarts the interval: a stream of
		// notifications must not postpone the periodic one forever
		if periodic {
			poll.Reset(w.cfg.PollInterval)
		}
	}
}

// begin reads the password policy, then resumes src (or full-syncs).
func (w *Watcher) begin(ctx context.Context, c *ldap.Conn, src source) error {
	// the policy first: the full sync computes fallback expiries from it
	if err := w.startPolicy(ctx, c); err != nil {
		return fmt.Errorf("reading password policy: %w", err)
	}
	return src.start(ctx, c)
}

// round polls src once and, on a periodic poll when it is due, checks the
// password policy.
func (w *Watcher) round(ctx context.Context, c *ldap.Conn, src source, periodic bool) error {
	if err := src.poll(ctx, c, periodic); err != nil {
		return fmt.Errorf("polling in %s mode: %w", w.mode, err)
	}
	if periodic && time.Since(w.lastPolicy) >= w.cfg.PolicyInterval {
		w.lastPolicy = time.Now()
		if err := w.checkPolicy(ctx, c); err != nil {
			return fmt.Errorf("checking password policy: %w", err)
		}
	}
	return nil
}

// source returns the reader for the configured mode; in auto mode the first
// connection decides, once: DirSync unless the DC refuses it.
func (w *Watcher) source(c *ldap.Conn) (source, error) {
	switch w.mode {
	case ModeDirSync:
		return w.newDirSync(), nil
	case ModeUSN:
		return w.newUSNPoll(), nil
	}
	ds := w.newDirSync()
	_, err := ds.nowCookie(c)
	switch {
	case err == nil:
		w.mode = ModeDirSync
		return ds, nil
	case errors.Is(err, errDirSyncRefused):
		w.log.Warn().Err(err).Msg("DirSync refused (grant \"Replicating Directory Changes\" or use the domain root as BaseDN); falling back to the uSNChanged poll")
		w.mode = ModeUSN
		return w.newUSNPoll(), nil
	default:
		return nil, err
	}
}

// saveTimeout bounds a cursor save.
const saveTimeout = 10 * time.Second

// saveCursor stores a cursor even when ctx has just ended: what was published
// is published, and recording it spares a restart from emitting it again.
func (w *Watcher) saveCursor(ctx context.Context, key string, v []byte) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), saveTimeout)
	defer cancel()
	if err := w.cursors.Save(ctx, key, v); err != nil {
		return fmt.Errorf("saving cursor %s: %w", key, err)
	}
	return nil
}

// audit writes an audit record, bounded like a cursor save and even when
// ctx has just ended.
func (w *Watcher) audit(ctx context.Context, r events.AuditRecord) error {
	if w.auditor == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), saveTimeout)
	defer cancel()
	if err := w.auditor.Write(ctx, r); err != nil {
		return fmt.Errorf("auditing %s: %w", r.Action, err)
	}
	return nil
}

// KVCursors keeps cursors in a NATS KV bucket (natsx.BucketCursors).
func KVCursors(kv jetstream.KeyValue) Cursors { return kvCursors{kv: kv} }

type kvCursors struct{ kv jetstream.KeyValue }

func (k kvCursors) Load(ctx context.Context, key string) ([]byte, error) {
	e, err := k.kv.Get(ctx, key)
	if natsx.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s from bucket %s: %w", key, k.kv.Bucket(), err)
	}
	return e.Value(), nil
}

func (k kvCursors) Save(ctx context.Context, key string, v []byte) error {
	if _, err := k.kv.Put(ctx, key, v); err != nil {
		return fmt.Errorf("writing %s to bucket %s: %w", key, k.kv.Bucket(), err)
	}
	return nil
}
