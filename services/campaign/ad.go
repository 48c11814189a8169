package campaign

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/pwsync/pwsync/shared/events"
)

// LDAPConfig is how to reach one domain. Besides read access, the bind
// account needs "Write pwdLastSet" on the users it may reach (the
// helpdesk's delegation "Reset user passwords and force password change at
// next logon" includes it), granted on the OUs campaigns may touch.
type LDAPConfig struct {
	URL                string
	StartTLS           bool
	CAFile             string
	InsecureSkipVerify bool
	BindDN             string
	BindPassword       string
	Timeout            time.Duration // per request, default 30s
	Conns              int           // pooled connections, default 4
}

// LDAP is an ADDirectory and ADWriter over a small pool of bound connections.
type LDAP struct {
	cfg  LDAPConfig
	tls  *tls.Config
	pool chan *ldap.Conn
}

// NewLDAP checks cfg; connections are made on first use.
func NewLDAP(cfg LDAPConfig) (*LDAP, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") {
		return nil, fmt.Errorf("LDAP URL %q: must be ldaps:// or ldap://", cfg.URL)
	}
	tc := &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.InsecureSkipVerify} //nolint:gosec // explicit opt-out
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("LDAP CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("LDAP CA file %s holds no PEM certificate", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Conns <= 0 {
		cfg.Conns = 4
	}
	return &LDAP{cfg: cfg, tls: tc, pool: make(chan *ldap.Conn, cfg.Conns)}, nil
}

// Close closes the pooled connections.
func (l *LDAP) Close() {
	for {
		select {
		case c := <-l.pool:
			c.Close()
		default:
			return
		}
	}
}

func (l *LDAP) dial() (*ldap.Conn, error) {
	c, err := ldap.DialURL(l.cfg.URL, ldap.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}),
		ldap.DialWithTLSConfig(l.tls.Clone()))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", l.cfg.URL, err)
	}
	if l.cfg.StartTLS {
		if err := c.StartTLS(l.tls.Clone()); err != nil {
			c.Close()
			return nil, fmt.Errorf("StartTLS with %s: %w", l.cfg.URL, err)
		}
	}
	c.SetTimeout(l.cfg.Timeout)
	if err := c.Bind(l.cfg.BindDN, l.cfg.BindPassword); err != nil {
		c.Close()
		return nil, fmt.Errorf("binding to %s as %s: %w", l.cfg.URL, l.cfg.BindDN, err)
	}
	return c, nil
}

// with runs fn on a pooled connection; a connection that failed at the
// network level is closed instead of returned.
func (l *LDAP) with(ctx context.Context, fn func(*ldap.Conn) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var c *ldap.Conn
	select {
	case c = <-l.pool:
	default:
		var err error
		if c, err = l.dial(); err != nil {
			return err
		}
	}
	err := fn(c)
	if c.IsClosing() || ldap.IsErrorAnyOf(err, ldap.ErrorNetwork) {
		c.Close()
		return err
	}
	select {
	case l.pool <- c:
	default:
		c.Close()
	}
	return err
}

var adAttrs = []string{"objectGUID", "userPrincipalName", "displayName", "userAccountControl"}

// Search implements ADDirectory (paged).
func (l *LDAP) Search(ctx context.Context, base, filter string) ([]ADUser, error) {
	var out []ADUser
	err := l.with(ctx, func(c *ldap.Conn) error {
		res, err := c.SearchWithPaging(ldap.NewSearchRequest(base, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
			0, 0, false, filter, adAttrs, nil), 500)
		if err != nil {
			if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
				return fmt.Errorf("%w: base %s does not exist", ErrInvalid, base)
			}
			return fmt.Errorf("searching %s: %w", base, err)
		}
		for _, e := range res.Entries {
			guid, err := events.GUIDString(e.GetRawAttributeValue("objectGUID"))
			if err != nil {
				continue // not a user object we can identify
			}
			uac, _ := strconv.ParseInt(e.GetAttributeValue("userAccountControl"), 10, 64)
			out = append(out, ADUser{DN: e.DN, GUID: guid, UPN: strings.ToLower(e.GetAttributeValue("userPrincipalName")),
				Name: e.GetAttributeValue("displayName"), Disabled: uac&events.UACAccountDisable != 0})
		}
		return nil
	})
	return out, err
}

// ForceChange implements ADWriter: the helpdesk's "User must change
// password at next logon".
func (l *LDAP) ForceChange(ctx context.Context, dn string) (string, error) {
	err := l.with(ctx, func(c *ldap.Conn) error {
		req := ldap.NewModifyRequest(dn, nil)
		req.Replace("pwdLastSet", []string{"0"})
		return c.Modify(req)
	})
	var le *ldap.Error
	switch {
	case err == nil:
		return "success", nil
	case errors.As(err, &le) && le.ResultCode != ldap.ErrorNetwork && le.ResultCode < ldap.ErrorNetwork &&
		le.ResultCode != ldap.LDAPResultBusy && le.ResultCode != ldap.LDAPResultUnavailable && le.ResultCode != ldap.LDAPResultOther:
		// The DC answered with a refusal: nothing was written.
		return "", fmt.Errorf("%w: %s: %s", ErrDefinite, ldap.LDAPResultCodeMap[le.ResultCode], strings.TrimSpace(le.Err.Error()))
	}
	return "", err
}

// PwdLastSet implements ADWriter.
func (l *LDAP) PwdLastSet(ctx context.Context, dn string) (int64, error) {
	var v int64
	err := l.with(ctx, func(c *ldap.Conn) error {
		res, err := c.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 0, false,
			"(objectClass=*)", []string{"pwdLastSet"}, nil))
		if err != nil {
			return fmt.Errorf("reading pwdLastSet of %s: %w", dn, err)
		}
		if len(res.Entries) != 1 {
			return fmt.Errorf("reading pwdLastSet of %s: no entry", dn)
		}
		v, err = strconv.ParseInt(res.Entries[0].GetAttributeValue("pwdLastSet"), 10, 64)
		return err
	})
	return v, err
}
