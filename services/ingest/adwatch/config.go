package adwatch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/pwsync/pwsync/shared/ldapconn"
)

// Modes of reading changes from AD.
const (
	ModeDirSync = "dirsync" // DirSync control: deltas of changed attributes, cookie per domain
	ModeUSN     = "usn"     // uSNChanged poll: for accounts without DirSync rights
	ModeAuto    = "auto"    // DirSync, falling back to usn when the DC refuses it
)

// DefaultUserFilter selects user accounts (not computers, which are users too).
const DefaultUserFilter = "(&(objectCategory=person)(objectClass=user))"

// Config is one AD domain to watch.
type Config struct {
	Domain string // label copied into events.ADUser.Domain, e.g. "example.test"
	URL    string // ldaps://host:636 or ldap://host:389 (one DC; or URLs)
	// URLs are the domain's DCs, preferred first (URL is the one-DC form).
	// The watcher uses the first that answers, moves to the next when the
	// one in use fails, and returns to an earlier one when it is back.
	URLs []string
	// Locate, when set, lists the DCs to try instead of URLs (DNS SRV
	// discovery, shared/dclocator); called at every (re)connect.
	Locate func(ctx context.Context) ([]string, error)
	// PreferredProbe: while on a DC other than the first, how often the
	// earlier ones are tried (default 30s).
	PreferredProbe     time.Duration
	StartTLS           bool               // upgrade ldap:// with StartTLS
	CAFile             string             // CA bundle to verify the DC; empty = system roots
	InsecureSkipVerify bool               // do not verify the DC's certificate (explicit opt-out only)
	AllowPlain         bool               // allow ldap:// without StartTLS (bind password in clear)
	BindDN             string             // DN or UPN of the service account
	BindPassword       string             // never logged
	Kerberos           *ldapconn.Kerberos // instead of BindDN/BindPassword: a GSSAPI bind with a keytab
	BaseDN             string             // naming context root (DirSync requires it)
	UserFilter         string             // default DefaultUserFilter
	Mode               string             // ModeDirSync (default), ModeUSN or ModeAuto
	PollInterval       time.Duration      // floor poll interval, also with notifications (default 2s)
	Notifications      bool               // change notifications (1.2.840.113556.1.4.528) trigger an immediate poll
	PageSize           int                // entries per LDAP page and per Sink.Publish (default 500)
	// Anchor is the attribute whose base64 is the cloud account's
	// onPremisesImmutableId: AnchorObjectGUID (default) or AnchorConsistencyGUID.
	Anchor      string
	DialTimeout time.Duration // TCP connect + TLS handshake (default 10s)
	// HungAfter: a request on the session's connection running this long
	// makes the watcher ask whether the DC answers at all (ldapconn.Ping,
	// as long again); one that does not is left for the next DC (default 10s).
	HungAfter time.Duration
	// Groups are the group DNs whose nested membership the rules need (scope
	// includes, break-glass): events carry them in ADUser.Groups, and a
	// membership change re-reads the users concerned.
	Groups []string
	// PolicyInterval: how often the password policy (maxPwdAge, PSOs,
	// tracked groups) is checked for changes (default 10s).
	PolicyInterval time.Duration
}

// Source anchors.
const (
	AnchorObjectGUID      = "objectGUID"
	AnchorConsistencyGUID = "ms-DS-ConsistencyGuid"
)

// DefaultConfig has the defaults of every optional setting. A bool's zero
// value is false, so Notifications' default (on) lives here: a config loader
// should start from DefaultConfig.
func DefaultConfig() Config {
	return Config{
		UserFilter:     DefaultUserFilter,
		Mode:           ModeDirSync,
		PollInterval:   2 * time.Second,
		Notifications:  true,
		PageSize:       500,
		DialTimeout:    10 * time.Second,
		HungAfter:      10 * time.Second,
		PolicyInterval: 10 * time.Second,
	}
}

// withDefaults fills the unset optional settings (Notifications excepted, see DefaultConfig).
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.UserFilter == "" {
		c.UserFilter = d.UserFilter
	}
	if c.Mode == "" {
		c.Mode = d.Mode
	}
	if c.PollInterval == 0 {
		c.PollInterval = d.PollInterval
	}
	if c.PageSize == 0 {
		c.PageSize = d.PageSize
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = d.DialTimeout
	}
	if c.HungAfter == 0 {
		c.HungAfter = d.HungAfter
	}
	if c.PolicyInterval == 0 {
		c.PolicyInterval = d.PolicyInterval
	}
	if len(c.URLs) == 0 && c.URL != "" {
		c.URLs = []string{c.URL}
	}
	if c.URL == "" && len(c.URLs) > 0 {
		c.URL = c.URLs[0]
	}
	if c.PreferredProbe == 0 {
		c.PreferredProbe = 30 * time.Second
	}
	return c
}

