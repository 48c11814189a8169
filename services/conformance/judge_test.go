package conformance

import (
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/graph"
)

func TestJudgeDeltaItem(t *testing.T) {
	cloud := &graph.User{ID: "u1", UPN: "a@contoso.test", AccountEnabled: true}
	synced := &graph.User{ID: "u2", UPN: "b@contoso.test", AccountEnabled: true, SyncEnabled: true, ImmutableID: "abc="}
	item := func(u *graph.User, absent ...string) graph.DeltaUser {
		return graph.DeltaUser{User: *u, Absent: absent}
	}
	tests := []struct {
		name    string
		it      graph.DeltaUser
		ref     *graph.User
		compare bool
		want    string // a problem containing this; "" = none
	}{
		{"cloud-only user, never-set properties left out", item(cloud, "onPremisesImmutableId", "onPremisesSyncEnabled", "mail"), cloud, true, ""},
		{"cloud-only user, immutable id present as null", item(cloud, "onPremisesSyncEnabled"), cloud, true, "onPremisesImmutableId present (null)"},
		{"cloud-only user, sync flag present as null", item(cloud, "onPremisesImmutableId"), cloud, true, "onPremisesSyncEnabled present (null)"},
		{"synced user, all present", item(synced), synced, true, ""},
		{"upn left out", item(synced, "userPrincipalName"), synced, true, "userPrincipalName left out"},
		{"value differs from GET", graph.DeltaUser{User: graph.User{ID: "u2", UPN: "b@contoso.test", AccountEnabled: false, SyncEnabled: true, ImmutableID: "abc="}}, synced, true, "accountEnabled false"},
		{"value differs, not compared", graph.DeltaUser{User: graph.User{ID: "u2", UPN: "b@contoso.test", AccountEnabled: true, SyncEnabled: true, ImmutableID: "abc=", PasswordPolicies: "None"}}, synced, false, ""},
		{"policies differ from GET", graph.DeltaUser{User: graph.User{ID: "u2", UPN: "b@contoso.test", AccountEnabled: true, SyncEnabled: true, ImmutableID: "abc=", PasswordPolicies: "None"}}, synced, true, "passwordPolicies"},
		{"removed", graph.DeltaUser{User: graph.User{ID: "u1"}, Removed: true}, cloud, true, "@removed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, problems := judgeDeltaItem(tt.it, tt.ref, tt.compare)
			got := strings.Join(problems, "; ")
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("problems %q, want one containing %q", got, tt.want)
			}
		})
	}
}

func TestJudgeADState(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	set := fileTime(now.Add(-24 * time.Hour))
	in41 := fileTime(now.Add(41 * 24 * time.Hour))
	past := fileTime(now.Add(-time.Hour))
	const normal, neverExpires, expired = 0x200, 0x10200, 0x800000
	tests := []struct {
		name string
		s    adState
		want string
	}{
		{"normal", adState{PwdLastSet: set, UAC: normal, Expiry: in41, HasComputed: true}, ""},
		{"must change", adState{PwdLastSet: 0, UAC: normal, UACComputed: expired, HasComputed: true}, ""},
		{"never expires", adState{PwdLastSet: set, UAC: neverExpires, Expiry: expiryNever, HasComputed: true}, ""},
		// pwdLastSet 0 with DONT_EXPIRE_PASSWD is not "must change" (MS-ADA3).
		{"never expires with pwdLastSet 0", adState{PwdLastSet: 0, UAC: neverExpires, Expiry: expiryNever, HasComputed: true}, ""},
		{"never expires but flagged expired", adState{PwdLastSet: 0, UAC: neverExpires, UACComputed: expired, Expiry: expiryNever, HasComputed: true}, "UF_PASSWORD_EXPIRED computed"},
		{"never expires with a date", adState{PwdLastSet: set, UAC: neverExpires, Expiry: in41, HasComputed: true}, "not never"},
		{"must change without the flag", adState{PwdLastSet: 0, UAC: normal, HasComputed: true}, "UF_PASSWORD_EXPIRED not computed"},
		{"must change with an expiry", adState{PwdLastSet: 0, UAC: normal, UACComputed: expired, Expiry: in41, HasComputed: true}, "not 0"},
		{"expired", adState{PwdLastSet: set, UAC: normal, UACComputed: expired, Expiry: past, HasComputed: true}, ""},
		{"expired without the flag", adState{PwdLastSet: set, UAC: normal, Expiry: past, HasComputed: true}, "UF_PASSWORD_EXPIRED=false"},
		{"domain without max age", adState{PwdLastSet: set, UAC: normal, Expiry: expiryNever, HasComputed: true}, ""},
		{"smartcard required", adState{PwdLastSet: set, UAC: normal | 0x40000, Expiry: expiryNever, HasComputed: true}, ""},
		{"smartcard required with a date", adState{PwdLastSet: set, UAC: normal | 0x40000, Expiry: in41, HasComputed: true}, "not never"},
		{"constructed missing", adState{PwdLastSet: set, UAC: normal}, "not returned"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := strings.Join(judgeADState(tt.s, now), "; ")
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("problems %q, want one containing %q", got, tt.want)
			}
		})
	}
}

func TestRedactLinkAndResultString(t *testing.T) {
	// The links a result shows lose their query: delta and skip tokens are state.
	if got := redactLink("https://graph.example/v1.0/users/delta?$deltatoken=SECRET"); strings.Contains(got, "SECRET") {
		t.Errorf("redactLink kept the token: %s", got)
	}
	r := Result{Status: Fail, Name: "x", Seen: "a\nb", Want: "w"}
	if s := r.String(); !strings.Contains(s, "want: w") || !strings.Contains(s, "\n      b") {
		t.Errorf("String() = %q", s)
	}
}

func TestJudgeExpirySource(t *testing.T) {
	set := fileTime(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	days42 := -int64(42 * 24 * time.Hour / 100)
	tests := []struct {
		name   string
		s      adState
		maxAge int64
		want   string
	}{
		{"domain 42 days", adState{PwdLastSet: set, Expiry: set - days42}, days42, ""},
		{"within a second", adState{PwdLastSet: set, Expiry: set - days42 + 5_000_000}, days42, ""},
		{"a PSO's age not applied", adState{PwdLastSet: set, Expiry: set - days42}, days42 / 2, "computed expiry"},
		{"never", adState{PwdLastSet: set, Expiry: expiryNever}, 0, ""},
		{"never, min int64", adState{PwdLastSet: set, Expiry: expiryNever}, -1 << 63, ""},
		{"never but a date", adState{PwdLastSet: set, Expiry: set - days42}, 0, "never expires"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := strings.Join(judgeExpirySource(tt.s, tt.maxAge, "the domain"), "; ")
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("problems %q, want one containing %q", got, tt.want)
			}
		})
	}
}
