package campaign

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/go-ldap/ldap/v3"
)

// Selector picks users; its parts are a union. A Spec has one to include
// and one to exclude.
type Selector struct {
	// ADGroups are group DNs; members count through nested groups
	// (LDAP_MATCHING_RULE_IN_CHAIN).
	ADGroups []string `json:"ad_groups,omitempty"`
	// OUs are DNs; every user below one counts.
	OUs []string `json:"ous,omitempty"`
	// LDAPFilter is a filter of the caller's, validated and ANDed with the
	// domain's user filter below the domain base.
	LDAPFilter string `json:"ldap_filter,omitempty"`
	// EntraGroups are Entra group object IDs; transitive members count.
	EntraGroups []string `json:"entra_groups,omitempty"`
	// UPNs: a list (e.g. imported from CSV).
	UPNs []string `json:"upns,omitempty"`
	// AllInScope: every user pwsync manages (evaluator.scope), AD and cloud.
	AllInScope bool `json:"all_in_scope,omitempty"`
}

// Empty reports whether the selector selects nothing.
func (s Selector) Empty() bool {
	return len(s.ADGroups) == 0 && len(s.OUs) == 0 && s.LDAPFilter == "" && len(s.EntraGroups) == 0 &&
		len(s.UPNs) == 0 && !s.AllInScope
}

// ErrInvalid is wrapped by every refusal of a spec.
var ErrInvalid = errors.New("invalid campaign")

var objectID = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z-]{0,63}$`)

// normalize validates the selector against the domain's base DN and puts
// every part in canonical form (DNs re-encoded, the filter canonical, UPNs
// lower-cased and deduplicated). what names the selector in errors.
func (s *Selector) normalize(what, baseDN string) error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: "+format, append([]any{ErrInvalid, what}, a...)...))
	}
	base, err := ldap.ParseDN(baseDN)
	if err != nil {
		return fmt.Errorf("domain base DN %q: %w", baseDN, err)
	}
	dns := func(key string, in []string) []string {
		var out []string
		for i, raw := range in {
			dn, err := ldap.ParseDN(raw)
			switch {
			case err != nil || len(dn.RDNs) == 0:
				bad("%s[%d]: not a DN: %q", key, i, raw)
			case !base.AncestorOfFold(dn) && !base.EqualFold(dn):
				bad("%s[%d]: %q is not in the domain %s", key, i, raw, baseDN)
			default:
				out = append(out, dn.String())
			}
		}
		return out
	}
	s.ADGroups = dns("ad_groups", s.ADGroups)
	s.OUs = dns("ous", s.OUs)
	if s.LDAPFilter != "" {
		f, err := ValidateFilter(s.LDAPFilter)
		if err != nil {
			bad("ldap_filter: %w", err)
		}
		s.LDAPFilter = f
	}
	for i, g := range s.EntraGroups {
		if !objectID.MatchString(g) {
			bad("entra_groups[%d]: not an object ID: %q", i, truncateRunes(g, 80))
		}
	}
	if len(s.UPNs) > MaxUPNs {
		bad("upns: %d entries, at most %d", len(s.UPNs), MaxUPNs)
	}
	seen := map[string]bool{}
	upns := s.UPNs[:0]
	for i, raw := range s.UPNs {
		u, err := NormalUPN(raw)
		if err != nil {
			if len(errs) < 20 {
				bad("upns[%d]: %v", i, err)
			}
			continue
		}
		if !seen[u] {
			seen[u] = true
			upns = append(upns, u)
		}
	}
	s.UPNs = upns
	return errors.Join(errs...)
}

// adQuery is one LDAP search a selector needs.
type adQuery struct {
	Base, Filter string
	Source       string // for the preview: which part matched
}

// upnChunk bounds the terms of one OR of UPNs.
const upnChunk = 100

// adQueries are the searches that resolve the AD parts of s. Every value
// from the caller is escaped (DN values with EscapeFilter, UPNs likewise);
// the LDAP filter is already canonical (normalize) and is ANDed as one term.
// scopeOUs are evaluator.scope.include_ous (empty: the whole domain), used
// by AllInScope.
func (s Selector) adQueries(baseDN, userFilter string, scopeOUs []string) []adQuery {
	var qs []adQuery
	for _, g := range s.ADGroups {
		qs = append(qs, adQuery{Base: baseDN, Source: "ad_group:" + g,
			Filter: andFilter(userFilter, inChain(g))})
	}
	for _, ou := range s.OUs {
		qs = append(qs, adQuery{Base: ou, Filter: userFilter, Source: "ou:" + ou})
	}
	if s.LDAPFilter != "" {
		qs = append(qs, adQuery{Base: baseDN, Filter: andFilter(userFilter, s.LDAPFilter), Source: "ldap_filter"})
	}
	for i := 0; i < len(s.UPNs); i += upnChunk {
		qs = append(qs, adQuery{Base: baseDN, Filter: andFilter(userFilter, upnFilter(s.UPNs[i:min(i+upnChunk, len(s.UPNs))])),
			Source: "upn_list"})
	}
	if s.AllInScope {
		bases := scopeOUs
		if len(bases) == 0 {
			bases = []string{baseDN}
		}
		for _, b := range bases {
			qs = append(qs, adQuery{Base: b, Filter: userFilter, Source: "all_in_scope"})
		}
	}
	return qs
}

// inChain is nested group membership: LDAP_MATCHING_RULE_IN_CHAIN.
func inChain(groupDN string) string {
	return "(memberOf:1.2.840.113556.1.4.1941:=" + ldap.EscapeFilter(groupDN) + ")"
}

func upnFilter(upns []string) string {
	var b strings.Builder
	b.WriteString("(|")
	for _, u := range upns {
		b.WriteString("(userPrincipalName=" + ldap.EscapeFilter(u) + ")")
	}
	b.WriteString(")")
	return b.String()
}

// guidFilter matches objectGUIDs given as raw bytes: every byte escaped.
func guidFilter(raws [][]byte) string {
	var b strings.Builder
	b.WriteString("(|")
	for _, raw := range raws {
		b.WriteString("(objectGUID=")
		for _, c := range raw {
			fmt.Fprintf(&b, "\\%02x", c)
		}
		b.WriteString(")")
	}
	b.WriteString(")")
	return b.String()
}
