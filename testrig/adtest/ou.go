package adtest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/go-ldap/ldap/v3"
)

// TestsOU is the parent of every test's OU, directly under the domain head.
const TestsOU = "pwsync-tests"

// NewOU creates an OU of the test's own (OU=t-<name>-<random>,OU=pwsync-tests,<base>)
// and removes it, with everything created inside, when the test ends.
func (dc *DC) NewOU(t testing.TB) string {
	t.Helper()
	c := dc.admin(t)
	parent := "OU=" + TestsOU + "," + dc.BaseDN
	if err := addOU(c, parent); err != nil && !isCode(err, ldap.LDAPResultEntryAlreadyExists) {
		t.Fatalf("adtest: %v", err)
	}
	dn := fmt.Sprintf("OU=t-%s-%06x,%s", ouName(t.Name()), rand.Uint32()&0xffffff, parent)
	if err := addOU(c, dn); err != nil {
		t.Fatalf("adtest: %v", err)
	}
	t.Cleanup(func() {
		if err := dc.removeTree(dn); err != nil {
			t.Errorf("adtest: %v", err)
		}
	})
	return dn
}

func addOU(c *ldap.Conn, dn string) error {
	req := ldap.NewAddRequest(dn, nil)
	req.Attribute("objectClass", []string{"organizationalUnit"})
	if err := c.Add(req); err != nil {
		return fmt.Errorf("creating %s: %w", dn, err)
	}
	return nil
}

// ouName makes a test name usable in an OU name: short (OU names are at most
// 64 characters and DNs get long) and free of characters DNs must escape.
func ouName(test string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(test) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	s := strings.Trim(b.String(), "-")
	if len(s) > 40 {
		s = s[len(s)-40:]
	}
	return s
}

// treeDeleteMax is the largest subtree removed with one tree-delete request.
// Samba runs LDAP in one worker: 1,000 users take it ~2 s, 10,000 took it
// minutes during which every other client, other test packages included,
// waited. Bigger trees go entry by entry, which interleaves with them.
var treeDeleteMax = 1000 // a variable for the test of the other way

// removeTree removes dn and everything below it, on connections of its own
// (the test's may be gone or broken by the time cleanups run).
func (dc *DC) removeTree(dn string) error {
	c, err := dc.dial()
	if err != nil {
		return fmt.Errorf("removing %s: %w", dn, err)
	}
	defer c.Close()
	res, err := c.SearchWithPaging(ldap.NewSearchRequest(dn, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=*)", []string{"1.1"}, nil), 1000)
	if err != nil {
		if isCode(err, ldap.LDAPResultNoSuchObject) {
			return nil
		}
		return fmt.Errorf("listing %s for removal: %w", dn, err)
	}
	if len(res.Entries) <= treeDeleteMax {
		err := c.Del(ldap.NewDelRequest(dn, []ldap.Control{ldap.NewControlSubtreeDelete()}))
		if err == nil || isCode(err, ldap.LDAPResultNoSuchObject) {
			return nil
		}
		// not granted or not supported: entry by entry below
	}
	// children have more RDNs than their parents: delete level by level,
	// deepest first, each level over two connections
	byDepth := map[int][]string{}
	deepest := 0
	for _, e := range res.Entries {
		d := depth(e.DN)
		byDepth[d] = append(byDepth[d], e.DN)
		deepest = max(deepest, d)
	}
	c2, err := dc.dial()
	if err != nil {
		return fmt.Errorf("removing %s: %w", dn, err)
	}
	defer c2.Close()
	for d := deepest; d > 0; d-- {
		if err := deleteAll([]*ldap.Conn{c, c2}, byDepth[d]); err != nil {
			return err
		}
	}
	return nil
}

// deleteAll deletes the entries, spread over the connections.
func deleteAll(conns []*ldap.Conn, dns []string) error {
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for w, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(dns); i += len(conns) {
				err := c.Del(ldap.NewDelRequest(dns[i], nil))
				if err != nil && !isCode(err, ldap.LDAPResultNoSuchObject) {
					errs[w] = fmt.Errorf("removing %s: %w", dns[i], err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func depth(dn string) int {
	parsed, err := ldap.ParseDN(dn)
	if err != nil {
		return strings.Count(dn, ",") // good enough to order a tree we created
	}
	return len(parsed.RDNs)
}
