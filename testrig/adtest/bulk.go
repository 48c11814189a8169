package adtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// BulkOU is the parent of the persistent OUs of BulkUsers, beside TestsOU
// (which only holds per-test OUs, removed with their tests).
const BulkOU = "pwsync-bulk"

// BulkWorkers is how many LDAP connections BulkUsers and StampPwdLastSet use.
// Samba runs LDAP in one worker process: more connections overlap the round
// trips and TLS work, up to the point where that worker is busy (measured in
// bulk_test.go).
var BulkWorkers = 2

// bulkLockStale is when a lock left by a killed test is taken over.
const bulkLockStale = 15 * time.Minute

var bulkName = regexp.MustCompile(`^[a-z][a-z0-9]{0,9}$`)

// BulkUsers returns n enabled users in OU=<name>,OU=pwsync-bulk,<base>, an
// OU that outlives the test: the users a previous run left there are reused
// and only the missing ones are created, so a load test pays the creation
// once per DC (and leaves no tombstones behind, which on Samba slow every
// change notification of the shared DC). Users beyond n (a run with a larger
// n) are deleted.
//
// The users are created the fast way: no password, userAccountControl 544
// (NORMAL_ACCOUNT | PASSWD_NOTREQD: enabled) and pwdLastSet=-1 in the same
// add, so that pwdLastSet holds the creation time rather than 0. Their state
// afterwards is whatever the tests did to them: a test that needs a known
// pwdLastSet stamps it (StampPwdLastSet).
//
// The OU is the caller's until the test ends: a lock object
// (CN=lock-<name>,OU=pwsync-bulk) keeps another process from using the same
// users at the same time; it waits for the lock up to wait, and takes over a
// lock older than 15 minutes (a killed test). Names: sAMAccountName and
// CN are name + "-" + a zero-padded index; name is 1-10 characters [a-z0-9].
func (dc *DC) BulkUsers(t testing.TB, name string, n int, wait time.Duration) (string, []User) {
	t.Helper()
	if !bulkName.MatchString(name) {
		t.Fatalf("adtest: bulk OU name %q: 1-10 characters, a-z then a-z0-9", name)
	}
	c := dc.admin(t)
	parent := "OU=" + BulkOU + "," + dc.BaseDN
	if err := addOU(c, parent); err != nil && !isCode(err, ldap.LDAPResultEntryAlreadyExists) {
		t.Fatalf("adtest: %v", err)
	}
	dc.lockBulk(t, c, "CN=lock-"+name+","+parent, wait)
	ou := "OU=" + name + "," + parent
	if err := addOU(c, ou); err != nil && !isCode(err, ldap.LDAPResultEntryAlreadyExists) {
		t.Fatalf("adtest: %v", err)
	}

	width := max(len(strconv.Itoa(n-1)), 5)
	users := make([]User, n)
	for i := range users {
		sam := fmt.Sprintf("%s-%0*d", name, width, i)
		if err := checkSAM(sam); err != nil {
			t.Fatalf("adtest: %v", err)
		}
		users[i] = User{DN: "CN=" + ldap.EscapeDN(sam) + "," + ou, SAM: sam, UPN: dc.upn(sam)}
	}
	existing, err := listBulk(c, ou)
	if err != nil {
		t.Fatalf("adtest: %v", err)
	}
	want := make(map[string]int, n)
	for i, u := range users {
		want[strings.ToLower(u.DN)] = i
	}
	var missing []int
	for i, u := range users {
		if _, ok := existing[strings.ToLower(u.DN)]; !ok {
			missing = append(missing, i)
		}
	}
	var extra []string
	for dn := range existing {
		if _, ok := want[dn]; !ok {
			extra = append(extra, dn)
		}
	}
	conns := make([]*ldap.Conn, BulkWorkers)
	for i := range conns {
		conns[i] = dc.Conn(t)
	}
	if len(extra) > 0 {
		if err := deleteAll(conns, extra); err != nil {
			t.Fatalf("adtest: %v", err)
		}
	}
	start := time.Now()
	err = parallel(conns, len(missing), func(c *ldap.Conn, k int) error {
		u := users[missing[k]]
		req := ldap.NewAddRequest(u.DN, nil)
		req.Attribute("objectClass", []string{"user"})
		req.Attribute("sAMAccountName", []string{u.SAM})
		req.Attribute("userPrincipalName", []string{u.UPN})
		req.Attribute("displayName", []string{u.SAM})
		req.Attribute("userAccountControl", []string{"544"})
		req.Attribute("pwdLastSet", []string{"-1"})
		if err := c.Add(req); err != nil && !isCode(err, ldap.LDAPResultEntryAlreadyExists) {
			return fmt.Errorf("creating user %s: %w", u.DN, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("adtest: %v", err)
	}
	if len(missing) > 0 {
		t.Logf("adtest: created %d bulk users in %s in %s (%d connections)", len(missing), ou,
			time.Since(start).Round(time.Millisecond), len(conns))
	}
	if err := fillGUIDs(c, ou, users); err != nil {
		t.Fatalf("adtest: %v", err)
	}
	return ou, users
}

// lockBulk takes the bulk OU's lock for the test, or fails it after wait.
func (dc *DC) lockBulk(t testing.TB, c *ldap.Conn, dn string, wait time.Duration) {
	t.Helper()
	host, _ := os.Hostname()
	holder := fmt.Sprintf("%s pid %d test %s", host, os.Getpid(), t.Name())
	deadline := time.Now().Add(wait)
	for {
		req := ldap.NewAddRequest(dn, nil)
		req.Attribute("objectClass", []string{"container"})
		req.Attribute("description", []string{holder})
		err := c.Add(req)
		if err == nil {
			break
		}
		if !isCode(err, ldap.LDAPResultEntryAlreadyExists) {
			t.Fatalf("adtest: taking %s: %v", dn, err)
		}
		by := "?"
		if e, rerr := readEntry(c, dn, []string{"whenCreated", "description"}); rerr == nil {
			by = e.GetAttributeValue("description")
			created, perr := time.Parse("20060102150405.0Z", e.GetAttributeValue("whenCreated"))
			if perr == nil && time.Since(created) > bulkLockStale {
				t.Logf("adtest: taking over %s, held since %s by %s", dn, created, by)
				if err := c.Del(ldap.NewDelRequest(dn, nil)); err != nil && !isCode(err, ldap.LDAPResultNoSuchObject) {
					t.Fatalf("adtest: removing the stale %s: %v", dn, err)
				}
				continue
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("adtest: %s is held by %s after waiting %s", dn, by, wait)
		}
		time.Sleep(time.Second)
	}
	t.Cleanup(func() {
		rc, err := dc.dial()
		if err != nil {
			t.Errorf("adtest: releasing %s: %v", dn, err)
			return
		}
		defer rc.Close()
		if err := rc.Del(ldap.NewDelRequest(dn, nil)); err != nil && !isCode(err, ldap.LDAPResultNoSuchObject) {
			t.Errorf("adtest: releasing %s: %v", dn, err)
		}
	})
}

// listBulk returns the users below ou by lower-cased DN.
func listBulk(c *ldap.Conn, ou string) (map[string]bool, error) {
	res, err := c.SearchWithPaging(ldap.NewSearchRequest(ou, ldap.ScopeSingleLevel, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=user)", []string{"1.1"}, nil), 1000)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", ou, err)
	}
	out := make(map[string]bool, len(res.Entries))
	for _, e := range res.Entries {
		out[strings.ToLower(e.DN)] = true
	}
	return out, nil
}

// parallel runs fn for 0..n-1 spread over the connections; the first error
// stops each worker.
func parallel(conns []*ldap.Conn, n int, fn func(c *ldap.Conn, i int) error) error {
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for w, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += len(conns) {
				if err := fn(c, i); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// StampPwdLastSet sets pwdLastSet=-1 (the current time) on every user, over
// BulkWorkers connections: a later pwdLastSet=0 is then a change the DC
// records (Samba records nothing for a write of the value already there).
func (dc *DC) StampPwdLastSet(t testing.TB, users []User) {
	t.Helper()
	conns := make([]*ldap.Conn, BulkWorkers)
	for i := range conns {
		conns[i] = dc.Conn(t)
	}
	err := parallel(conns, len(users), func(c *ldap.Conn, i int) error {
		req := ldap.NewModifyRequest(users[i].DN, nil)
		req.Replace("pwdLastSet", []string{"-1"})
		if err := c.Modify(req); err != nil {
			return fmt.Errorf("stamping pwdLastSet of %s: %w", users[i].DN, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("adtest: %v", err)
	}
}

// AttidPwdLastSet is pwdLastSet's attribute ID in replPropertyMetaData
// (OID 1.2.840.113556.1.4.96: prefix index 9, 0x60), as Samba serves it.
const AttidPwdLastSet = 0x00090060

// AttrVersions reads, for every user below base (whole subtree), the
// replication version of the attribute attid: the count of originating
// writes that changed it on this DC. It is the DC's own record of how
// often the attribute was written. Samba does not count a write of the
// value the attribute already holds (nor does it move uSNChanged), so a
// repeated identical write is invisible here. Keys are lower-cased DNs.
func (dc *DC) AttrVersions(t testing.TB, base string, attid uint32) map[string]uint32 {
	t.Helper()
	res, err := dc.admin(t).SearchWithPaging(ldap.NewSearchRequest(base, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=user)", []string{"replPropertyMetaData"}, nil), 1000)
	if err != nil {
		t.Fatalf("adtest: reading replPropertyMetaData below %s: %v", base, err)
	}
	out := make(map[string]uint32, len(res.Entries))
	for _, e := range res.Entries {
		md, err := DecodeReplMetaData(e.GetRawAttributeValue("replPropertyMetaData"))
		if err != nil {
			t.Fatalf("adtest: %s: %v", e.DN, err)
		}
		out[strings.ToLower(e.DN)] = md[attid].Version
	}
	return out
}

// ReplMeta is one attribute's entry of replPropertyMetaData.
type ReplMeta struct {
	Version      uint32
	Changed      time.Time // originating change time (whole seconds)
	OriginUSN    int64
	LocalUSN     int64
	InvocationID [16]byte
}

// DecodeReplMetaData decodes replPropertyMetaData, a
// PROPERTY_META_DATA_EXT_VECTOR in NDR: version (1), reserved, count, then
// (on Samba, measured) 4 bytes of padding that align the 8-byte members,
// then count entries of attrtyp(4) version(4) originating_change_time(8,
// seconds since 1601) originating_invocation_id(16) originating_usn(8)
// local_usn(8).
func DecodeReplMetaData(b []byte) (map[uint32]ReplMeta, error) {
	const head, entry = 16, 48
	if len(b) < head {
		return nil, fmt.Errorf("replPropertyMetaData: %d bytes", len(b))
	}
	if v := binary.LittleEndian.Uint32(b); v != 1 {
		return nil, fmt.Errorf("replPropertyMetaData: version %d, want 1", v)
	}
	n := int(binary.LittleEndian.Uint32(b[8:]))
	if len(b) != head+n*entry {
		return nil, fmt.Errorf("replPropertyMetaData: %d bytes for %d entries", len(b), n)
	}
	out := make(map[uint32]ReplMeta, n)
	const unixFrom1601 = 11644473600 // seconds from 1601-01-01 to 1970-01-01
	for i := range n {
		e := b[head+i*entry:]
		m := ReplMeta{
			Version:   binary.LittleEndian.Uint32(e[4:]),
			Changed:   time.Unix(int64(binary.LittleEndian.Uint64(e[8:]))-unixFrom1601, 0).UTC(),
			OriginUSN: int64(binary.LittleEndian.Uint64(e[32:])),
			LocalUSN:  int64(binary.LittleEndian.Uint64(e[40:])),
		}
		copy(m.InvocationID[:], e[16:32])
		out[binary.LittleEndian.Uint32(e)] = m
	}
	return out, nil
}
