// Package ingest turns what happens in AD (and, later, in Entra) into events
// on the EVENTS stream.
package ingest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/ingest/adwatch"
	"github.com/pwsync/pwsync/services/ingest/graphwatch"
	"github.com/pwsync/pwsync/services/ingest/webhook"
	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/lease"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/shared/retry"
)

// Deps is what ingest needs from the process.
type Deps struct {
	JS      jetstream.JetStream
	NC      *nats.Conn
	Domains []adwatch.Config
	Log     zerolog.Logger
	// Holder is this replica's stable name in the leases (config instance:).
	Holder string
	// Sink receives the AD watchers' events; nil publishes to EVENTS.
	Sink adwatch.Sink
	// Graph, when set, runs the webhook receiver, the subscription manager
	// and the delta poller.
	Graph *GraphDeps
}

// GraphDeps configures the Graph side of ingest.
type GraphDeps struct {
	Tracker   graph.Tracker
	Listen    string // the receiver's address
	PublicURL string // https://host[:port][/prefix] that Graph calls (the ingress)
	TLSCert   string // serve TLS directly (else plain HTTP behind an ingress)
	TLSKey    string
	MaxBody   int64
	// DedupWindow: identical notifications arriving within it are taken for
	// Graph's redelivery of one (webhook.Config.DedupWindow).
	DedupWindow time.Duration
	Watch       graphwatch.Config // URLs are derived from PublicURL
}

// LeasePrefix + the domain name is the lease of a domain's AD watcher.
const LeasePrefix = natsx.LeaseADWatchPrefix

// Service runs one AD watcher per domain and, when configured, the Graph
// webhook receiver, subscription manager and delta poller. Each domain's
// watcher runs on the one replica holding the domain's lease (one DC load,
// one writer of the cursor); the others stand by and take over when the
// holder's lease expires. The receiver runs on every replica: it is
// stateless.
type Service struct {
	watchers []domainWatch
	graph    *graphwatch.Watcher
	server   *http.Server
	listener net.Listener
	log      zerolog.Logger
}

// domainWatch is one domain's watcher and the lease it runs under.
type domainWatch struct {
	domain string
	w      *adwatch.Watcher
	lease  *lease.Lease
	log    zerolog.Logger
}

