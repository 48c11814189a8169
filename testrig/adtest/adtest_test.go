package adtest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/pwsync/pwsync/shared/events"
)

func TestParseEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "env")
	content := "# comment\n" +
		"SAMBA_AD_LDAP_URL='ldap://127.0.0.1:389'\n" +
		"export SAMBA_AD_BIND_PASSWORD='it'\\''s'\n" +
		"SAMBA_AD_REALM=EXAMPLE.TEST\n\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := parseEnv(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"SAMBA_AD_LDAP_URL":      "ldap://127.0.0.1:389",
		"SAMBA_AD_BIND_PASSWORD": "it's",
		"SAMBA_AD_REALM":         "EXAMPLE.TEST",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d vars %v, want %v", len(got), got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if _, err := dcFromEnv(got); err == nil || !strings.Contains(err.Error(), "SAMBA_AD_") {
		t.Errorf("dcFromEnv with missing settings: err = %v, want one naming the setting", err)
	}
}

func TestParseEnvRejectsBrokenQuoting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "env")
	if err := os.WriteFile(path, []byte("A='open\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := parseEnv(path); err == nil {
		t.Fatal("unterminated quote accepted")
	}
}

func TestOUName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"TestFullSync", "testfullsync"},
		{"TestX/sub_case,with=odd+chars", "testx-sub-case-with-odd-chars"},
		{strings.Repeat("a", 50) + "/tail", strings.Repeat("a", 35) + "-tail"},
	}
	for _, tt := range tests {
		if got := ouName(tt.in); got != tt.want {
			t.Errorf("ouName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestUserLifecycle(t *testing.T) {
	dc := Require(t)
	ou := dc.NewOU(t)
	u := dc.CreateUser(t, ou, "lc-user", UserOpts{Mail: "lc@example.test"})

	e := dc.Read(t, u.DN, "objectGUID", "userPrincipalName", "mail", "pwdLastSet", "userAccountControl",
		"msDS-UserPasswordExpiryTimeComputed")
	if got, _ := events.GUIDString(e.GetRawAttributeValue("objectGUID")); got != u.GUID || u.GUID == "" {
		t.Errorf("GUID = %q, entry has %q", u.GUID, got)
	}
	if u.ImmutableID != events.ImmutableID(e.GetRawAttributeValue("objectGUID")) {
		t.Errorf("ImmutableID = %q", u.ImmutableID)
	}
	if got := e.GetAttributeValue("userPrincipalName"); !strings.HasPrefix(got, "lc-user-") || got != u.SAM+"@example.test" || got != u.UPN {
		t.Errorf("UPN = %q (User.UPN %q, SAM %q)", got, u.UPN, u.SAM)
	}
	if got := e.GetAttributeValue("mail"); got != "lc@example.test" {
		t.Errorf("mail = %q", got)
	}
	if got := attrInt(t, e, "userAccountControl"); got != 512 {
		t.Errorf("userAccountControl = %d, want 512 (enabled, normal)", got)
	}
	// a real password was set: pwdLastSet is about now, expiry about 42 days later
	set := events.FileTime(attrInt(t, e, "pwdLastSet"))
	if d := time.Since(set); d < -time.Minute || d > time.Minute {
		t.Errorf("pwdLastSet = %v, want about now", set)
	}
	if exp := events.FileTime(attrInt(t, e, "msDS-UserPasswordExpiryTimeComputed")); exp.Sub(set) != 42*24*time.Hour {
		t.Errorf("expiry %v is not pwdLastSet + 42 days", exp)
	}
	// the password works: the user can bind with it
	bindAs(t, dc, u.UPN, DefaultPassword)

	dc.ForceChange(t, u.DN)
	if got := attrInt(t, dc.Read(t, u.DN, "pwdLastSet"), "pwdLastSet"); got != 0 {
		t.Errorf("after ForceChange pwdLastSet = %d, want 0", got)
	}

	dc.ResetPassword(t, u.DN, "Other.Passw0rd-2", false)
	if got := attrInt(t, dc.Read(t, u.DN, "pwdLastSet"), "pwdLastSet"); got == 0 {
		t.Error("after ResetPassword without must-change pwdLastSet is still 0")
	}
	bindAs(t, dc, u.UPN, "Other.Passw0rd-2")
	dc.ResetPassword(t, u.DN, "Third.Passw0rd-3", true)
	if got := attrInt(t, dc.Read(t, u.DN, "pwdLastSet"), "pwdLastSet"); got != 0 {
		t.Errorf("after ResetPassword with must-change pwdLastSet = %d, want 0", got)
	}

	dc.SetNeverExpires(t, u.DN, true)
	e = dc.Read(t, u.DN, "userAccountControl")
	if got := attrInt(t, e, "userAccountControl"); got != 512|events.UACDontExpirePassword {
		t.Errorf("after SetNeverExpires(true) userAccountControl = %#x", got)
	}
	dc.SetNeverExpires(t, u.DN, false)
	if got := attrInt(t, dc.Read(t, u.DN, "userAccountControl"), "userAccountControl"); got != 512 {
		t.Errorf("after SetNeverExpires(false) userAccountControl = %#x", got)
	}
}

func TestCreateUserOptions(t *testing.T) {
	dc := Require(t)
	ou := dc.NewOU(t)
	tests := []struct {
		name        string
		opts        UserOpts
		wantUAC     int64
		wantPwdZero bool
	}{
		{"must-change", UserOpts{MustChange: true}, 512, true},
		{"never-exp", UserOpts{NeverExpires: true}, 512 | events.UACDontExpirePassword, false},
		{"disabled", UserOpts{Disabled: true, Password: "Own.Passw0rd-9"}, 512 | events.UACAccountDisable, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := dc.CreateUser(t, ou, tt.name, tt.opts)
			e := dc.Read(t, u.DN, "pwdLastSet", "userAccountControl")
			if got := attrInt(t, e, "userAccountControl"); got != tt.wantUAC {
				t.Errorf("userAccountControl = %#x, want %#x", got, tt.wantUAC)
			}
			if got := attrInt(t, e, "pwdLastSet"); (got == 0) != tt.wantPwdZero {
				t.Errorf("pwdLastSet = %d, want zero: %v", got, tt.wantPwdZero)
			}
		})
	}
}

func TestSameNameInTwoOUs(t *testing.T) {
	dc := Require(t)
	a := dc.CreateUser(t, dc.NewOU(t), "twin", UserOpts{})
	b := dc.CreateUser(t, dc.NewOU(t), "twin", UserOpts{})
	if a.SAM == b.SAM || a.UPN == b.UPN {
		t.Fatalf("two users named twin share a name: %q and %q", a.SAM, b.SAM)
	}
}

func TestCreateUserRejectsLongSAM(t *testing.T) {
	if err := checkSAM(strings.Repeat("x", 21)); err == nil {
		t.Error("21-character sAMAccountName accepted")
	}
	if err := checkSAM("ok-name"); err != nil {
		t.Error(err)
	}
}

func TestCreateUsersAndCleanup(t *testing.T) {
	dc := Require(t)
	var ou string
	var users []User
	t.Run("create", func(t *testing.T) {
		ou = dc.NewOU(t)
		start := time.Now()
		users = dc.CreateUsers(t, ou, "bulk", 40)
		t.Logf("created %d users in %s", len(users), time.Since(start))
		seen := map[string]bool{}
		for _, u := range users {
			if u.GUID == "" || seen[u.GUID] {
				t.Fatalf("user %s has GUID %q (empty or duplicate)", u.DN, u.GUID)
			}
			seen[u.GUID] = true
		}
		if sam := users[39].SAM; len(sam) != len("bulk")+4+4 || !strings.HasPrefix(sam, "bulk") || !strings.HasSuffix(sam, "0039") ||
			sam[:8] != users[0].SAM[:8] {
			t.Errorf("SAMs %q ... %q, want bulk<4 hex>0000 ... bulk<same 4 hex>0039", users[0].SAM, sam)
		}
		e := dc.Read(t, users[7].DN, "userAccountControl", "objectGUID")
		if got, _ := events.GUIDString(e.GetRawAttributeValue("objectGUID")); got != users[7].GUID {
			t.Errorf("GUID of %s = %q, entry has %q", users[7].DN, users[7].GUID, got)
		}
	})
	if ou == "" {
		t.Fatal("no OU made")
	}
	// the subtest's cleanup removed the OU and its users
	c := dc.Conn(t)
	_, err := c.Search(ldap.NewSearchRequest(ou, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"1.1"}, nil))
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		t.Fatalf("after cleanup searching %s: err = %v, want noSuchObject", ou, err)
	}
}

