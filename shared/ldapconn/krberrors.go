package ldapconn

import (
	"errors"
	"fmt"
	"io"
	"log"
	"strings"
	"sync/atomic"

	"github.com/rs/zerolog"
)

// The causes of a failed Kerberos bind, for errors.Is: doctor and the logs
// name the fix from them.
var (
	ErrKerberosConfig   = errors.New("invalid Kerberos configuration")
	ErrKeytab           = errors.New("keytab unreadable")
	ErrPrincipalUnknown = errors.New("principal unknown to the KDC")
	ErrNotInKeytab      = errors.New("principal not in the keytab")
	ErrKeyRejected      = errors.New("the KDC rejected the keytab's key (a stale keytab: the account's password changed since it was exported, or another account's keytab)")
	ErrKDCUnreachable   = errors.New("no KDC reachable")
	ErrClockSkew        = errors.New("clock skew with the KDC beyond 5 minutes (sync this host's clock: NTP)")
	ErrSPNUnknown       = errors.New("SPN unknown to the KDC")
	ErrAccountDisabled  = errors.New("account disabled, locked or expired")
	ErrEncType          = errors.New("no encryption type in common between the keytab and the account")
)

// krbCauses maps the markers of gokrb5's errors (its KRB-ERROR names and
// error classes) to a cause; gokrb5 flattens its errors to text.
var krbCauses = []struct {
	marker string
	cause  error
}{
	{"KDC_ERR_C_PRINCIPAL_UNKNOWN", ErrPrincipalUnknown},
	{"KDC_ERR_PREAUTH_FAILED", ErrKeyRejected},
	{"KRB_AP_ERR_BAD_INTEGRITY", ErrKeyRejected},
	{"KDC_ERR_S_PRINCIPAL_UNKNOWN", ErrSPNUnknown},
	{"KRB_AP_ERR_SKEW", ErrClockSkew},
	{"KDC_ERR_CLIENT_REVOKED", ErrAccountDisabled},
	{"KDC_ERR_KEY_EXPIRED", ErrAccountDisabled},
	{"KDC_ERR_ETYPE_NOSUPP", ErrEncType},
	{"Networking_Error", ErrKDCUnreachable},
	{"no KDCs defined", ErrKDCUnreachable},
	{"no KDC SRV records", ErrKDCUnreachable},
	{"Keytab_Error", ErrKeytab},
}

// classify wraps err, from gokrb5 or a GSSAPI bind, with what it was doing
// and, when known, its cause.
func classify(what string, err error) error {
	var known error
	for _, c := range []error{ErrKerberosConfig, ErrKeytab, ErrNotInKeytab, ErrKDCUnreachable, ErrSPNUnknown} {
		if errors.Is(err, c) {
			known = c
		}
	}
	if known == nil {
		msg := err.Error()
		for _, c := range krbCauses {
			if strings.Contains(msg, c.marker) {
				known = c.cause
				break
			}
		}
	}
	if known == nil || errors.Is(err, known) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %w: %w", what, known, err)
}

// retryable reports whether a failed GSSAPI bind may succeed with a new
// login: not when the SPN, principal or KDCs are wrong.
func retryable(err error) bool {
	err = classify("", err)
	for _, c := range []error{ErrSPNUnknown, ErrPrincipalUnknown, ErrKDCUnreachable, ErrClockSkew, ErrKerberosConfig, ErrKeytab} {
		if errors.Is(err, c) {
			return false
		}
	}
	return true
}

var pkgLog atomic.Pointer[zerolog.Logger]

// SetLogger sets where the Kerberos logins and renewals are logged (by
// default nowhere). gokrb5's own messages go at debug level; none holds a key.
func SetLogger(l zerolog.Logger) {
	l = l.With().Str("component", "ldapconn").Logger()
	pkgLog.Store(&l)
}

func logger() *zerolog.Logger {
	if l := pkgLog.Load(); l != nil {
		return l
	}
	nop := zerolog.Nop()
	return &nop
}

// gokrbLogger passes gokrb5's log lines (TGT added, renewed, ticket cached)
// to the package logger at debug level.
func gokrbLogger() *log.Logger {
	return log.New(gokrbWriter{}, "", 0)
}

type gokrbWriter struct{}

func (gokrbWriter) Write(p []byte) (int, error) {
	logger().Debug().Str("source", "gokrb5").Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}

var _ io.Writer = gokrbWriter{}
