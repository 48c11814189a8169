package conformance

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
)

// The pure judgements: what an answer must look like, apart from the calls.

// judgeDeltaItem judges one users delta item. ref is the user as GET
// answers it: present values must agree with it (when compareValues), and
// a property ref shows as never set must be left out, not null (user:
// delta, "If the property has never been set before it will not be
// included in the response"; a null says "cleared").
func judgeDeltaItem(it graph.DeltaUser, ref *graph.User, compareValues bool) (seen string, problems []string) {
	present := func(p string) bool { return !slices.Contains(it.Absent, p) }
	seen = fmt.Sprintf("item id=%s upn=%s accountEnabled=%t passwordPolicies=%q; left out: %s",
		it.ID, it.UPN, it.AccountEnabled, it.PasswordPolicies, orDefault(strings.Join(it.Absent, ","), "none"))
	if it.Removed {
		return seen, []string{"the user's item carries @removed"}
	}
	// Set on every user: never left out of a full item.
	for _, p := range []string{"userPrincipalName", "accountEnabled"} {
		if !present(p) {
			problems = append(problems, p+" left out, but every user has it")
		}
	}
	if ref == nil {
		return seen, problems
	}
	if compareValues {
		if present("userPrincipalName") && !strings.EqualFold(it.UPN, ref.UPN) {
			problems = append(problems, fmt.Sprintf("userPrincipalName %q, GET says %q", it.UPN, ref.UPN))
		}
		if present("accountEnabled") && it.AccountEnabled != ref.AccountEnabled {
			problems = append(problems, fmt.Sprintf("accountEnabled %t, GET says %t", it.AccountEnabled, ref.AccountEnabled))
		}
		if present("passwordPolicies") && it.PasswordPolicies != ref.PasswordPolicies {
			problems = append(problems, fmt.Sprintf("passwordPolicies %q, GET says %q", it.PasswordPolicies, ref.PasswordPolicies))
		}
	}
	// A cloud-only user never had the on-premises properties set.
	if !ref.SyncEnabled && ref.ImmutableID == "" {
		for _, p := range []string{"onPremisesImmutableId", "onPremisesSyncEnabled"} {
			if present(p) {
				problems = append(problems, p+" present (null) on a cloud-only user: Graph leaves a never-set property out")
			}
		}
	}
	return seen, problems
}

// Constructed expiry values (MS-ADTS msDS-UserPasswordExpiryTimeComputed).
const (
	expiryNever = int64(0x7FFFFFFFFFFFFFFF)
	// The bits for which the DC computes expiry "never" (MS-ADTS
	// msDS-UserPasswordExpiryTimeComputed): DONT_EXPIRE_PASSWD,
	// SMARTCARD_REQUIRED and the three trust-account bits.
	uacExpiryNever = events.UACDontExpirePassword | 0x40000 | 0x800 | 0x1000 | 0x2000
)

// adState is the password state of one user as the DC answers it.
type adState struct {
	PwdLastSet  int64 // FILETIME; 0 = must change (unless DONT_EXPIRE_PASSWD)
	UAC         int64
	UACComputed int64 // msDS-User-Account-Control-Computed
	Expiry      int64 // msDS-UserPasswordExpiryTimeComputed, FILETIME
	HasComputed bool  // both constructed attributes were returned
}

// fileTime converts a time to FILETIME (100 ns since 1601).
func fileTime(t time.Time) int64 {
	return (t.Unix()+11644473600)*10_000_000 + int64(t.Nanosecond()/100)
}

// judgeADState checks that the constructed attributes agree with
// pwdLastSet and userAccountControl as MS-ADTS defines them, which is what
// pwsync's rules read: must change = pwdLastSet 0 without
// DONT_EXPIRE_PASSWD (MS-ADA3 pwdLastSet), and then expiry 0 and
// UF_PASSWORD_EXPIRED; DONT_EXPIRE_PASSWD = expiry "never".
func judgeADState(s adState, now time.Time) []string {
	if !s.HasComputed {
		return []string{"msDS-UserPasswordExpiryTimeComputed or msDS-User-Account-Control-Computed not returned (constructed: asked for by name)"}
	}
	var problems []string
	expiredFlag := s.UACComputed&events.UACPasswordExpiredFlag != 0
	switch {
	case s.UAC&uacExpiryNever != 0:
		if s.Expiry != expiryNever {
			problems = append(problems, fmt.Sprintf("userAccountControl %#x (DONT_EXPIRE_PASSWD, smartcard or trust account) but expiry %d, not never (0x7FFFFFFFFFFFFFFF)", s.UAC, s.Expiry))
		}
		if s.UAC&events.UACDontExpirePassword != 0 && expiredFlag {
			problems = append(problems, "DONT_EXPIRE_PASSWD set but UF_PASSWORD_EXPIRED computed")
		}
	case s.PwdLastSet == 0:
		if s.Expiry != 0 {
			problems = append(problems, fmt.Sprintf("pwdLastSet 0 (must change) but expiry %d, not 0", s.Expiry))
		}
		if !expiredFlag {
			problems = append(problems, "pwdLastSet 0 (must change) but UF_PASSWORD_EXPIRED not computed")
		}
	default:
		if s.Expiry != expiryNever && s.Expiry <= s.PwdLastSet {
			problems = append(problems, fmt.Sprintf("expiry %d not after pwdLastSet %d", s.Expiry, s.PwdLastSet))
		}
		if past := s.Expiry != expiryNever && s.Expiry <= fileTime(now); past != expiredFlag {
			problems = append(problems, fmt.Sprintf("expiry %s but UF_PASSWORD_EXPIRED=%t", fileTimeString(s.Expiry), expiredFlag))
		}
	}
	return problems
}

func fileTimeString(ft int64) string {
	switch ft {
	case 0:
		return "0 (must change)"
	case expiryNever:
		return "never"
	}
	return time.Unix(ft/10_000_000-11644473600, 0).UTC().Format(time.RFC3339)
}

// maxAgeNever reports whether a maxPwdAge / msDS-MaximumPasswordAge value
// (negative 100 ns ticks) means "never expires": 0 or the minimum int64.
func maxAgeNever(v int64) bool { return v == 0 || v == -1<<63 }

// judgeExpirySource checks that the DC's computed expiry is pwdLastSet plus
// the effective maximum age (the resultant PSO's, else the domain's): what
// pwsync computes itself when the constructed value is missing.
func judgeExpirySource(s adState, maxAge int64, source string) []string {
	if maxAgeNever(maxAge) {
		if s.Expiry != expiryNever {
			return []string{fmt.Sprintf("%s never expires but computed expiry %s", source, fileTimeString(s.Expiry))}
		}
		return nil
	}
	want := s.PwdLastSet - maxAge // maxAge is negative
	if d := s.Expiry - want; d < -10_000_000 || d > 10_000_000 {
		return []string{fmt.Sprintf("computed expiry %s, but pwdLastSet + %s's maximum age (%s) is %s",
			fileTimeString(s.Expiry), source, time.Duration(-maxAge*100), fileTimeString(want))}
	}
	return nil
}