// maxPageSize is AD's default MaxPageSize: a DC returns no more per page anyway.
const maxPageSize = 1000

// validate checks the settings; every error names the setting to fix.
func (c Config) validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Domain == "" {
		bad("Domain is empty")
	}
	if len(c.URLs) == 0 && c.Locate == nil {
		bad("URL is empty (name a DC, several in URLs, or discover them)")
	}
	for _, x := range c.URLs {
		if err := c.checkURL(x); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Kerberos == nil && c.BindDN == "" {
		bad("BindDN is empty (DirSync and the uSNChanged poll need an authenticated account)")
	}
	if c.Kerberos == nil && c.BindPassword == "" {
		bad("BindPassword is empty (or set Kerberos)")
	}
	if c.BaseDN == "" {
		bad("BaseDN is empty")
	} else if _, err := ldap.ParseDN(c.BaseDN); err != nil {
		bad("BaseDN %q: %w", c.BaseDN, err)
	}
	if _, err := ldap.CompileFilter(c.UserFilter); err != nil {
		bad("UserFilter %q: %w", c.UserFilter, err)
	}
	switch c.Mode {
	case ModeDirSync, ModeUSN, ModeAuto:
	default:
		bad("Mode %q: want %s, %s or %s", c.Mode, ModeDirSync, ModeUSN, ModeAuto)
	}
	if c.PollInterval < 0 {
		bad("PollInterval %s is negative", c.PollInterval)
	}
	if c.PageSize < 0 || c.PageSize > maxPageSize {
		bad("PageSize %d: want 1 to %d", c.PageSize, maxPageSize)
	}
	if c.HungAfter < 0 {
		bad("HungAfter %s is negative", c.HungAfter)
	}
	if c.DialTimeout < 0 {
		bad("DialTimeout %s is negative", c.DialTimeout)
	}
	for i, g := range c.Groups {
		if _, err := ldap.ParseDN(g); err != nil || g == "" {
			bad("Groups[%d] %q is not a DN", i, g)
		}
	}
	if c.PolicyInterval < 0 {
		bad("PolicyInterval %s is negative", c.PolicyInterval)
	}
	switch c.Anchor {
	case "", AnchorObjectGUID, AnchorConsistencyGUID:
	default:
		bad("Anchor %q: want %s or %s", c.Anchor, AnchorObjectGUID, AnchorConsistencyGUID)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("adwatch config for domain %q: %w", c.Domain, err)
	}
	return nil
}

// checkURL checks one DC's URL; the error names it.
func (c Config) checkURL(x string) error {
	u, err := url.Parse(x)
	switch {
	case x == "":
		return errors.New("URL is empty")
	case err != nil:
		return fmt.Errorf("URL %q: %w", x, err)
	case u.Scheme != "ldap" && u.Scheme != "ldaps":
		return fmt.Errorf("URL %q: scheme must be ldaps or ldap", x)
	case u.Host == "":
		return fmt.Errorf("URL %q has no host", x)
	case u.Scheme == "ldaps" && c.StartTLS:
		return fmt.Errorf("StartTLS is set but URL %q is already ldaps", x)
	case u.Scheme == "ldap" && !c.StartTLS && !c.AllowPlain:
		return fmt.Errorf("URL %q is plain LDAP: the bind password would cross the network in clear; "+
			"use ldaps://, set StartTLS, or set AllowPlain to accept that", x)
	}
	return nil
}

// tlsConfig is how a DC's certificate is checked, for ldaps:// and
// StartTLS: against the CA file, for the DC's own host name.
func (c Config) tlsConfig(dcURL string) (*tls.Config, error) {
	tc, err := ldapconn.TLSConfig(dcURL, c.CAFile, c.InsecureSkipVerify)
	if err != nil {
		return nil, fmt.Errorf("TLS from URL and CAFile: %w", err)
	}
	return tc, nil
}

// cursorKey is the key of this domain's cursor in the cursors bucket. NATS KV
// keys allow letters, digits and -_=./ only.
func (c Config) cursorKey(mode string) string { return mode + "." + kvSafe(c.Domain) }

// kvSafe lowers s and replaces what a KV key cannot hold.
func kvSafe(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '.', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}
