// Package ldapconn opens connections to a domain controller: the one dial,
// TLS and bind that every part of pwsync speaking LDAP uses (the AD watcher,
// campaigns' AD lane, conformance and doctor), so that they verify the DC's
// certificate the same way and fail the same way.
package ldapconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// DefaultDialTimeout bounds the TCP (and TLS) connect when Config sets none.
const DefaultDialTimeout = 10 * time.Second

// Config is how to reach and bind to one DC.
type Config struct {
	URL          string // ldaps://host:636, or ldap://host:389 (with StartTLS, or plain where allowed)
	StartTLS     bool
	BindDN       string
	BindPassword string
	DialTimeout  time.Duration // default DefaultDialTimeout
	KeepAlive    time.Duration // TCP keep-alive; 0: Go's default
	// RequestTimeout bounds each request on the connection; 0 leaves
	// go-ldap's default (none).
	RequestTimeout time.Duration
	// Kerberos, when set, binds with GSSAPI and a keytab instead of
	// BindDN/BindPassword (kerberos.go).
	Kerberos *Kerberos
}

// TLSConfig is the TLS configuration for a DC at rawURL: TLS 1.2 or later,
// the certificate checked against the PEM CAs in caFile (the system pool
// when caFile is empty) for the URL's host name. insecure turns the check
// off; it is an explicit, logged opt-out of the callers.
func TLSConfig(rawURL, caFile string, insecure bool) (*tls.Config, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("URL %q: %w", rawURL, err)
	}
	tc := &tls.Config{
		ServerName:         u.Hostname(),
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: insecure, //nolint:gosec // explicit opt-out
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// Connect dials cfg.URL and, with StartTLS, upgrades the connection; it does
// not bind (doctor looks at the TLS state first). tc is cloned, never kept.
func Connect(cfg Config, tc *tls.Config) (*ldap.Conn, error) {
	timeout := cfg.DialTimeout
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	c, err := ldap.DialURL(cfg.URL,
		ldap.DialWithDialer(&net.Dialer{Timeout: timeout, KeepAlive: cfg.KeepAlive}),
		ldap.DialWithTLSConfig(tc.Clone()))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", cfg.URL, err)
	}
	if cfg.StartTLS {
		if err := c.StartTLS(tc.Clone()); err != nil {
			c.Close()
			return nil, fmt.Errorf("StartTLS with %s: %w", cfg.URL, err)
		}
	}
	if cfg.RequestTimeout > 0 {
		c.SetTimeout(cfg.RequestTimeout)
	}
	return c, nil
}

// Dial connects (Connect) and binds (Bind).
func Dial(cfg Config, tc *tls.Config) (*ldap.Conn, error) {
	c, err := Connect(cfg, tc)
	if err != nil {
		return nil, err
	}
	if err := Bind(c, cfg); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Bind binds c as cfg says: with Kerberos when cfg.Kerberos is set, else
// with a simple bind as cfg.BindDN.
func Bind(c *ldap.Conn, cfg Config) error {
	if cfg.Kerberos != nil {
		return bindKerberos(c, cfg)
	}
	if err := c.Bind(cfg.BindDN, cfg.BindPassword); err != nil {
		return fmt.Errorf("binding to %s as %s: %w", cfg.URL, cfg.BindDN, err)
	}
	return nil
}

// IsNetwork reports whether err is a network-level failure: the DC (or,
// for a Kerberos bind, every KDC) was not reached or the connection broke.
// From Dial it means nothing was sent, so a write that failed this way was
// not attempted.
func IsNetwork(err error) bool {
	return ldap.IsErrorAnyOf(err, ldap.ErrorNetwork) || errors.Is(err, ErrKDCUnreachable)
}
