package adwatch

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/testrig/adtest"
)

// TestFullSyncExpiryAgreesWithDC: a full sync reads the stored attributes
// only (scanAll) and computes expiry and resultant PSO itself; for every
// case the DC's own msDS-UserPasswordExpiryTimeComputed (read afterwards,
// user by user) must be what the full sync published. Cases: domain policy,
// a PSO through a global group, a PSO applied to the user, a PSO through
// the primary group (not in memberOf), never expires, must change; and
// must change with never expires, where pwsync says must-change and the DC
// never (neither expires nor is prompted). Every other user of the shared
// DC is compared too, and mismatches there are logged (other tests' PSOs
// through universal groups, where Samba differs from AD, see
// TestPSOFallbackAgreesWithDC).
func TestFullSyncExpiryAgreesWithDC(t *testing.T) {
	dc := adtest.Require(t)
	ou := dc.NewOU(t)
	gStaff := dc.CreateGroup(t, ou, "ex-staff")
	gPrimary := dc.CreateGroup(t, ou, "ex-primary")
	plain := dc.CreateUser(t, ou, "ex-plain", adtest.UserOpts{})
	staff := dc.CreateUser(t, ou, "ex-staff", adtest.UserOpts{})
	direct := dc.CreateUser(t, ou, "ex-direct", adtest.UserOpts{})
	primary := dc.CreateUser(t, ou, "ex-primary", adtest.UserOpts{})
	never := dc.CreateUser(t, ou, "ex-never", adtest.UserOpts{NeverExpires: true})
	must := dc.CreateUser(t, ou, "ex-must", adtest.UserOpts{MustChange: true})
	mustNever := dc.CreateUser(t, ou, "ex-mustnever", adtest.UserOpts{MustChange: true, NeverExpires: true})
	dc.AddMember(t, gStaff, staff.DN)
	dc.AddMember(t, gPrimary, primary.DN)
	rid := sidRID(dc.Read(t, gPrimary, "objectSid").GetRawAttributeValue("objectSid"))
	if rid == 0 {
		t.Fatalf("no RID in the objectSid of %s", gPrimary)
	}
	setPrimary := ldap.NewModifyRequest(primary.DN, nil)
	setPrimary.Replace("primaryGroupID", []string{strconv.FormatUint(uint64(rid), 10)})
	if err := dc.Conn(t).Modify(setPrimary); err != nil {
		t.Fatalf("making %s the primary group of %s: %v", gPrimary, primary.DN, err)
	}
	// before the OU's removal (cleanups run last first): a group still
	// someone's primary group cannot be deleted
	t.Cleanup(func() {
		back := ldap.NewModifyRequest(primary.DN, nil)
		back.Replace("primaryGroupID", []string{"513"}) // Domain Users
		if err := dc.Conn(t).Modify(back); err != nil {
			t.Errorf("restoring the primary group of %s: %v", primary.DN, err)
		}
	})
	// precedences 1-3 beat whatever the seed applies, to these users only
	psoStaff := dc.CreatePSO(t, "ex-staff", 3, 21*day, gStaff)
	psoDirect := dc.CreatePSO(t, "ex-direct", 2, 22*day, direct.DN)
	psoPrimary := dc.CreatePSO(t, "ex-primary", 1, 23*day, gPrimary)

	sink := &recSink{}
	w, err := New(dcConfig(dc), sink, newMemCursors(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	c, err := w.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := w.startPolicy(ctx, c); err != nil {
		t.Fatal(err)
	}
	if attrs, err := w.scanAttrs(c); err != nil || len(attrs) != len(storedUserAttrs) {
		t.Fatalf("the administrator's full sync reads %v (%v), want the stored attributes only", attrs, err)
	}
	start := time.Now()
	n, err := w.scanAll(ctx, c, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("full sync of %d users, stored attributes only: %s", n, time.Since(start).Round(time.Millisecond))
	got := map[string]events.ADUser{}
	for _, p := range sink.got {
		u := p.user
		if u.UACComputed != 0 || u.ExpiryComputed != 0 || u.ResultantPSO != "" {
			t.Fatalf("%s: the full sync read a constructed attribute: %+v", u.DN, u)
		}
		got[strings.ToLower(u.DN)] = u
	}

	// the DC's answers, read after the sync with the constructed attributes
	res, err := c.SearchWithPaging(ldap.NewSearchRequest(w.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		w.cfg.UserFilter, []string{"msDS-UserPasswordExpiryTimeComputed", "msDS-ResultantPSO", "pwdLastSet"}, nil), 500)
	if err != nil {
		t.Fatal(err)
	}
	dcSays := map[string]*ldap.Entry{}
	for _, e := range res.Entries {
		dcSays[strings.ToLower(e.DN)] = e
	}
	psoName := func(dn string) string { return psoCN(dn) }
	tests := []struct {
		name       string
		u          adtest.User
		wantSource string
		wantPolicy string // PolicyName
		wantDCPSO  string // the DC's msDS-ResultantPSO
		dcDiffers  bool   // pwsync's Expiry is not the DC's value (documented)
	}{
		{"domain_policy", plain, events.ExpirySourceDomain, "domain", "", false},
		{"pso_through_global_group", staff, events.ExpirySourcePSO, psoName(psoStaff), psoStaff, false},
		{"pso_applied_to_the_user", direct, events.ExpirySourcePSO, psoName(psoDirect), psoDirect, false},
		{"pso_through_the_primary_group", primary, events.ExpirySourcePSO, psoName(psoPrimary), psoPrimary, false},
		{"never_expires", never, events.ExpirySourceNever, "domain", "", false},
		{"must_change", must, events.ExpirySourceMustChange, "domain", "", false},
		{"must_change_and_never_expires", mustNever, events.ExpirySourceMustChange, "domain", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := strings.ToLower(tt.u.DN)
			u, ok := got[key]
			if !ok {
				t.Fatalf("the full sync did not publish %s", tt.u.DN)
			}
			e := dcSays[key]
			if e == nil {
				t.Fatalf("the DC does not list %s", tt.u.DN)
			}
			dcExpiry, err := strconv.ParseInt(e.GetAttributeValue("msDS-UserPasswordExpiryTimeComputed"), 10, 64)
			if err != nil {
				t.Fatalf("msDS-UserPasswordExpiryTimeComputed of %s: %v", tt.u.DN, err)
			}
			if pso := e.GetAttributeValue("msDS-ResultantPSO"); !strings.EqualFold(pso, tt.wantDCPSO) {
				t.Fatalf("premise: the DC says msDS-ResultantPSO %q, the case expects %q", pso, tt.wantDCPSO)
			}
			if u.ExpirySource != tt.wantSource || u.PolicyName != tt.wantPolicy {
				t.Errorf("source %s, policy %q; want %s, %q", u.ExpirySource, u.PolicyName, tt.wantSource, tt.wantPolicy)
			}
			switch {
			case tt.dcDiffers:
				if u.Expiry != 0 || dcExpiry != events.FileTimeNeverExpires {
					t.Errorf("expiry %d, the DC's %d: want must-change (0) here and never at the DC", u.Expiry, dcExpiry)
				}
				if _, expires := u.PasswordExpiry(); expires {
					t.Error("a must-change, never-expires user has an expiry")
				}
			case u.Expiry != dcExpiry:
				t.Errorf("expiry %d (%s), the DC's msDS-UserPasswordExpiryTimeComputed %d (%s): %s apart",
					u.Expiry, events.FileTime(u.Expiry).UTC(), dcExpiry, events.FileTime(dcExpiry).UTC(), time.Duration(u.Expiry-dcExpiry)*100)
			}
		})
	}

	// the rest of the domain: the same comparison, logged
	agree, differ := 0, 0
	for key, u := range got {
		e := dcSays[key]
		if e == nil || strings.Contains(key, strings.ToLower(ou)) {
			continue
		}
		dcExpiry, _ := strconv.ParseInt(e.GetAttributeValue("msDS-UserPasswordExpiryTimeComputed"), 10, 64)
		if u.Expiry == dcExpiry || u.PwdLastSet == 0 && u.NeverExpires() {
			agree++
			continue
		}
		differ++
		if differ <= 5 {
			t.Logf("other user %s: expiry %d (%s, policy %q), the DC's %d (resultant PSO %q)", u.DN, u.Expiry, u.ExpirySource,
				u.PolicyName, dcExpiry, e.GetAttributeValue("msDS-ResultantPSO"))
		}
	}
	t.Logf("the rest of the domain: %d users agree with the DC, %d differ", agree, differ)
}

// TestFullSyncReadsConstructedWithoutPolicy: a bind account that cannot
// read the Password Settings Container cannot compute resultant PSOs, so its
// policy is not complete and a full sync keeps reading the DC's constructed
// attributes.
func TestFullSyncReadsConstructedWithoutPolicy(t *testing.T) {
	dc := adtest.Require(t)
	ou := dc.NewOU(t)
	reader := dc.CreateUser(t, ou, "ex-reader", adtest.UserOpts{})
	low := dcConfig(dc)
	low.BindDN, low.BindPassword = reader.UPN, adtest.DefaultPassword
	w, err := New(low, nopSink{}, newMemCursors(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	c, err := w.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := w.startPolicy(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	attrs, err := w.scanAttrs(c)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(attrs, userAttrs) {
		t.Fatalf("a plain user's full sync reads %v: it would compute PSO members' expiry from the domain's policy", attrs)
	}
}
