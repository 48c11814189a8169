package campaign

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

// Bounds on a user-supplied LDAP filter: enough for any real selection, too
// small to make the DC work hard.
const (
	MaxFilterLength = 2048
	MaxFilterDepth  = 8
	MaxFilterNodes  = 128
)

// ErrInvalidFilter is wrapped by every refusal of a user-supplied filter.
var ErrInvalidFilter = errors.New("invalid LDAP filter")

// ValidateFilter parses a user-supplied LDAP filter and returns its
// canonical form, re-encoded from the parsed tree: what is sent to the DC is
// exactly what was validated, so nothing the user typed can close a
// parenthesis of the filter it is embedded in. It refuses anything that is
// not one well-formed filter, and filters that are too long, too deep or too
// big.
func ValidateFilter(raw string) (string, error) {
	bad := func(format string, a ...any) (string, error) {
		return "", fmt.Errorf("%w: "+format, append([]any{ErrInvalidFilter}, a...)...)
	}
	f := strings.TrimSpace(raw)
	switch {
	case f == "":
		return bad("empty")
	case len(f) > MaxFilterLength:
		return bad("%d bytes, at most %d", len(f), MaxFilterLength)
	case !utf8.ValidString(f):
		return bad("not UTF-8")
	case strings.ContainsRune(f, 0):
		return bad("contains a NUL byte")
	case f[0] != '(':
		// CompileFilter accepts a bare "a=b"; require the parenthesised form.
		return bad("must start with '('")
	}
	pkt, err := ldap.CompileFilter(f)
	if err != nil {
		return bad("%v", err)
	}
	depth, nodes := measure(pkt, 1)
	if depth > MaxFilterDepth {
		return bad("nested %d deep, at most %d", depth, MaxFilterDepth)
	}
	if nodes > MaxFilterNodes {
		return bad("%d terms, at most %d", nodes, MaxFilterNodes)
	}
	out, err := ldap.DecompileFilter(pkt)
	if err != nil {
		return bad("%v", err)
	}
	// A second round trip must be stable: the canonical form parses to
	// itself, so what is logged and stored is what runs.
	again, err := ldap.CompileFilter(out)
	if err != nil {
		return bad("canonical form %q does not parse: %v", out, err)
	}
	if out2, err := ldap.DecompileFilter(again); err != nil || out2 != out {
		return bad("canonical form is not stable")
	}
	return out, nil
}

// measure returns the depth of the filter tree and its number of nodes.
// Only and/or/not have filter children; the other filter types' children are
// their attribute and value, not filters.
func measure(p *ber.Packet, level int) (depth, nodes int) {
	depth, nodes = level, 1
	switch p.Tag {
	case ldap.FilterAnd, ldap.FilterOr, ldap.FilterNot:
		for _, c := range p.Children {
			d, n := measure(c, level+1)
			depth, nodes = max(depth, d), nodes+n
		}
	}
	return depth, nodes
}

// andFilter joins filters under one AND: the user's filter becomes one term
// next to the user class filter, never a sibling of it.
func andFilter(terms ...string) string {
	var b strings.Builder
	b.WriteString("(&")
	for _, t := range terms {
		b.WriteString(t)
	}
	b.WriteString(")")
	return b.String()
}
