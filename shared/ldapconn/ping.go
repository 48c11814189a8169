package ldapconn

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// Ping asks the DC at rawURL for its rootDSE on a new connection, without
// a bind (the rootDSE is readable anonymously), and reports whether it
// answered within timeout: connect, TLS handshake (ldaps://) and the answer
// together. It ends early when ctx does. It tells a DC that is slow from
// one that is hung: a stopped process or frozen VM still has its TCP
// connections acknowledged by the kernel, so a request already sent to it
// fails only at its own timeout.
func Ping(ctx context.Context, rawURL string, tc *tls.Config, timeout time.Duration) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("URL %q: %w", rawURL, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	host, isTLS := u.Host, u.Scheme == "ldaps"
	if u.Port() == "" {
		port := "389"
		if isTLS {
			port = "636"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	var nc net.Conn
	if isTLS {
		nc, err = (&tls.Dialer{Config: tc.Clone()}).DialContext(ctx, "tcp", host)
	} else {
		nc, err = (&net.Dialer{}).DialContext(ctx, "tcp", host)
	}
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", rawURL, err)
	}
	c := ldap.NewConn(nc, isTLS)
	c.Start()
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() }) // the answer bounded by ctx too
	defer stop()
	if _, err := c.Search(ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 0, false,
		"(objectClass=*)", []string{"highestCommittedUSN"}, nil)); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("no rootDSE from %s within %s", rawURL, timeout)
		}
		return fmt.Errorf("reading the rootDSE of %s: %w", rawURL, err)
	}
	return nil
}
