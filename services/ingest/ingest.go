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
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/natsx"
)

// Deps is what ingest needs from the process.
type Deps struct {
	JS      jetstream.JetStream
	NC      *nats.Conn
	Domains []adwatch.Config
	Log     zerolog.Logger
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
	Watch     graphwatch.Config // URLs are derived from PublicURL
}

// Service runs one AD watcher per domain and, when configured, the Graph
// webhook receiver, subscription manager and delta poller.
type Service struct {
	watchers []*adwatch.Watcher
	graph    *graphwatch.Watcher
	server   *http.Server
	listener net.Listener
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
	gw, err := graphwatch.New(wc, g.Tracker, d.JS, d.Log.With().Str("component", "graphwatch").Logger())
	if err != nil {
		return fmt.Errorf("graph watcher: %w", err)
	}
	pub, err := webhook.NewAsyncPublisher(d.NC, 2*time.Second)
	if err != nil {
		return fmt.Errorf("webhook publisher: %w", err)
	}
	h := webhook.NewHandler(webhook.Config{MaxBody: g.MaxBody, Ready: webhook.NATSReady(d.NC)}, gw, pub,
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
	for _, w := range s.watchers {
		run(func() error { return w.Run(ctx) })
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
			return s.server.Shutdown(sctx)
		})
		s.log.Info().Str("addr", s.listener.Addr().String()).Msg("webhook receiver started")
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// Ready reports whether every watcher finished its first sync.
func (s *Service) Ready() bool {
	if s.graph != nil && !s.graph.Ready() {
		return false
	}
	for _, w := range s.watchers {
		if !w.Ready() {
			return false
		}
	}
	return true
}
