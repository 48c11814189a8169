package adtest

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// TestBulkUsers: created enabled with a non-zero pwdLastSet; reused by a
// second call (nothing created); extras beyond n deleted; the lock keeps a
// second holder out while the first holds it; pwdLastSet's version in
// replPropertyMetaData counts the writes that changed it, not a repeat.
func TestBulkUsers(t *testing.T) {
	dc := Require(t)
	name := fmt.Sprintf("bt%04x", os.Getpid()&0xffff)
	t.Cleanup(func() {
		if err := dc.removeTree("OU=" + name + ",OU=" + BulkOU + "," + dc.BaseDN); err != nil {
			t.Error(err)
		}
	})
	var ou string
	var users []User
	t.Run("create", func(t *testing.T) {
		ou, users = dc.BulkUsers(t, name, 6, time.Second)
	})
	if len(users) != 6 || users[5].SAM != name+"-00005" || users[5].GUID == "" || users[5].ImmutableID == "" {
		t.Fatalf("users: %+v", users)
	}
	e := dc.Read(t, users[3].DN, "userAccountControl", "pwdLastSet", "msDS-User-Account-Control-Computed")
	if uac := e.GetAttributeValue("userAccountControl"); uac != "544" {
		t.Fatalf("userAccountControl %s, want 544 (enabled, no password required)", uac)
	}
	if v := attrInt(t, e, "pwdLastSet"); v == 0 {
		t.Fatal("pwdLastSet is 0: the user would be 'must change' from the start")
	}
	t.Run("reuse and shrink", func(t *testing.T) {
		before := dc.Read(t, users[0].DN, "objectGUID").GetRawAttributeValue("objectGUID")
		_, again := dc.BulkUsers(t, name, 4, time.Second)
		if len(again) != 4 || again[0].GUID != users[0].GUID {
			t.Fatalf("reuse: %+v (first GUID was %x)", again, before)
		}
		if n := countUsers(t, dc, ou); n != 4 {
			t.Fatalf("%d users in the OU, want 4", n)
		}
		// The lock is held by this subtest: another holder waits, then fails.
		other := &fakeTB{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer func() { _ = recover() }()
			dc.lockBulk(other, dc.Conn(t), "CN=lock-"+name+",OU="+BulkOU+","+dc.BaseDN, 1500*time.Millisecond)
		}()
		<-done
		if !other.failed || !strings.Contains(other.msg, "is held by") {
			t.Fatalf("a second holder got the lock: failed=%v %q", other.failed, other.msg)
		}
	})

	v0 := dc.AttrVersions(t, ou, AttidPwdLastSet)[strings.ToLower(users[0].DN)]
	dc.ForceChange(t, users[0].DN)
	dc.ForceChange(t, users[0].DN) // the same value again: not counted
	v1 := dc.AttrVersions(t, ou, AttidPwdLastSet)[strings.ToLower(users[0].DN)]
	dc.StampPwdLastSet(t, users[:1])
	v2 := dc.AttrVersions(t, ou, AttidPwdLastSet)[strings.ToLower(users[0].DN)]
	if v0 == 0 || v1 != v0+1 || v2 != v1+1 {
		t.Fatalf("pwdLastSet versions %d, %d, %d: want n, n+1, n+2", v0, v1, v2)
	}
}

// fakeTB catches the Fatalf of a helper run for a second holder.
type fakeTB struct {
	testing.TB
	failed bool
	msg    string
}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
	panic("fatal")
}
func (f *fakeTB) Cleanup(func()) {}
func (f *fakeTB) Helper()        {}

func countUsers(t *testing.T, dc *DC, ou string) int {
	t.Helper()
	m, err := listBulk(dc.admin(t), ou)
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

func TestDecodeReplMetaData(t *testing.T) {
	b := make([]byte, 16+2*48)
	b[0], b[8] = 1, 2
	put := func(off int, attid, version uint32, secs uint64) {
		for i := range 4 {
			b[off+i] = byte(attid >> (8 * i))
			b[off+4+i] = byte(version >> (8 * i))
		}
		for i := range 8 {
			b[off+8+i] = byte(secs >> (8 * i))
		}
	}
	put(16, 0x00090008, 1, 0)
	put(64, AttidPwdLastSet, 7, 11644473600+1764700000)
	md, err := DecodeReplMetaData(b)
	if err != nil {
		t.Fatal(err)
	}
	if md[AttidPwdLastSet].Version != 7 || md[AttidPwdLastSet].Changed.Unix() != 1764700000 || md[0x00090008].Version != 1 {
		t.Fatalf("%+v", md)
	}
	if _, err := DecodeReplMetaData(b[:100]); err == nil {
		t.Fatal("a short blob decoded")
	}
}

// TestBulkCreateRate measures ways to create users fast on this DC (each
// in its own OU, removed afterwards): PWSYNC_BENCH_REPORT=1.
func TestBulkCreateRate(t *testing.T) {
	if os.Getenv("PWSYNC_BENCH_REPORT") != "1" {
		t.Skip("measurement: set PWSYNC_BENCH_REPORT=1")
	}
	dc := Require(t)
	n := 300
	if v, err := strconv.Atoi(os.Getenv("PWSYNC_BULK_N")); err == nil {
		n = v
	}
	type way struct {
		name    string
		workers int
		attrs   func(r *ldap.AddRequest)
		after   func(c *ldap.Conn, dn string) error
	}
	uac := func(v string) func(r *ldap.AddRequest) {
		return func(r *ldap.AddRequest) { r.Attribute("userAccountControl", []string{v}) }
	}
	stamp := func(r *ldap.AddRequest) { uac("544")(r); r.Attribute("pwdLastSet", []string{"-1"}) }
	stampAfter := func(c *ldap.Conn, dn string) error {
		m := ldap.NewModifyRequest(dn, nil)
		m.Replace("pwdLastSet", []string{"-1"})
		return c.Modify(m)
	}
	ways := []way{
		{"514 disabled (CreateUsers)", 2, uac("514"), nil},
		{"544 + pwdLastSet -1 in a second modify", 2, uac("544"), stampAfter},
		{"544 + pwdLastSet -1 in the add", 1, stamp, nil},
		{"544 + pwdLastSet -1 in the add", 2, stamp, nil},
		{"544 + pwdLastSet -1 in the add", 4, stamp, nil},
		{"544 + pwdLastSet -1 in the add", 8, stamp, nil},
	}
	for k, w := range ways {
		ou := dc.NewOU(t)
		conns := make([]*ldap.Conn, w.workers)
		for i := range conns {
			conns[i] = dc.Conn(t)
		}
		start := time.Now()
		err := parallel(conns, n, func(c *ldap.Conn, i int) error {
			sam := fmt.Sprintf("br%d%04x%04d", k, os.Getpid()&0xffff, i)
			dn := "CN=" + sam + "," + ou
			r := ldap.NewAddRequest(dn, nil)
			r.Attribute("objectClass", []string{"user"})
			r.Attribute("sAMAccountName", []string{sam})
			r.Attribute("userPrincipalName", []string{dc.upn(sam)})
			w.attrs(r)
			if err := c.Add(r); err != nil {
				return err
			}
			if w.after != nil {
				return w.after(c, dn)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		el := time.Since(start)
		t.Logf("%-42s %d conns: %d users in %s = %.0f/s", w.name, w.workers, n, el.Round(time.Millisecond), float64(n)/el.Seconds())
	}
}
