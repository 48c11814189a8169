// Package mustchange holds the strategy for "must change password at next
// sign-in" on cloud-managed users that the actuator and the campaign runner
// share: Graph has been reported to answer 204 to a PATCH of
// passwordProfile.forceChangePasswordNextSignIn alone and change nothing
// (microsoftgraph/microsoft-graph-docs#4267), so the flag is read back, and
// when it is missing a configured fallback takes over: a random temporary
// password with the flag, or the chain synced users get (revoke sessions,
// add to the group a Conditional Access policy blocks).
package mustchange

import (
	"crypto/rand"
	"fmt"
	"math/big"

	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/graph"
)

// Fallbacks (config actuator.cloud_managed.fallback).
const (
	FallbackTemporaryPassword = "temporary_password"
	FallbackChain             = "chain"
	FallbackNone              = "none"
)

// Write is one Graph write of a fallback.
type Write string

// The fallback writes; the names are the actuator's step names.
const (
	WriteTemporaryPassword Write = "set_temporary_password" // PATCH passwordProfile {password, flag}
	WriteRevoke            Write = "revoke_sessions"        // POST revokeSignInSessions
	WritePendingGroup      Write = "add_pending_group"      // POST groups/{id}/members/$ref
)

// Strategy is what happens after a must-change PATCH that Graph accepted.
type Strategy struct {
	// Fallback when the flag is not set on read-back: temporary_password,
	// chain or none.
	Fallback string `json:"fallback"`
	// WithMFA: the temporary password is set with
	// forceChangePasswordNextSignInWithMfa too.
	WithMFA bool `json:"with_mfa,omitempty"`
	// The chain's parts (actuator.synced).
	RevokeSessions bool   `json:"revoke_sessions,omitempty"`
	PendingGroupID string `json:"pending_group_id,omitempty"`
}

// FromConfig is the actuator's strategy; nil when read-back is off
// (actuator.cloud_managed.verify: false).
func FromConfig(a config.Actuator) *Strategy {
	if !a.CloudManaged.Verify {
		return nil
	}
	return &Strategy{Fallback: a.CloudManaged.Fallback, WithMFA: a.CloudManaged.WithMFA,
		RevokeSessions: a.Synced.RevokeSessions, PendingGroupID: a.Synced.PendingGroupID}
}

// Writes are the fallback's Graph writes, in order; none for "none" or an
// empty chain.
func (s Strategy) Writes() []Write {
	switch s.Fallback {
	case FallbackTemporaryPassword:
		return []Write{WriteTemporaryPassword}
	case FallbackChain:
		var out []Write
		if s.RevokeSessions {
			out = append(out, WriteRevoke)
		}
		if s.PendingGroupID != "" {
			out = append(out, WritePendingGroup)
		}
		return out
	}
	return nil
}

// Took reports whether the read-back shows the must-change in effect.
func Took(u graph.User) bool { return u.ForceChangeNextSignIn || u.ForceChangeWithMFA }

// MissingDetail is the audit text for a flag missing on read-back.
func MissingDetail(fallback string) string {
	return "PATCH answered success but the flag is not set; fallback " + fallback
}

// TemporaryPassword makes a random password that satisfies Entra's default
// complexity (upper, lower, digit, symbol; 20 characters). It is never
// logged, stored or audited: the user gets a new one through the helpdesk or
// self-service reset.
func TemporaryPassword() (string, error) {
	const (
		upper  = "ABCDEFGHJKLMNPQRSTUVWXYZ"
		lower  = "abcdefghijkmnopqrstuvwxyz"
		digits = "23456789"
		symbol = "!#%+-.=?@_"
	)
	all := upper + lower + digits + symbol
	sets := []string{upper, lower, digits, symbol}
	out := make([]byte, 20)
	for i := range out {
		set := all
		if i < len(sets) {
			set = sets[i]
		}
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(set))))
		if err != nil {
			return "", fmt.Errorf("generating temporary password: %w", err)
		}
		out[i] = set[n.Int64()]
	}
	// Shuffle so that the class of the first characters is not predictable.
	for i := len(out) - 1; i > 0; i-- {
		j, err := rand.Int(rand.Reader, big.NewInt(int64(i+1)))
		if err != nil {
			return "", fmt.Errorf("generating temporary password: %w", err)
		}
		out[i], out[j.Int64()] = out[j.Int64()], out[i]
	}
	return string(out), nil
}
