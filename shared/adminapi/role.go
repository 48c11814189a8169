// Package adminapi is pwsync's admin HTTP API: its own listener (never the
// webhook's), TLS by default, bearer tokens stored as SHA-256 hashes in the
// configuration, roles, JSON errors, and an audit record for every request.
// Other packages add routes with Server.Handle; CLIs call it with Client.
package adminapi

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Role is what a token may do. Viewer is implied by any role.
type Role string

const (
	RoleViewer   Role = "viewer"   // read state, audit, campaigns
	RoleOperator Role = "operator" // create and run campaigns, retry dead letters
	RoleApprover Role = "approver" // approve someone else's campaign
)

// ParseRole checks a role name.
func ParseRole(s string) (Role, error) {
	switch r := Role(strings.TrimSpace(s)); r {
	case RoleViewer, RoleOperator, RoleApprover:
		return r, nil
	}
	return "", fmt.Errorf("unknown role %q (viewer, operator or approver)", s)
}

// ParseRoles parses a comma-separated list ("operator,approver").
func ParseRoles(s string) ([]Role, error) {
	var out []Role
	for _, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		r, err := ParseRole(part)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("at least one role is required")
	}
	return out, nil
}

// Principal is the authenticated caller: the name its token was issued under.
type Principal struct {
	Name  string
	Roles []Role
}

// Has reports whether the principal holds role; any role implies viewer.
func (p Principal) Has(r Role) bool {
	if r == RoleViewer && len(p.Roles) > 0 {
		return true
	}
	return slices.Contains(p.Roles, r)
}

func (p Principal) rolesString() string {
	s := make([]string, len(p.Roles))
	for i, r := range p.Roles {
		s[i] = string(r)
	}
	return strings.Join(s, ",")
}

type principalKey struct{}

// PrincipalFrom returns the caller of an admin request.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// WithPrincipal returns ctx carrying p (for handlers' unit tests).
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}
