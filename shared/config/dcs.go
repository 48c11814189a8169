package config

import (
	"fmt"
	"net"
	"net/url"
)

// Discover finds a domain's DCs in DNS, as Windows' DC locator does: the
// SRV records of the site (_ldap._tcp.<site>._sites.dc._msdcs.<dns_domain>),
// then of the domain (_ldap._tcp.dc._msdcs.<dns_domain>).
type Discover struct {
	// DNSDomain is the domain's DNS name (default: the domain's name).
	DNSDomain string `yaml:"dns_domain"`
	// Site is pwsync's AD site: its DCs are tried first.
	Site string `yaml:"site"`
	// Scheme of the DCs found: ldaps (port 636, default) or ldap (389, with
	// start_tls).
	Scheme string `yaml:"scheme"`
	// Resolver is a DNS server (host:port) to ask instead of the system's.
	Resolver string `yaml:"resolver"`
}

// DCs are the DCs named in the configuration, preferred first.
func (d Domain) DCs() []string {
	var out []string
	if d.URL != "" {
		out = append(out, d.URL)
	}
	return append(out, d.URLs...)
}

// DiscoverDomain is the DNS domain to discover DCs in ("" = none).
func (d Domain) DiscoverDomain() string {
	if d.Discover == nil {
		return ""
	}
	if d.Discover.DNSDomain != "" {
		return d.Discover.DNSDomain
	}
	return d.Name
}

// validateURL checks one DC URL of the domain under key.
func (d Domain) validateURL(key, s string) []error {
	u, err := url.Parse(s)
	switch {
	case err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") || u.Host == "":
		return []error{fmt.Errorf("%s: must be ldaps://host:port or ldap://host:port (got %q)", key, s)}
	case u.Scheme == "ldap" && !d.StartTLS && !d.AllowPlain:
		return []error{fmt.Errorf("%s: plain ldap:// sends the bind password in clear: use ldaps://, set start_tls: true, or set allow_plain: true explicitly", key)}
	case u.Scheme == "ldaps" && d.StartTLS:
		return []error{fmt.Errorf("%s: start_tls cannot be combined with ldaps://", key)}
	}
	return nil
}

func (x Discover) validate(key string, d Domain) []error {
	var errs []error
	switch x.Scheme {
	case "", "ldaps":
		if d.StartTLS {
			errs = append(errs, fmt.Errorf("%s.scheme: ldaps (the default) cannot be combined with start_tls: set scheme: ldap", key))
		}
	case "ldap":
		if !d.StartTLS && !d.AllowPlain {
			errs = append(errs, fmt.Errorf("%s.scheme: ldap sends the bind password in clear: set start_tls: true (or allow_plain: true explicitly)", key))
		}
	default:
		errs = append(errs, fmt.Errorf("%s.scheme: must be ldaps or ldap (got %q)", key, x.Scheme))
	}
	if x.Resolver != "" {
		if _, _, err := net.SplitHostPort(x.Resolver); err != nil {
			errs = append(errs, fmt.Errorf("%s.resolver: must be host:port (got %q)", key, x.Resolver))
		}
	}
	return errs
}
