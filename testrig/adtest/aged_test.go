package adtest

import (
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/events"
)

// TestAgePassword: a password aged past the domain's 42 days is expired in
// Samba's own eyes (constructed expiry in the past, UF_PASSWORD_EXPIRED);
// one aged less is not.
func TestAgePassword(t *testing.T) {
	dc := Require(t)
	ou := dc.NewOU(t)
	const day = 24 * time.Hour
	for _, tc := range []struct {
		name    string
		age     time.Duration
		expired bool
	}{
		{"aged50", 50 * day, true},
		{"aged39", 39 * day, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := dc.CreateUser(t, ou, tc.name, UserOpts{})
			set := dc.AgePassword(t, u, tc.age, "")
			e := dc.Read(t, u.DN, "pwdLastSet", "msDS-UserPasswordExpiryTimeComputed", "msDS-User-Account-Control-Computed")
			exp := events.FileTime(attrInt(t, e, "msDS-UserPasswordExpiryTimeComputed"))
			if got := exp.Sub(set); got != 42*day {
				t.Errorf("expiry %s is %s after pwdLastSet %s, want the domain's 42 days", exp, got, set)
			}
			if past := exp.Before(time.Now()); past != tc.expired {
				t.Errorf("expiry %s in the past = %v, want %v", exp, past, tc.expired)
			}
			const ufPasswordExpired = 0x800000
			if got := attrInt(t, e, "msDS-User-Account-Control-Computed")&ufPasswordExpired != 0; got != tc.expired {
				t.Errorf("msDS-User-Account-Control-Computed has UF_PASSWORD_EXPIRED = %v, want %v", got, tc.expired)
			}
		})
	}
}