// New builds the watchers; a configuration error names the domain.
func New(ctx context.Context, d Deps) (*Service, error) {
	cursorsKV, err := natsx.Bucket(ctx, d.JS, natsx.BucketCursors)
	if err != nil {
		return nil, err
	}
	var leasesKV jetstream.KeyValue
	if len(d.Domains) > 0 {
		if leasesKV, err = natsx.Bucket(ctx, d.JS, natsx.BucketLeases); err != nil {
			return nil, err
		}
	}
	if d.Holder == "" {
		d.Holder = lease.DefaultHolder()
	}
	var sink adwatch.Sink = NewEventSink(d.JS)
	if d.Sink != nil {
		sink = d.Sink
	}
	s := &Service{log: d.Log}
	auditW := audit.NewWriter(natsx.NewPublisher(d.JS), nil)
	for _, dc := range d.Domains {
		log := d.Log.With().Str("domain", dc.Domain).Logger()
		w, err := adwatch.New(dc, sink, adwatch.KVCursors(cursorsKV), log, adwatch.WithAudit(auditW))
		if err != nil {
			return nil, fmt.Errorf("domain %s: %w", dc.Domain, err)
		}
		l := lease.New(leasesKV, LeasePrefix+dc.Domain, d.Holder, natsx.LeaseRenew, log)
		s.watchers = append(s.watchers, domainWatch{domain: dc.Domain, w: w, lease: l, log: log})
	}
	if d.Graph != nil {
		if err := s.newGraph(d); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Service) newGraph(d Deps) error {
	g := d.Graph
	base := strings.TrimRight(g.PublicURL, "/")
	wc := g.Watch
	wc.NotificationURL, wc.LifecycleURL = base+webhook.PathNotifications, base+webhook.PathLifecycle
	if wc.Holder == "" {
		wc.Holder = d.Holder
	}
	gw, err := graphwatch.New(wc, g.Tracker, d.JS, d.Log.With().Str("component", "graphwatch").Logger())
	if err != nil {
		return fmt.Errorf("graph watcher: %w", err)
	}
	pub, err := webhook.NewAsyncPublisher(d.NC, 2*time.Second)
	if err != nil {
		return fmt.Errorf("webhook publisher: %w", err)
	}
	h := webhook.NewHandler(webhook.Config{MaxBody: g.MaxBody, DedupWindow: g.DedupWindow, Ready: webhook.NATSReady(d.NC)}, gw, pub,
		d.Log.With().Str("component", "webhook").Logger())
	ln, err := net.Listen("tcp", g.Listen)
	if err != nil {
		return fmt.Errorf("webhook.listen %s: %w", g.Listen, err)
	}
	if g.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(g.TLSCert, g.TLSKey)
		if err != nil {
			ln.Close()
			return fmt.Errorf("webhook.tls_cert: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	s.graph, s.listener = gw, ln
	s.server = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	return nil
}

// WebhookAddr is the receiver's listening address, or "" without one.
func (s *Service) WebhookAddr() string {
	if s.listener == nil {
		return ""
	}
	return s.listener.Addr().String()
}

// Run runs every watcher (and the receiver) until ctx ends. Shutdown stops
// intake first: the receiver answers its in-flight requests after their
// PubAck, then the watchers stop.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(s.watchers)+3)
	run := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errs <- err
			}
		}()
	}
	for _, dw := range s.watchers {
		run(func() error { dw.run(ctx); return nil })
	}
	if s.graph != nil {
		run(func() error { return s.graph.Run(ctx) })
		run(func() error {
			if err := s.server.Serve(s.listener); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("webhook receiver: %w", err)
			}
			return nil
		})
		run(func() error {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := s.server.Shutdown(sctx); err != nil {
				// A connection still open (a slow client, a half-done TLS
				// handshake) must not fail the stop: whatever it carried was
				// not answered 202, so Graph delivers it again.
				s.log.Warn().Err(err).Msg("webhook receiver: connections still open after 5s; closing them")
				_ = s.server.Close()
			}
			return nil
		})
		s.log.Info().Str("addr", s.listener.Addr().String()).Msg("webhook receiver started")
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// run watches the domain while this replica holds its lease, until ctx
// ends. Losing the lease stops the watcher (its context ends); the loop then
// waits for the lease again. A new holder's watcher resumes from the cursor
// the previous one saved.
func (dw domainWatch) run(ctx context.Context) {
	retry.Forever(ctx, retry.Constant(natsx.LeaseRenew), func(ctx context.Context) (bool, error) {
		return false, dw.lease.Run(ctx, dw.w.Run)
	}, retry.Notify(func(err error, _ time.Duration) {
		dw.log.Error().Err(err).Msg("AD watcher lease loop ended; restarting")
	}))
}

// Ready reports whether this replica does its part: the Graph secrets are
// loaded and the first delta round is stored (or another replica polls),
// and for each domain either this replica holds the lease and its watcher
// finished its first sync, or another replica holds it (standby).
func (s *Service) Ready() bool {
	if s.graph != nil && (!s.graph.Ready() || !s.graph.Synced()) {
		return false
	}
	for _, dw := range s.watchers {
		if dw.lease.Held() {
			if !dw.w.Ready() {
				return false
			}
		} else if !dw.lease.Standby() {
			return false // not yet tried, or between a loss and the next attempt
		}
	}
	return true
}

// DCs says which DC each AD watcher of this replica uses, for /readyz.
func (s *Service) DCs() string {
	var parts []string
	for _, dw := range s.watchers {
		if dw.lease.Held() {
			if dc := dw.w.DC(); dc != "" {
				parts = append(parts, dw.domain+" via "+dc)
			}
		}
	}
	return strings.Join(parts, ", ")
}

// Watching lists the domains whose AD watcher runs on this replica.
func (s *Service) Watching() []string {
	var out []string
	for _, dw := range s.watchers {
		if dw.lease.Held() {
			out = append(out, dw.domain)
		}
	}
	return out
}
