package adwatch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/adtest"
	"github.com/pwsync/pwsync/shared/events"
)

const day = 24 * time.Hour

func TestMaxAge(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"-36288000000000", 42 * day},
		{"0", 0},
		{"-9223372036854775808", 0},
		{"-36000000000", 0}, // an hour: Samba and AD treat under a day as never
		{"", 0},
	}
	for _, tt := range tests {
		if got, err := maxAge(tt.in); err != nil || got != tt.want {
			t.Errorf("maxAge(%q) = %s, %v; want %s", tt.in, got, err, tt.want)
		}
	}
	if _, err := maxAge("soon"); err == nil {
		t.Error("maxAge(soon): no error")
	}
}

// TestFallbackExpiry: without msDS-UserPasswordExpiryTimeComputed (not
// readable, or an old DC), the expiry is pwdLastSet + the effective age.
func TestFallbackExpiry(t *testing.T) {
	set := events.ToFileTime(time.Date(2026, 3, 2, 8, 30, 0, 0, time.UTC))
	p := &policy{DomainMaxAge: 42 * day, PSOs: []pso{
		{DN: "CN=Short,CN=Password Settings Container,CN=System,DC=x", Name: "Short", Precedence: 10, MaxAge: 30 * day, AppliesTo: []string{"CN=Staff,DC=x"}},
		{DN: "CN=Shorter,CN=Password Settings Container,CN=System,DC=x", Name: "Shorter", Precedence: 5, MaxAge: 20 * day, AppliesTo: []string{"CN=Admins,DC=x"}},
		{DN: "CN=Never,CN=Password Settings Container,CN=System,DC=x", Name: "Never", Precedence: 1, MaxAge: 0, AppliesTo: []string{"CN=Svc,DC=x"}},
	}}
	tests := []struct {
		name       string
		u          events.ADUser
		wantAge    time.Duration
		wantSource string
		wantPolicy string
	}{
		{"domain", events.ADUser{PwdLastSet: set, UserAccountControl: 512}, 42 * day, events.ExpirySourceDomain, "domain"},
		{"pso_by_direct_group", events.ADUser{PwdLastSet: set, UserAccountControl: 512, MemberOf: []string{"cn=staff,dc=x"}}, 30 * day, events.ExpirySourcePSO, "Short"},
		{"lowest_precedence_wins", events.ADUser{PwdLastSet: set, UserAccountControl: 512, MemberOf: []string{"CN=Staff,DC=x"}, Groups: []string{"CN=Admins,DC=x"}}, 20 * day, events.ExpirySourcePSO, "Shorter"},
		{"resultant_pso_told_by_dc", events.ADUser{PwdLastSet: set, UserAccountControl: 512, ResultantPSO: "CN=Short,CN=Password Settings Container,CN=System,DC=x"}, 30 * day, events.ExpirySourcePSO, "Short"},
		{"pso_without_max_age", events.ADUser{PwdLastSet: set, UserAccountControl: 512, MemberOf: []string{"CN=Svc,DC=x"}}, -1, events.ExpirySourceNever, "Never"},
		{"computed_wins", events.ADUser{PwdLastSet: set, UserAccountControl: 512, ExpiryComputed: set + int64(10*day/100)}, 10 * day, events.ExpirySourceComputed, "domain"},
		{"must_change", events.ADUser{PwdLastSet: 0, UserAccountControl: 512}, 0, events.ExpirySourceMustChange, "domain"},
		{"never_flag", events.ADUser{PwdLastSet: set, UserAccountControl: 512 | events.UACDontExpirePassword}, -1, events.ExpirySourceNever, "domain"},
		// the DC names a PSO the bind account could not read: its age is
		// unknown, and the domain's would be a wrong date
		{"resultant_pso_unreadable", events.ADUser{PwdLastSet: set, UserAccountControl: 512, MemberOf: []string{"CN=Staff,DC=x"},
			ResultantPSO: "CN=Hidden,CN=Password Settings Container,CN=System,DC=x"}, 0, "", "Hidden"},
		{"resultant_pso_unreadable_computed_still_wins", events.ADUser{PwdLastSet: set, UserAccountControl: 512, ExpiryComputed: set + int64(15*day/100),
			ResultantPSO: "CN=Hidden,CN=Password Settings Container,CN=System,DC=x"}, 15 * day, events.ExpirySourceComputed, "Hidden"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := tt.u
			setExpiry(&u, p)
			var want int64
			switch tt.wantAge {
			case -1:
				want = events.FileTimeNeverExpires
			case 0:
			default:
				want = set + int64(tt.wantAge/100)
			}
			if u.Expiry != want || u.ExpirySource != tt.wantSource || u.PolicyName != tt.wantPolicy {
				t.Fatalf("expiry %d source %s policy %s; want %d %s %s", u.Expiry, u.ExpirySource, u.PolicyName, want, tt.wantSource, tt.wantPolicy)
			}
		})
	}
}

