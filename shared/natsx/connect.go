// Package natsx owns pwsync's use of NATS: the embedded server, connections,
// the topology (streams, consumers, KV), publishing and the one adapter that
// maps handler errors to Ack / NakWithDelay / Term.
package natsx

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// EmbeddedConfig configures the in-process nats-server used when no external URL is set.
type EmbeddedConfig struct {
	DataDir string // JetStream store directory
	Listen  string // "host:port" to also accept outside clients; empty = in-process only
	// MaxStore bounds JetStream's disk use in bytes; 0 = nats-server's default.
	MaxStore int64
}

// Embedded is a running in-process nats-server.
type Embedded struct {
	srv *server.Server
}

// StartEmbedded starts a nats-server with JetStream in this process.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("starting embedded nats: data dir is empty")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("starting embedded nats: creating data dir: %w", err)
	}
	opts := &server.Options{
		ServerName: "pwsync-embedded",
		JetStream:  true,
		StoreDir:   cfg.DataDir,
		NoSigs:     true,
		NoLog:      true,
	}
	if cfg.MaxStore > 0 {
		opts.JetStreamMaxStore = cfg.MaxStore
	}
	if cfg.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := splitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("starting embedded nats: nats.embedded.listen: %w", err)
		}
		if port == 0 {
			port = server.RANDOM_PORT // ":0" means any free port, as with net.Listen
		}
		opts.Host, opts.Port = host, port
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("starting embedded nats: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("starting embedded nats: not ready after 10s")
	}
	return &Embedded{srv: srv}, nil
}

// ConnectOption returns the nats option that connects to this server in-process.
func (e *Embedded) ConnectOption() nats.Option { return nats.InProcessServer(e.srv) }

// ClientURL is the server's URL when it listens, else "".
func (e *Embedded) ClientURL() string {
	if e.srv.Addr() == nil {
		return ""
	}
	return e.srv.ClientURL()
}

// MaxStore is the server's effective JetStream storage limit in bytes: the
// configured one, or what nats-server derived from the free disk.
func (e *Embedded) MaxStore() int64 {
	if c := e.srv.JetStreamConfig(); c != nil {
		return c.MaxStore
	}
	return 0
}

// Shutdown stops the server and waits for it.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// Conn is a NATS connection with its JetStream context.
type Conn struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	closed chan struct{}
}

// ConnectConfig says where and how to connect.
type ConnectConfig struct {
	URL       string // external server(s), comma separated; empty with Embedded set
	Embedded  *Embedded
	Name      string
	CredsFile string
	NKeyFile  string
	CAFile    string
}

// Connect connects to NATS and opens JetStream. Reconnects forever: an outage
// pauses work, it never ends the process.
func Connect(cfg ConnectConfig, log zerolog.Logger) (*Conn, error) {
	closed := make(chan struct{})
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn().Err(err).Msg("nats disconnected")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("nats_url", nc.ConnectedUrlRedacted()).Msg("nats reconnected")
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
		// Without a handler nats.go prints async errors (e.g. a KV watcher's
		// consumer lost in an outage) to stderr, outside the structured log.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Warn().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("nats async error")
		}),
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.NKeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading nats nkey %s: %w", cfg.NKeyFile, err)
		}
		opts = append(opts, o)
	}
	if cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CAFile))
	}
	url := cfg.URL
	if cfg.Embedded != nil {
		opts = append(opts, cfg.Embedded.ConnectOption())
		url = ""
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to nats: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("opening jetstream: %w", err)
	}
	return &Conn{NC: nc, JS: js, closed: closed}, nil
}

// Drain drains the connection (pending publishes and subscriptions finish) and
// waits until it is closed or ctx ends.
func (c *Conn) Drain(ctx context.Context) {
	if err := c.NC.Drain(); err != nil {
		c.NC.Close()
		return
	}
	select {
	case <-c.closed:
	case <-ctx.Done():
		c.NC.Close()
	}
}

func splitHostPort(hp string) (string, int, error) {
	var host string
	var port int
	i := len(hp) - 1
	for i >= 0 && hp[i] != ':' {
		i--
	}
	if i < 0 {
		return "", 0, fmt.Errorf("%q is not host:port", hp)
	}
	host = hp[:i]
	if _, err := fmt.Sscanf(hp[i+1:], "%d", &port); err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q has no valid port", hp)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}
