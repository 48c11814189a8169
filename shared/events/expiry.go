package events

import (
	"fmt"
	"time"
)

// TypeExpiry is a due point of a user's password expiry schedule (a lead
// day's notice, or the expiry itself). Data: ExpiryTimer. The scheduler
// publishes it when due; the evaluator decides what it means then.
const TypeExpiry = "expiry"

// Where a user's expiry came from (ADUser.ExpirySource).
const (
	ExpirySourceComputed   = "computed" // msDS-UserPasswordExpiryTimeComputed
	ExpirySourcePSO        = "pso"      // pwdLastSet + the resultant PSO's msDS-MaximumPasswordAge
	ExpirySourceDomain     = "domain"   // pwdLastSet + the domain's maxPwdAge
	ExpirySourceNever      = "never"    // never expires (flag, or no maximum age)
	ExpirySourceMustChange = "must_change"
)

// ExpiryTimer is one due point of a user's schedule.
type ExpiryTimer struct {
	ObjectGUID string    `json:"object_guid"`
	Key        string    `json:"key"` // ExpiryKey of the password it is about
	LeadDays   int       `json:"lead_days"`
	Due        time.Time `json:"due"`
}

// EventID is stable: the same due point of the same password always has the
// same ID, so a scheduler that fires it twice (failover) is deduplicated.
func (t ExpiryTimer) EventID() string {
	return KeySafe(fmt.Sprintf("timer.expiry.%s.%s.%d", t.ObjectGUID, t.Key, t.LeadDays))
}

// ExpiryKey names one password's expiry: a new password, or a new expiry of
// the same password (a PSO or maxPwdAge change), starts a new schedule.
func ExpiryKey(pwdLastSet int64, expiry time.Time) string {
	return fmt.Sprintf("pwd%d.exp%d", pwdLastSet, expiry.Unix())
}

// PasswordExpiry returns the user's effective expiry: the zero time and
// false when the password does not expire (or must be changed anyway).
func (u ADUser) PasswordExpiry() (time.Time, bool) {
	ft := u.Expiry
	if u.ExpirySource == "" && ft == 0 {
		ft = u.ExpiryComputed // events from before Expiry existed
	}
	if u.PwdLastSet == 0 || ft <= 0 || ft == FileTimeNeverExpires || u.NeverExpires() {
		return time.Time{}, false
	}
	return FileTime(ft), true
}

// ADPolicy is a domain's password policy as ingest read it after a change
// (events.ad.policy): what expiries are computed from.
type ADPolicy struct {
	Domain       string        `json:"domain"`
	Rev          int64         `json:"rev"`            // the PolicyRev users re-read after it carry
	DomainMaxAge time.Duration `json:"domain_max_age"` // 0 = never expires
	PSOs         []PSO         `json:"psos,omitempty"`
}

// PSO is one fine-grained password policy.
type PSO struct {
	DN         string        `json:"dn"`
	Name       string        `json:"name"`
	Precedence int64         `json:"precedence"`
	MaxAge     time.Duration `json:"max_age"` // 0 = never expires
	AppliesTo  []string      `json:"applies_to,omitempty"`
}

// EventID is stable per domain and revision.
func (p ADPolicy) EventID() string { return KeySafe(fmt.Sprintf("ad.policy.%s.%d", p.Domain, p.Rev)) }