func TestAffected(t *testing.T) {
	base := policy{DomainMaxAge: 42 * day, PSOs: []pso{{DN: "CN=P", MaxAge: 30 * day, AppliesTo: []string{"CN=G1"}}},
		Groups: map[string]string{"cn=g1": "a", "cn=g2": "b"}}
	if all, _, _ := affected(base, policy{DomainMaxAge: 90 * day}); !all {
		t.Error("maxPwdAge change does not affect everyone")
	}
	next := base
	next.PSOs = []pso{{DN: "CN=P", MaxAge: 20 * day, AppliesTo: []string{"CN=G1"}}}
	if all, groups, _ := affected(base, next); all || !slices.Equal(groups, []string{"cn=g1"}) {
		t.Errorf("PSO age change: all=%v groups=%v", all, groups)
	}
	next = base
	next.Groups = map[string]string{"cn=g1": "a", "cn=g2": "c"}
	if all, groups, _ := affected(base, next); all || !slices.Equal(groups, []string{"cn=g2"}) {
		t.Errorf("membership change: all=%v groups=%v", all, groups)
	}
}

// TestPolicyChangesReevaluateUsers runs the watcher against Samba: nested
// group membership resolved, a PSO applied to the outer group re-reads the
// nested member with the PSO's expiry, joining and leaving the group
// re-read the user concerned.
func TestPolicyChangesReevaluateUsers(t *testing.T) {
	dc := adtest.Require(t)
	ou := dc.NewOU(t)
	outer := dc.CreateGroup(t, ou, "outer")
	inner := dc.CreateGroup(t, ou, "inner")
	dc.AddMember(t, outer, inner)
	u1 := dc.CreateUser(t, ou, "pol-a", adtest.UserOpts{})
	u2 := dc.CreateUser(t, ou, "pol-b", adtest.UserOpts{})
	dc.AddMember(t, inner, u1.DN)

	cfg := dcConfig(dc)
	cfg.Groups = []string{outer}
	cfg.PollInterval, cfg.PolicyInterval = 200*time.Millisecond, 100*time.Millisecond
	sink := &recSink{}
	r := start(t, cfg, sink, newMemCursors(), testLogger(t))
	r.waitReady(t, fullSyncWait)

	is := func(u adtest.User) func(events.ADUser) bool {
		return func(x events.ADUser) bool { return x.ObjectGUID == u.GUID }
	}
	p1, _ := sink.waitFor(t, 0, time.Second, "u1 at full sync", is(u1))
	if !slices.ContainsFunc(p1.user.Groups, func(g string) bool { return strings.EqualFold(g, outer) }) {
		t.Fatalf("u1 groups = %v, want the outer group (nested through inner)", p1.user.Groups)
	}
	domainAge := time.Duration(p1.user.Expiry-p1.user.PwdLastSet) * 100
	if p1.user.ExpirySource != events.ExpirySourceComputed || domainAge < day {
		t.Fatalf("u1 expiry %d (source %s) for pwdLastSet %d", p1.user.Expiry, p1.user.ExpirySource, p1.user.PwdLastSet)
	}
	p2, _ := sink.waitFor(t, 0, time.Second, "u2 at full sync", is(u2))
	if len(p2.user.Groups) != 0 {
		t.Fatalf("u2 groups = %v, want none", p2.user.Groups)
	}

	from := sink.len()
	psoAge := 9 * day
	if psoAge == domainAge {
		psoAge = 8 * day
	}
	psoDN := dc.CreatePSO(t, "pso-exp", 3, psoAge, outer)
	got, _ := sink.waitFor(t, from, 10*time.Second, "u1 re-read after the PSO", func(x events.ADUser) bool {
		return x.ObjectGUID == u1.GUID && x.PolicyRev > 0
	})
	if age := time.Duration(got.user.Expiry-got.user.PwdLastSet) * 100; age != psoAge || !strings.EqualFold(got.user.ResultantPSO, psoDN) {
		t.Fatalf("u1 after PSO: age %s (want %s), resultant PSO %q (want %s), event %s", age, psoAge, got.user.ResultantPSO, psoDN, got.user.EventID())
	}
	if got.user.EventID() == p1.user.EventID() {
		t.Fatalf("re-read user has the same event ID %s: JetStream would drop it", got.user.EventID())
	}

	from = sink.len()
	dc.AddMember(t, inner, u2.DN)
	got, _ = sink.waitFor(t, from, 10*time.Second, "u2 re-read after joining", is(u2))
	if age := time.Duration(got.user.Expiry-got.user.PwdLastSet) * 100; age != psoAge || len(got.user.Groups) != 1 {
		t.Fatalf("u2 after joining: age %s (want %s), groups %v", age, psoAge, got.user.Groups)
	}

	from = sink.len()
	dc.RemoveMember(t, inner, u1.DN)
	got, _ = sink.waitFor(t, from, 10*time.Second, "u1 re-read after leaving", is(u1))
	if age := time.Duration(got.user.Expiry-got.user.PwdLastSet) * 100; age != domainAge || len(got.user.Groups) != 0 {
		t.Fatalf("u1 after leaving: age %s (want %s), groups %v", age, domainAge, got.user.Groups)
	}
}

