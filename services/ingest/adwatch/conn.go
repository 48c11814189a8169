package adwatch

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// requestTimeout bounds one LDAP request on the polling connection, so that a
// DC that stops answering ends the session instead of hanging it. Generous:
// a DirSync after a mass change returns every changed object in one response.
const requestTimeout = 2 * time.Minute

// dial connects to the DC over TLS (or plain LDAP when explicitly allowed) and
// binds as the service account.
func (w *Watcher) dial() (*ldap.Conn, error) {
	c, err := ldap.DialURL(w.cfg.URL,
		ldap.DialWithDialer(&net.Dialer{Timeout: w.cfg.DialTimeout, KeepAlive: 30 * time.Second}),
		ldap.DialWithTLSConfig(w.tls.Clone()))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", w.cfg.URL, err)
	}
	if w.cfg.StartTLS {
		if err := c.StartTLS(w.tls.Clone()); err != nil {
			c.Close()
			return nil, fmt.Errorf("StartTLS with %s: %w", w.cfg.URL, err)
		}
	}
	c.SetTimeout(requestTimeout)
	if err := c.Bind(w.cfg.BindDN, w.cfg.BindPassword); err != nil {
		c.Close()
		return nil, fmt.Errorf("binding to %s as %s: %w", w.cfg.URL, w.cfg.BindDN, err)
	}
	return c, nil
}

// ldapCode is the LDAP result code of err, or -1 when err is not an LDAP result.
func ldapCode(err error) int {
	var le *ldap.Error
	if errors.As(err, &le) && le.ResultCode != ldap.ErrorNetwork {
		return int(le.ResultCode)
	}
	return -1
}

// rootDSE is what the watcher reads from the DC's rootDSE.
type rootDSE struct {
	HighestCommittedUSN  int64
	DefaultNamingContext string
	DNSHostName          string
}

func readRootDSE(c *ldap.Conn) (rootDSE, error) {
	res, err := c.Search(ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"highestCommittedUSN", "defaultNamingContext", "dnsHostName"}, nil))
	if err != nil {
		return rootDSE{}, fmt.Errorf("reading the rootDSE: %w", err)
	}
	if len(res.Entries) != 1 {
		return rootDSE{}, fmt.Errorf("reading the rootDSE: %d entries", len(res.Entries))
	}
	e := res.Entries[0]
	usn, err := strconv.ParseInt(e.GetAttributeValue("highestCommittedUSN"), 10, 64)
	if err != nil {
		return rootDSE{}, fmt.Errorf("reading the rootDSE: highestCommittedUSN %q: %w", e.GetAttributeValue("highestCommittedUSN"), err)
	}
	return rootDSE{
		HighestCommittedUSN:  usn,
		DefaultNamingContext: e.GetAttributeValue("defaultNamingContext"),
		DNSHostName:          e.GetAttributeValue("dnsHostName"),
	}, nil
}
