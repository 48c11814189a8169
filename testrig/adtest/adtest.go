// Package adtest connects tests to the real Samba AD domain controller that
// scripts/samba-ad/start.sh runs on loopback. Samba's ports are fixed, so one
// DC serves every test package of the machine: each test works in its own OU
// (NewOU) with its own users, and removes them when it ends. Import it from
// _test.go files only.
package adtest

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// DC is a running domain controller and how to reach it as its administrator.
type DC struct {
	LDAPURL      string // ldap://127.0.0.1:389
	LDAPSURL     string // ldaps://127.0.0.1:636
	BaseDN       string // DC=example,DC=test, the domain naming context
	BindDN       string // CN=Administrator,CN=Users,<BaseDN>
	BindUPN      string // Administrator@example.test
	BindPassword string
	CAFile       string // the CA that issued the DC's LDAPS certificate
	Realm        string // EXAMPLE.TEST
	Dir          string // $SAMBA_AD_DIR (the second DC's: $SAMBA_AD2_DIR)
	IP           string // 127.0.0.1 (the second DC: 127.0.0.2)
	Hostname     string // dc1.example.test, the DC's dnsHostName (its LDAP SPN: ldap/<Hostname>)

	tlsConfig *tls.Config
	mu        sync.Mutex
	conns     map[testing.TB]*ldap.Conn // one admin connection per test, see admin
	held      map[testing.TB]bool       // tests holding the DC, see Hold
}

// RequireEnv set to 1 turns "no DC here" from a skip into a failure (CI).
const RequireEnv = "PWSYNC_REQUIRE_AD"

const dialTimeout = 5 * time.Second

var probe struct {
	once sync.Once
	dc   *DC
	err  error
}

// Require returns the DC described by $SAMBA_AD_DIR/env (default
// /tmp/samba-ad/env) after checking that an LDAPS bind works. Without a DC the
// test is skipped, unless PWSYNC_REQUIRE_AD=1, then it fails. The check runs
// once per test binary.
func Require(t testing.TB) *DC {
	t.Helper()
	probe.once.Do(func() { probe.dc, probe.err = probeDC() })
	if probe.err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("Samba AD DC required (%s=1) but not usable: %v", RequireEnv, probe.err)
		}
		t.Skipf("Samba AD DC not usable, skipping (run scripts/samba-ad/start.sh; %s=1 makes this a failure): %v", RequireEnv, probe.err)
	}
	return probe.dc.fresh()
}

// fresh is a DC of its own per caller: the per-test connection cache is not shared.
func (dc *DC) fresh() *DC {
	return &DC{
		LDAPURL: dc.LDAPURL, LDAPSURL: dc.LDAPSURL, BaseDN: dc.BaseDN, BindDN: dc.BindDN,
		BindUPN: dc.BindUPN, BindPassword: dc.BindPassword, CAFile: dc.CAFile, Realm: dc.Realm, Dir: dc.Dir,
		IP: dc.IP, Hostname: dc.Hostname,
		tlsConfig: dc.tlsConfig, conns: map[testing.TB]*ldap.Conn{},
	}
}

func probeDC() (*DC, error) { return probeDCAt(envFile()) }

// probeDCAt reads a start.sh env file and checks that an LDAPS bind works.
func probeDCAt(path string) (*DC, error) {
	vars, err := parseEnv(path)
	if err != nil {
		return nil, err
	}
	dc, err := dcFromEnv(vars)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	pem, err := os.ReadFile(dc.CAFile)
	if err != nil {
		return nil, fmt.Errorf("reading the DC's CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", dc.CAFile)
	}
	dc.tlsConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	c, err := dc.dial()
	if err != nil {
		return nil, err
	}
	c.Close()
	return dc, nil
}

// dial opens an LDAPS connection that verifies the DC against its CA and binds
// as the administrator. One DC serves every helper's tests and Samba's single
// LDAP worker has a short accept backlog: a connection that times out is
// tried again a few times before the test is failed for it.
func (dc *DC) dial() (*ldap.Conn, error) {
	var err error
	for attempt, pause := 0, time.Second; attempt < 4; attempt, pause = attempt+1, pause*2 {
		var c *ldap.Conn
		if c, err = dc.dialOnce(); err == nil || !isNetworkError(err) {
			return c, err
		}
		time.Sleep(pause)
	}
	return nil, err
}

func isNetworkError(err error) bool {
	var le *ldap.Error
	return errors.As(err, &le) && le.ResultCode == ldap.ErrorNetwork
}

func (dc *DC) dialOnce() (*ldap.Conn, error) {
	c, err := ldap.DialURL(dc.LDAPSURL,
		ldap.DialWithDialer(&net.Dialer{Timeout: dialTimeout}),
		ldap.DialWithTLSConfig(dc.tlsConfig.Clone()))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", dc.LDAPSURL, err)
	}
	c.SetTimeout(2 * time.Minute)
	if err := c.Bind(dc.BindUPN, dc.BindPassword); err != nil {
		c.Close()
		return nil, fmt.Errorf("binding to %s as %s: %w", dc.LDAPSURL, dc.BindUPN, err)
	}
	return c, nil
}

// Conn returns a new LDAPS connection bound as the administrator, closed when
// the test ends. It is the test's own: use it for async searches or to time a
// single operation.
func (dc *DC) Conn(t testing.TB) *ldap.Conn {
	t.Helper()
	c, err := dc.dial()
	if err != nil {
		t.Fatalf("adtest: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// admin is the connection the helpers share within one test.
func (dc *DC) admin(t testing.TB) *ldap.Conn {
	t.Helper()
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if c, ok := dc.conns[t]; ok && !c.IsClosing() {
		return c
	}
	c, err := dc.dial()
	if err != nil {
		t.Fatalf("adtest: %v", err)
	}
	dc.conns[t] = c
	t.Cleanup(func() {
		dc.mu.Lock()
		delete(dc.conns, t)
		dc.mu.Unlock()
		c.Close()
	})
	return c
}

// Read returns the entry at dn with the given attributes (constructed ones
// included when named); it fails the test when dn does not exist.
func (dc *DC) Read(t testing.TB, dn string, attrs ...string) *ldap.Entry {
	t.Helper()
	e, err := readEntry(dc.admin(t), dn, attrs)
	if err != nil {
		t.Fatalf("adtest: %v", err)
	}
	return e
}

func readEntry(c *ldap.Conn, dn string, attrs []string) (*ldap.Entry, error) {
	if len(attrs) == 0 {
		attrs = []string{"*"}
	}
	res, err := c.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=*)", attrs, nil))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dn, err)
	}
	if len(res.Entries) != 1 {
		return nil, fmt.Errorf("reading %s: %d entries", dn, len(res.Entries))
	}
	return res.Entries[0], nil
}

// Delete removes one object (a user, typically) as a test step.
func (dc *DC) Delete(t testing.TB, dn string) {
	t.Helper()
	if err := dc.admin(t).Del(ldap.NewDelRequest(dn, nil)); err != nil {
		t.Fatalf("adtest: deleting %s: %v", dn, err)
	}
}

func isCode(err error, codes ...uint16) bool {
	var le *ldap.Error
	if !errors.As(err, &le) {
		return false
	}
	for _, c := range codes {
		if le.ResultCode == c {
			return true
		}
	}
	return false
}