// TestUnreadablePSOWarnsOnce: a bind account without read on the Password
// Settings Container (AD's default for non-admins, and Samba's) reads no
// PSOs, yet sees users' msDS-ResultantPSO. The watcher says so once per
// PSO, in a structured warning, however often such users are read.
func TestUnreadablePSOWarnsOnce(t *testing.T) {
	dc := adtest.Require(t)
	ou := dc.NewOU(t)
	group := dc.CreateGroup(t, ou, "hidden-pso")
	reader := dc.CreateUser(t, ou, "pso-reader", adtest.UserOpts{})
	member := dc.CreateUser(t, ou, "pso-member", adtest.UserOpts{})
	dc.AddMember(t, group, member.DN)
	psoDN := dc.CreatePSO(t, "pso-hidden", 4, 20*day, group)
	ctx := context.Background()
	hasPSO := func(ap events.ADPolicy) bool {
		return slices.ContainsFunc(ap.PSOs, func(p events.PSO) bool { return strings.EqualFold(p.DN, psoDN) })
	}
	admin := dcConfig(dc)
	if ap, err := ReadPolicy(ctx, admin); err != nil || !hasPSO(ap) {
		t.Fatalf("the administrator reads PSOs %+v (%v), want %s among them", ap.PSOs, err, psoDN)
	}
	low := admin
	low.BindDN, low.BindPassword = reader.UPN, adtest.DefaultPassword
	if ap, err := ReadPolicy(ctx, low); err != nil || hasPSO(ap) {
		t.Fatalf("a plain user reads PSOs %+v (%v): the test needs one that cannot", ap.PSOs, err)
	}

	var logs bytes.Buffer
	w, err := New(low, nopSink{}, nopCursors{}, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	c, err := w.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := w.startPolicy(ctx, c); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		res, err := c.Search(ldap.NewSearchRequest(member.DN, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
			"(objectClass=*)", userAttrs, nil))
		if err != nil {
			t.Fatal(err)
		}
		users, err := w.complete(c, res.Entries, false)
		if err != nil {
			t.Fatal(err)
		}
		u := users[0]
		if !strings.EqualFold(u.ResultantPSO, psoDN) || u.ExpirySource != events.ExpirySourceComputed ||
			time.Duration(u.Expiry-u.PwdLastSet)*100 != 20*day {
			t.Fatalf("member as the plain user sees it: resultant PSO %q, expiry source %s, age %s; want the DC's computed 20 days",
				u.ResultantPSO, u.ExpirySource, time.Duration(u.Expiry-u.PwdLastSet)*100)
		}
	}
	var warned []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["level"] == "warn" && strings.EqualFold(fmt.Sprint(rec["pso"]), psoDN) {
			warned = append(warned, rec)
		}
	}
	if len(warned) != 1 || !strings.Contains(fmt.Sprint(warned[0]["message"]), "CN=Password Settings Container,CN=System") {
		t.Fatalf("warnings about %s: %v, want one naming the container to grant read on\n%s", psoDN, warned, logs.String())
	}
}
