// Package dclocator finds the domain controllers of an AD domain, in the
// order to try them: the configured list first (the preferred DC first),
// then the DCs DNS advertises, as Windows' DC locator finds them: the SRV
// records of the client's site, `_ldap._tcp.<site>._sites.dc._msdcs.<domain>`,
// then those of the whole domain, `_ldap._tcp.dc._msdcs.<domain>`, each
// in priority order and shuffled by weight within a priority (RFC 2782;
// net.Resolver.LookupSRV does both).
package dclocator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config says where the DCs come from.
type Config struct {
	// URLs are DCs named in the configuration, preferred first.
	URLs []string
	// DNSDomain enables SRV discovery in that DNS domain (e.g. corp.example.com).
	DNSDomain string
	// Site is the AD site whose DCs come first (e.g. Default-First-Site-Name).
	Site string
	// Scheme of the discovered DCs: "ldaps" (port 636) or "ldap" (the SRV
	// record's port, 389, for StartTLS).
	Scheme string
	// Resolver is a DNS server (host:port) to ask instead of the system's,
	// e.g. a DC's own DNS.
	Resolver string
}

// Locator lists DC URLs.
type Locator struct {
	cfg Config
	r   *net.Resolver
}

// New checks cfg.
func New(cfg Config) (*Locator, error) {
	if len(cfg.URLs) == 0 && cfg.DNSDomain == "" {
		return nil, errors.New("dclocator: no DC: name one or more URLs, or a DNS domain to discover them in")
	}
	switch cfg.Scheme {
	case "":
		cfg.Scheme = "ldaps"
	case "ldaps", "ldap":
	default:
		return nil, fmt.Errorf("dclocator: scheme %q: want ldaps or ldap", cfg.Scheme)
	}
	l := &Locator{cfg: cfg, r: net.DefaultResolver}
	if cfg.Resolver != "" {
		if _, _, err := net.SplitHostPort(cfg.Resolver); err != nil {
			return nil, fmt.Errorf("dclocator: resolver %q: want host:port: %w", cfg.Resolver, err)
		}
		d := net.Dialer{Timeout: 3 * time.Second}
		l.r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, cfg.Resolver)
		}}
	}
	return l, nil
}

// Static is a Locator of a fixed list.
func Static(urls ...string) *Locator { return &Locator{cfg: Config{URLs: urls}} }

// Names are the SRV names asked, in order.
func (l *Locator) Names() []string {
	if l.cfg.DNSDomain == "" {
		return nil
	}
	d := strings.TrimSuffix(l.cfg.DNSDomain, ".")
	var out []string
	if l.cfg.Site != "" {
		out = append(out, "_ldap._tcp."+l.cfg.Site+"._sites.dc._msdcs."+d)
	}
	return append(out, "_ldap._tcp.dc._msdcs."+d)
}

// Candidates returns the DC URLs to try, preferred first, without
// duplicates. A DNS failure is returned only when it leaves no DC at all.
func (l *Locator) Candidates(ctx context.Context) ([]string, error) {
	out := slices.Clone(l.cfg.URLs)
	var errs []error
	for _, name := range l.Names() {
		_, srvs, err := l.r.LookupSRV(ctx, "", "", name)
		if err != nil {
			errs = append(errs, fmt.Errorf("looking up %s: %w", name, err))
			continue
		}
		for _, s := range srvs {
			u := l.url(s)
			if !slices.ContainsFunc(out, func(x string) bool { return sameDC(x, u) }) {
				out = append(out, u)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no DC found: %w", errors.Join(errs...))
	}
	return out, nil
}

func (l *Locator) url(s *net.SRV) string {
	host := strings.TrimSuffix(s.Target, ".")
	port := int(s.Port)
	if l.cfg.Scheme == "ldaps" {
		port = 636 // the SRV record names the LDAP port; LDAPS is 636 on every DC
	}
	return l.cfg.Scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port))
}

// sameDC compares two DC URLs by host and port, case-insensitively.
func sameDC(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	if err1 != nil || err2 != nil {
		return strings.EqualFold(a, b)
	}
	return strings.EqualFold(ua.Scheme, ub.Scheme) && strings.EqualFold(ua.Host, ub.Host)
}