func attrInt(t testing.TB, e *ldap.Entry, name string) int64 {
	t.Helper()
	v, err := strconv.ParseInt(e.GetAttributeValue(name), 10, 64)
	if err != nil {
		t.Fatalf("%s of %s = %q: %v", name, e.DN, e.GetAttributeValue(name), err)
	}
	return v
}

func bindAs(t *testing.T, dc *DC, upn, pw string) {
	t.Helper()
	c := dc.Conn(t)
	if err := c.Bind(upn, pw); err != nil {
		t.Errorf("binding as %s: %v", upn, err)
	}
}

func TestRemoveTreeEntryByEntry(t *testing.T) {
	dc := Require(t)
	saved := treeDeleteMax
	treeDeleteMax = 0 // the way of big trees, without making a big one
	t.Cleanup(func() { treeDeleteMax = saved })

	var top string
	t.Run("make", func(t *testing.T) {
		top = dc.NewOU(t) // its cleanup removes it entry by entry
		sub := "OU=sub," + top
		if err := addOU(dc.admin(t), sub); err != nil {
			t.Fatal(err)
		}
		dc.CreateUsers(t, top, "rt", 3)
		dc.CreateUsers(t, sub, "rs", 3)
	})
	_, err := dc.Conn(t).Search(ldap.NewSearchRequest(top, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"1.1"}, nil))
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		t.Fatalf("after removal searching %s: err = %v, want noSuchObject", top, err)
	}
}
