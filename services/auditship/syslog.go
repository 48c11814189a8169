package auditship

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/pwsync/pwsync/shared/events"
)

// Sink delivers batches of records to one SIEM. Send returns nil only when
// the sink accepted every record of the batch; the batch is then acked.
type Sink interface {
	Send(ctx context.Context, recs []events.AuditRecord) error
	Close() error
}

// SyslogConfig configures a syslog sink.
type SyslogConfig struct {
	Network  string // tls | tcp | udp
	Address  string
	Format   string // json | cef
	TLS      *tls.Config
	Header   syslogHeader
	MaxField int
	Version  string // pwsync's, in CEF's header
}

// syslogSink writes RFC 5424 messages: octet-counted on TLS and TCP (RFC
// 5425 / 6587), one datagram each on UDP (RFC 5426).
type syslogSink struct {
	cfg  SyslogConfig
	conn net.Conn
	buf  []byte
	// probed: when the connection was last found open (after a batch):
	// a batch right after needs no probe of its own.
	probed time.Time
}

// NewSyslog returns a syslog sink; it connects at the first Send.
func NewSyslog(cfg SyslogConfig) Sink { return &syslogSink{cfg: cfg} }

// SyslogTLS builds the client TLS config: our CA bundle or the system
// roots, and an optional client certificate.
func SyslogTLS(caFile, serverName, certFile, keyFile string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("syslog ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("syslog ca_file %s: no PEM certificate in it", caFile)
		}
		tc.RootCAs = pool
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("syslog client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

func (s *syslogSink) message(r events.AuditRecord) []byte {
	m := s.render(bounded(r, s.cfg.MaxField))
	if s.cfg.Network == "udp" && len(m) > maxDatagram {
		// Many long fields: a datagram cannot carry it, and a send that
		// always fails would hold the sink's backlog for ever.
		m = s.render(bounded(r, 512))
	}
	return m
}

// maxDatagram keeps a UDP message within one IPv4 datagram.
const maxDatagram = 65000

func (s *syslogSink) render(r events.AuditRecord) []byte {
	var msg []byte
	if s.cfg.Format == "cef" {
		msg = cefMessage(r, s.cfg.Version)
	} else {
		msg = jsonMessage(r)
	}
	return s.cfg.Header.rfc5424(r, msg)
}

func (s *syslogSink) Send(ctx context.Context, recs []events.AuditRecord) error {
	if err := s.connect(ctx); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = s.conn.SetWriteDeadline(deadline)
	if s.cfg.Network == "udp" {
		for _, r := range recs {
			if _, err := s.conn.Write(s.message(r)); err != nil {
				s.drop()
				return fmt.Errorf("syslog udp %s: %w", s.cfg.Address, err)
			}
		}
		return nil
	}
	s.buf = s.buf[:0]
	for _, r := range recs {
		s.buf = octetCounted(s.buf, s.message(r))
	}
	if _, err := s.conn.Write(s.buf); err != nil {
		s.drop()
		return fmt.Errorf("syslog %s %s: %w", s.cfg.Network, s.cfg.Address, err)
	}
	// A server that closed the connection while we wrote has not taken
	// the batch: send it again on a new connection (at least once).
	if err := s.alive(); err != nil {
		s.drop()
		return fmt.Errorf("syslog %s %s: connection closed by the server during the batch: %w", s.cfg.Network, s.cfg.Address, err)
	}
	s.probed = time.Now()
	return nil
}

// connect dials when there is no connection, or when the server closed
// the one we have: a write to a connection the server already closed
// succeeds locally and its records are lost, so it is probed first.
func (s *syslogSink) connect(ctx context.Context) error {
	if s.conn != nil && s.cfg.Network != "udp" && time.Since(s.probed) > 50*time.Millisecond {
		if s.alive() != nil {
			s.drop()
		}
	}
	if s.conn != nil {
		return nil
	}
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	var (
		c   net.Conn
		err error
	)
	switch s.cfg.Network {
	case "tls":
		td := &tls.Dialer{NetDialer: d, Config: s.cfg.TLS}
		c, err = td.DialContext(ctx, "tcp", s.cfg.Address)
	case "tcp", "udp":
		c, err = d.DialContext(ctx, s.cfg.Network, s.cfg.Address)
	default:
		return fmt.Errorf("syslog: unknown network %q", s.cfg.Network)
	}
	if err != nil {
		return fmt.Errorf("syslog %s %s: %w", s.cfg.Network, s.cfg.Address, err)
	}
	s.conn = c
	return nil
}

// alive reads with a tiny deadline: a syslog server never writes, so
// anything but a timeout (EOF, a reset, a TLS alert) means it hung up.
func (s *syslogSink) alive() error {
	_ = s.conn.SetReadDeadline(time.Now().Add(time.Millisecond))
	var one [1]byte
	_, err := s.conn.Read(one[:])
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	if err == nil {
		return errors.New("unexpected data from the syslog server")
	}
	return err
}

func (s *syslogSink) drop() {
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn = nil
	}
}

func (s *syslogSink) Close() error {
	s.drop()
	return nil
}
