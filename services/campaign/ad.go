package campaign

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/ldapconn"
)

// LDAPConfig is how to reach one domain. Besides read access, the bind
// account needs "Write pwdLastSet" on the users it may reach (the
// helpdesk's delegation "Reset user passwords and force password change at
// next logon" includes it), granted on the OUs campaigns may touch.
type LDAPConfig struct {
	URL                string
	URLs               []string // the domain's DCs, preferred first (after URL); the first that answers is used
	StartTLS           bool
	CAFile             string
	InsecureSkipVerify bool
	BindDN             string
	BindPassword       string
	Kerberos           *ldapconn.Kerberos // instead of BindDN/BindPassword
	Timeout            time.Duration      // per request, default 30s
	Conns              int                // pooled connections, default 4
}

// LDAP is an ADDirectory and ADWriter over a small pool of bound connections.
type LDAP struct {
	cfg  LDAPConfig
	dcs  []string // URL then URLs: the order DCs are tried in
	pool chan *ldap.Conn
}

// NewLDAP checks cfg; connections are made on first use.
func NewLDAP(cfg LDAPConfig) (*LDAP, error) {
	dcs := cfg.URLs
	if cfg.URL != "" {
		dcs = append([]string{cfg.URL}, cfg.URLs...)
	}
	if len(dcs) == 0 {
		return nil, errors.New("LDAP URL: none given")
	}
	for _, x := range dcs {
		u, err := url.Parse(x)
		if err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") {
			return nil, fmt.Errorf("LDAP URL %q: must be ldaps:// or ldap://", x)
		}
		// checked here so that a bad CA file stops the start, not the first write
		if _, err := ldapconn.TLSConfig(x, cfg.CAFile, cfg.InsecureSkipVerify); err != nil {
			return nil, fmt.Errorf("LDAP TLS for %s: %w", x, err)
		}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Conns <= 0 {
		cfg.Conns = 4
	}
	return &LDAP{cfg: cfg, dcs: dcs, pool: make(chan *ldap.Conn, cfg.Conns)}, nil
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
	c, _, err := ldapconn.DialFirst(l.dcs, ldapconn.Config{StartTLS: l.cfg.StartTLS, BindDN: l.cfg.BindDN,
		BindPassword: l.cfg.BindPassword, Kerberos: l.cfg.Kerberos, RequestTimeout: l.cfg.Timeout}, l.cfg.CAFile, l.cfg.InsecureSkipVerify)
	return c, err
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
			if ldapconn.IsNetwork(err) {
				return fmt.Errorf("%w: %w", ErrUnreachable, err) // nothing was sent
			}
			return err
		}
	}
	err := fn(c)
	if c.IsClosing() || ldapconn.IsNetwork(err) {
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

var adAttrs = []string{"objectGUID", "userPrincipalName", "displayName", "userAccountControl", "pwdLastSet"}

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
			if u, ok := adUser(e); ok { // else not a user object we can identify
				out = append(out, u)
			}
		}
		return nil
	})
	return out, err
}

// GroupMembers implements ADDirectory: breadth first through the member
// links (ranged retrieval for big groups), each member read with a base
// search; groups nested in groups are followed once each. A group that does
// not exist has no members (as the in-chain search of the preview would say).
func (l *LDAP) GroupMembers(ctx context.Context, groupDN, userFilter string) ([]ADUser, error) {
	var out []ADUser
	seen := map[string]bool{strings.ToLower(groupDN): true}
	queue := []string{groupDN}
	memberFilter := "(|(objectClass=group)" + userFilter + ")"
	for len(queue) > 0 {
		g := queue[0]
		queue = queue[1:]
		members, err := l.members(ctx, g)
		if err != nil {
			return nil, err
		}
		for _, m := range members {
			if seen[strings.ToLower(m)] {
				continue
			}
			seen[strings.ToLower(m)] = true
			var e *ldap.Entry
			err := l.with(ctx, func(c *ldap.Conn) error {
				res, err := c.Search(ldap.NewSearchRequest(m, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 0, false,
					memberFilter, append([]string{"objectClass"}, adAttrs...), nil))
				if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
					return nil
				}
				if err != nil {
					return fmt.Errorf("reading %s, a member of %s: %w", m, g, err)
				}
				if len(res.Entries) == 1 {
					e = res.Entries[0]
				}
				return nil
			})
			switch {
			case err != nil:
				return nil, err
			case e == nil: // gone, or neither a group nor a user of the filter
			case slices.ContainsFunc(e.GetAttributeValues("objectClass"), func(v string) bool { return strings.EqualFold(v, "group") }):
				queue = append(queue, e.DN)
			default:
				if u, ok := adUser(e); ok {
					out = append(out, u)
				}
			}
		}
	}
	return out, nil
}

// members reads a group's member attribute, range by range (AD returns at
// most MaxValRange values per read).
func (l *LDAP) members(ctx context.Context, groupDN string) ([]string, error) {
	var out []string
	for lo := 0; ; {
		attr := "member"
		if lo > 0 {
			attr = fmt.Sprintf("member;range=%d-*", lo)
		}
		next := -1
		err := l.with(ctx, func(c *ldap.Conn) error {
			res, err := c.Search(ldap.NewSearchRequest(groupDN, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 0, false,
				"(objectClass=group)", []string{attr}, nil))
			if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("reading the members of %s: %w", groupDN, err)
			}
			if len(res.Entries) != 1 {
				return nil
			}
			for _, a := range res.Entries[0].Attributes {
				name := strings.ToLower(a.Name)
				switch {
				case name == "member":
					out = append(out, a.Values...)
				case strings.HasPrefix(name, "member;range="):
					out = append(out, a.Values...)
					if _, hi, ok := strings.Cut(strings.TrimPrefix(name, "member;range="), "-"); ok && hi != "*" {
						if n, err := strconv.Atoi(hi); err == nil {
							next = n + 1
						}
					}
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if next < 0 {
			return out, nil
		}
		lo = next
	}
}

// adUser reads a user entry (adAttrs); false when it has no usable objectGUID.
func adUser(e *ldap.Entry) (ADUser, bool) {
	guid, err := events.GUIDString(e.GetRawAttributeValue("objectGUID"))
	if err != nil {
		return ADUser{}, false
	}
	uac, _ := strconv.ParseInt(e.GetAttributeValue("userAccountControl"), 10, 64)
	pls, _ := strconv.ParseInt(e.GetAttributeValue("pwdLastSet"), 10, 64)
	return ADUser{DN: e.DN, GUID: guid, UPN: strings.ToLower(e.GetAttributeValue("userPrincipalName")),
		Name: e.GetAttributeValue("displayName"), Disabled: uac&events.UACAccountDisable != 0, PwdLastSet: pls}, true
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
