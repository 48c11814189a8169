package adtest

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode/utf16"

	"github.com/go-ldap/ldap/v3"

	"github.com/pwsync/pwsync/shared/events"
)

// DefaultPassword is what CreateUser sets when UserOpts.Password is empty. It
// meets the domain's complexity rules and the seeded PSO's 12 characters.
const DefaultPassword = "Test.Passw0rd-1"

// UserOpts shapes a user made by CreateUser.
type UserOpts struct {
	Password     string // empty: DefaultPassword
	MustChange   bool   // pwdLastSet=0: "User must change password at next logon"
	NeverExpires bool   // userAccountControl 0x10000
	Disabled     bool   // userAccountControl 0x2
	Mail         string
}

// User is a user a test created.
type User struct {
	DN, SAM, UPN string
	GUID         string // canonical lower-case, as events.ADUser.ObjectGUID
	ImmutableID  string // base64 of the raw objectGUID, as Entra's onPremisesImmutableId
}

const (
	uacNormalAccount = 0x200
	maxSAMLength     = 20 // sAMAccountName's limit for users
)

// CreateUser creates an enabled user (unless o.Disabled) in ouDN with a
// password set over LDAPS. sAMAccountName and UPN are unique in the whole
// domain, which other packages' tests share at the same time, so the name is
// sam plus "-" and 4 random hex digits (sam: at most 15 characters); the
// returned User has it, its UPN is <that>@<realm in lower case>.
func (dc *DC) CreateUser(t testing.TB, ouDN, sam string, o UserOpts) User {
	t.Helper()
	if len(sam) > maxSAMLength-len(suffix()) {
		t.Fatalf("adtest: sAMAccountName base %q: at most %d characters (a unique suffix is added)", sam, maxSAMLength-len(suffix()))
	}
	sam += suffix()
	if err := checkSAM(sam); err != nil {
		t.Fatalf("adtest: %v", err)
	}
	pw := o.Password
	if pw == "" {
		pw = DefaultPassword
	}
	uac := uacNormalAccount
	if o.NeverExpires {
		uac |= events.UACDontExpirePassword
	}
	if o.Disabled {
		uac |= events.UACAccountDisable
	}
	u := User{DN: "CN=" + ldap.EscapeDN(sam) + "," + ouDN, SAM: sam, UPN: dc.upn(sam)}
	req := ldap.NewAddRequest(u.DN, nil)
	req.Attribute("objectClass", []string{"user"})
	req.Attribute("sAMAccountName", []string{sam})
	req.Attribute("userPrincipalName", []string{u.UPN})
	req.Attribute("displayName", []string{sam})
	if o.Mail != "" {
		req.Attribute("mail", []string{o.Mail})
	}
	// the password and the flags in the same add: the account is never
	// enabled without a password, as with an admin tool
	req.Attribute("unicodePwd", []string{encodePassword(pw)})
	req.Attribute("userAccountControl", []string{strconv.Itoa(uac)})
	c := dc.admin(t)
	if err := c.Add(req); err != nil {
		t.Fatalf("adtest: creating user %s: %v", u.DN, err)
	}
	if o.MustChange {
		dc.ForceChange(t, u.DN)
	}
	guid, id, err := readGUID(c, u.DN)
	if err != nil {
		t.Fatalf("adtest: %v", err)
	}
	u.GUID, u.ImmutableID = guid, id
	return u
}

// CreateUsers creates n users in ouDN as fast as the DC allows, for load
// tests: disabled (userAccountControl 514) and without a password, which
// leaves pwdLastSet=0. Their names are prefix, 4 random hex digits and a
// zero-padded index (prefix3fa90000, ...), unique in the domain.
//
// Samba creates ~60-170 users/s. Every user deleted afterwards stays as a
// tombstone, and on Samba each one adds some microseconds to every change
// notification of the shared DC: keep n to what the test needs.
func (dc *DC) CreateUsers(t testing.TB, ouDN, prefix string, n int) []User {
	t.Helper()
	width := max(len(strconv.Itoa(n-1)), 4)
	tag := suffix()[1:]
	users := make([]User, n)
	for i := range users {
		sam := fmt.Sprintf("%s%s%0*d", prefix, tag, width, i)
		if err := checkSAM(sam); err != nil {
			t.Fatalf("adtest: %v", err)
		}
		users[i] = User{DN: "CN=" + ldap.EscapeDN(sam) + "," + ouDN, SAM: sam, UPN: dc.upn(sam)}
	}
	// Samba handles LDAP in one worker: a second connection overlaps the
	// round trips and TLS work (~100/s -> ~170/s here); more do not help.
	const workers = 2
	conns := make([]*ldap.Conn, workers)
	for i := range conns {
		conns[i] = dc.Conn(t)
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				u := users[i]
				req := ldap.NewAddRequest(u.DN, nil)
				req.Attribute("objectClass", []string{"user"})
				req.Attribute("sAMAccountName", []string{u.SAM})
				req.Attribute("userPrincipalName", []string{u.UPN})
				req.Attribute("userAccountControl", []string{"514"})
				if err := conns[w].Add(req); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("creating user %s: %w", u.DN, err)
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("adtest: %v", firstErr)
	}
	if err := fillGUIDs(conns[0], ouDN, users); err != nil {
		t.Fatalf("adtest: %v", err)
	}
	return users
}

