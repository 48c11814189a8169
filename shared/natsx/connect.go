// Package natsx owns pwsync's use of NATS: the embedded server, connections,
// the topology (streams, consumers, KV), publishing and the one adapter that
// maps handler errors to Ack / NakWithDelay / Term.
package natsx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
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
	// Log receives the server's warnings and errors (its notices at debug
	// level); nil discards them. Storage failures are recorded either way
	// (see StorageError).
	Log *zerolog.Logger
}

// Embedded is a running in-process nats-server.
type Embedded struct {
	srv     *server.Server
	dataDir string
	logs    *serverLog
}

// serverLog is nats-server's logger: it forwards to zerolog and keeps the
// first storage failure the server reports. nats-server says so only in
// its log: a store that hit ENOSPC or EACCES keeps refusing writes (its
// write error is sticky) and JetStream calls time out, or, on a permission
// error, JetStream shuts itself down; neither recovers without a restart.
type serverLog struct {
	log    zerolog.Logger
	mu     sync.Mutex
	err    error
	fatal  error         // e.g. "Can't start JetStream: ..." at start
	failed chan struct{} // closed with the first storage failure
}

func (l *serverLog) Noticef(format string, v ...any) { l.write(zerolog.DebugLevel, format, v) }
func (l *serverLog) Warnf(format string, v ...any)   { l.write(zerolog.WarnLevel, format, v) }
func (l *serverLog) Errorf(format string, v ...any)  { l.write(zerolog.ErrorLevel, format, v) }
func (l *serverLog) Fatalf(format string, v ...any) {
	l.mu.Lock()
	if l.fatal == nil {
		l.fatal = fmt.Errorf(format, v...)
	}
	l.mu.Unlock()
	l.write(zerolog.ErrorLevel, format, v)
}
func (l *serverLog) Debugf(string, ...any) {}
func (l *serverLog) Tracef(string, ...any) {}

func (l *serverLog) write(level zerolog.Level, format string, v []any) {
	msg := fmt.Sprintf(format, v...)
	if level >= zerolog.WarnLevel && isStorageFailure(msg) {
		l.mu.Lock()
		if l.err == nil {
			l.err = errors.New(msg)
			close(l.failed)
		}
		l.mu.Unlock()
	}
	l.log.WithLevel(level).Str("component", "nats-server").Msg(msg)
}

// isStorageFailure recognises nats-server's reports of a store it cannot
// write ("Critical write error: write .../1.blk: no space left on device",
// "File system permission denied when flushing stream state, disabling
// JetStream: ...").
func isStorageFailure(msg string) bool {
	for _, s := range []string{"no space left on device", "permission denied", "read-only file system",
		"input/output error", "Critical write error", "disabling JetStream"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
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
	logs := &serverLog{log: zerolog.Nop(), failed: make(chan struct{})}
	if cfg.Log != nil {
		logs.log = *cfg.Log
	}
	srv.SetLogger(logs, false, false)
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		if err := logs.fatalErr(); err != nil {
			return nil, fmt.Errorf("starting embedded nats on %s: %w", cfg.DataDir, err)
		}
		return nil, errors.New("starting embedded nats: not ready after 10s")
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		if err := logs.storageErr(); err != nil {
			return nil, fmt.Errorf("starting embedded nats: jetstream store %s: %w", cfg.DataDir, err)
		}
		return nil, fmt.Errorf("starting embedded nats: jetstream did not start on %s", cfg.DataDir)
	}
	return &Embedded{srv: srv, dataDir: cfg.DataDir, logs: logs}, nil
}

func (l *serverLog) fatalErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatal
}

func (l *serverLog) storageErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// StorageError is the first failure the server reported writing its store
// (disk full, permission denied...), or an error when JetStream is no
// longer running; nil while the store is writable. Either lasts until the
// server is restarted.
func (e *Embedded) StorageError() error {
	if err := e.logs.storageErr(); err != nil {
		return err
	}
	if !e.srv.JetStreamEnabled() && e.srv.Running() {
		return errors.New("jetstream was disabled by the embedded server")
	}
	return nil
}

// StorageFailed is closed when the server first reports a storage failure.
func (e *Embedded) StorageFailed() <-chan struct{} { return e.logs.failed }

// DataDir is the JetStream store directory.
func (e *Embedded) DataDir() string { return e.dataDir }

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
	plain := &plaintextWarning{log: log}
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
			plain.check(nc)
		}),
		nats.ConnectHandler(plain.check), // the first connection, when made by a retry

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
	plain.check(nc)
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("opening jetstream: %w", err)
	}
	return &Conn{NC: nc, JS: js, closed: closed}, nil
}

// plaintextWarning warns, once per connection, when it runs in clear to a
// server beyond loopback. Whether TLS is used is known only once connected
// (a server that requires TLS upgrades a nats:// URL), hence here and not
// in config check. Whoever reads the traffic sees actions, user state and
// subscription clientState secrets; whoever can inject into it is pwsync.
type plaintextWarning struct {
	log  zerolog.Logger
	once sync.Once
}

func (p *plaintextWarning) check(nc *nats.Conn) {
	if nc == nil || !nc.IsConnected() {
		return
	}
	if _, err := nc.TLSConnectionState(); err == nil {
		return
	}
	host, _, err := net.SplitHostPort(nc.ConnectedAddr()) // "" in-process
	if err != nil || isLoopback(host) {
		return
	}
	p.once.Do(func() {
		p.log.Warn().Str("nats_url", nc.ConnectedUrlRedacted()).
			Msg("nats connection is not encrypted and leaves this host: use tls:// with nats.ca_file (and credentials), or keep NATS on loopback")
	})
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

// isLoopback reports whether host (a name or an IP; "" or 0.0.0.0 mean
// every interface) stays on this machine.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