// fillGUIDs reads the objectGUIDs of users (all below ouDN) in one paged search.
func fillGUIDs(c *ldap.Conn, ouDN string, users []User) error {
	res, err := c.SearchWithPaging(ldap.NewSearchRequest(ouDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=user)", []string{"objectGUID"}, nil), 1000)
	if err != nil {
		return fmt.Errorf("reading the GUIDs of the users in %s: %w", ouDN, err)
	}
	byDN := make(map[string][]byte, len(res.Entries))
	for _, e := range res.Entries {
		byDN[strings.ToLower(e.DN)] = e.GetRawAttributeValue("objectGUID")
	}
	for i := range users {
		raw, ok := byDN[strings.ToLower(users[i].DN)]
		if !ok {
			return fmt.Errorf("user %s not found after creating it", users[i].DN)
		}
		guid, err := events.GUIDString(raw)
		if err != nil {
			return fmt.Errorf("user %s: %w", users[i].DN, err)
		}
		users[i].GUID, users[i].ImmutableID = guid, events.ImmutableID(raw)
	}
	return nil
}

func readGUID(c *ldap.Conn, dn string) (guid, immutableID string, err error) {
	e, err := readEntry(c, dn, []string{"objectGUID"})
	if err != nil {
		return "", "", err
	}
	raw := e.GetRawAttributeValue("objectGUID")
	guid, err = events.GUIDString(raw)
	if err != nil {
		return "", "", fmt.Errorf("reading %s: %w", dn, err)
	}
	return guid, events.ImmutableID(raw), nil
}

// ForceChange is the helpdesk's "User must change password at next logon":
// pwdLastSet=0.
func (dc *DC) ForceChange(t testing.TB, dn string) {
	t.Helper()
	dc.modify(t, dn, func(m *ldap.ModifyRequest) { m.Replace("pwdLastSet", []string{"0"}) })
}

// ResetPassword sets a new password as a helpdesk reset does; with mustChange
// it then sets pwdLastSet=0 in a second modify, as admin tools do (so a watcher
// may see pwdLastSet=<now> first, then 0).
func (dc *DC) ResetPassword(t testing.TB, dn, pw string, mustChange bool) {
	t.Helper()
	dc.modify(t, dn, func(m *ldap.ModifyRequest) { m.Replace("unicodePwd", []string{encodePassword(pw)}) })
	if mustChange {
		dc.ForceChange(t, dn)
	}
}

// SetNeverExpires sets or clears "password never expires" (userAccountControl 0x10000).
func (dc *DC) SetNeverExpires(t testing.TB, dn string, on bool) {
	t.Helper()
	e := dc.Read(t, dn, "userAccountControl")
	uac, err := strconv.ParseInt(e.GetAttributeValue("userAccountControl"), 10, 64)
	if err != nil {
		t.Fatalf("adtest: %s has userAccountControl %q: %v", dn, e.GetAttributeValue("userAccountControl"), err)
	}
	if on {
		uac |= events.UACDontExpirePassword
	} else {
		uac &^= events.UACDontExpirePassword
	}
	dc.modify(t, dn, func(m *ldap.ModifyRequest) { m.Replace("userAccountControl", []string{strconv.FormatInt(uac, 10)}) })
}

func (dc *DC) modify(t testing.TB, dn string, build func(*ldap.ModifyRequest)) {
	t.Helper()
	m := ldap.NewModifyRequest(dn, nil)
	build(m)
	if err := dc.admin(t).Modify(m); err != nil {
		t.Fatalf("adtest: modifying %s: %v", dn, err)
	}
}

func (dc *DC) upn(sam string) string { return sam + "@" + strings.ToLower(dc.Realm) }

// suffix makes a name unique in the domain: "-" and 4 random hex digits.
func suffix() string { return fmt.Sprintf("-%04x", rand.IntN(0x10000)) }

func checkSAM(sam string) error {
	if sam == "" || len(sam) > maxSAMLength {
		return fmt.Errorf("sAMAccountName %q: want 1 to %d characters", sam, maxSAMLength)
	}
	if strings.ContainsAny(sam, `"/\[]:;|=,+*?<>@`) {
		return fmt.Errorf("sAMAccountName %q has a character AD does not allow", sam)
	}
	return nil
}

// encodePassword is unicodePwd's format: the password in double quotes, UTF-16LE.
func encodePassword(pw string) string {
	u := utf16.Encode([]rune(`"` + pw + `"`))
	b := make([]byte, 2*len(u))
	for i, r := range u {
		binary.LittleEndian.PutUint16(b[2*i:], r)
	}
	return string(b)
}
