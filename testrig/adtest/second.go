package adtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The second DC: scripts/samba-ad/join.sh joins a second Samba DC to the test
// domain on its own address (127.0.0.2), replicating with the first both ways,
// and writes its settings to $SAMBA_AD2_DIR/env (default: $SAMBA_AD_DIR
// with "2" appended) in start.sh's format. Its LDAPS certificate is issued by
// the first DC's test CA, so CAFile verifies both; the administrator's
// credentials are the domain's, the same on both.

// RequireSecondEnv set to 1 turns "no second DC" from a skip into a failure.
// With PWSYNC_REQUIRE_AD=1 alone, a second DC whose env file exists (join.sh
// ran) must be usable too.
const RequireSecondEnv = "PWSYNC_REQUIRE_AD2"

// ReplicationTimeout bounds WaitReplicated. Measured on 2 cores: a change is
// on the other DC 2-3 s after it was made (Samba announces changes every 2 s,
// see start.sh's dreplsrv:notify_interval).
var ReplicationTimeout = 30 * time.Second

var probe2 struct {
	once sync.Once
	dc   *DC
	err  error
}

// envFile2 is where join.sh (through start.sh) leaves the second DC's settings.
func envFile2() string {
	if dir := os.Getenv("SAMBA_AD2_DIR"); dir != "" {
		return filepath.Join(dir, "env")
	}
	return strings.TrimSuffix(filepath.Dir(envFile()), "/") + "2/env"
}

// RequireSecond returns the second DC of the domain (join.sh) after checking
// that an LDAPS bind works, as Require does for the first. Without one the test
// is skipped, unless PWSYNC_REQUIRE_AD2=1, or PWSYNC_REQUIRE_AD=1 and join.sh
// has written its env file: then it fails.
func RequireSecond(t testing.TB) *DC {
	t.Helper()
	probe2.once.Do(func() { probe2.dc, probe2.err = probeDCAt(envFile2()) })
	if err := probe2.err; err != nil {
		_, statErr := os.Stat(envFile2())
		switch {
		case os.Getenv(RequireSecondEnv) == "1":
			t.Fatalf("second Samba AD DC required (%s=1) but not usable: %v", RequireSecondEnv, err)
		case os.Getenv(RequireEnv) == "1" && statErr == nil:
			t.Fatalf("second Samba AD DC joined (%s exists, %s=1) but not usable: %v", envFile2(), RequireEnv, err)
		}
		t.Skipf("second Samba AD DC not usable, skipping (run scripts/samba-ad/join.sh; %s=1 makes this a failure): %v", RequireSecondEnv, err)
	}
	return probe2.dc.fresh()
}

// WaitReplicated waits until this DC holds dn with value among attr's values
// (attr "": until dn exists), polling every 100 ms, and returns how long that
// took. It fails the test after ReplicationTimeout. Make the change on one
// DC, wait on the other: second.WaitReplicated(t, u.DN, "pwdLastSet", v).
func (dc *DC) WaitReplicated(t testing.TB, dn, attr, value string) time.Duration {
	t.Helper()
	start := time.Now()
	attrs := []string{"objectGUID"}
	if attr != "" {
		attrs = []string{attr}
	}
	for {
		e, err := readEntry(dc.admin(t), dn, attrs)
		if err == nil && (attr == "" || slices.Contains(e.GetAttributeValues(attr), value)) {
			return time.Since(start)
		}
		if time.Since(start) > ReplicationTimeout {
			got := fmt.Sprint(err)
			if err == nil {
				got = fmt.Sprintf("%s=%q", attr, e.GetAttributeValues(attr))
			}
			t.Fatalf("adtest: %s %s=%q not on %s within %v (last read: %s)", dn, attr, value, dc.LDAPSURL, ReplicationTimeout, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Kill ends the DC's samba at once, as a crash would: SIGKILL to the process
// group of the pid in $Dir/run/samba.pid (`samba -D` leads its own group: the
// root process and every worker), then waits until none is left and LDAPS
// refuses connections. Stop does the same gracefully (stop.sh, SIGTERM).
//
// Both hold the DC for the test (Hold) and, when the test ends, Start the DC
// again if it is still down. Every test package shares the first DC (127.0.0.1):
// killing it fails whatever other packages run at the time; a failover test
// lists the second DC first and kills that one, the first taking over.
func (dc *DC) Kill(t testing.TB) {
	t.Helper()
	dc.Hold(t)
	dc.restartAtEnd(t)
	pid, err := dc.pid()
	if err != nil {
		t.Fatalf("adtest: %v", err)
	}
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("adtest: killing samba's process group %d: %v", pid, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for groupAlive(pid) || dc.listening() {
		if time.Now().After(deadline) {
			t.Fatalf("adtest: samba (%s, process group %d) still there 15 s after SIGKILL", dc.Dir, pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Freeze stops the DC's samba without ending it (SIGSTOP to its process
// group), as a hung DC or a frozen VM: its connections stay open and the
// kernel still acknowledges TCP, but nothing answers. It holds the DC
// (Hold); the test's end thaws it if Thaw did not.
func (dc *DC) Freeze(t testing.TB) {
	t.Helper()
	dc.Hold(t)
	pid, err := dc.pid()
	if err != nil {
		t.Fatalf("adtest: %v", err)
	}
	if err := syscall.Kill(-pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("adtest: stopping samba's process group %d: %v", pid, err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-pid, syscall.SIGCONT) })
}

// Thaw resumes a DC that Freeze stopped.
func (dc *DC) Thaw(t testing.TB) {
	t.Helper()
	pid, err := dc.pid()
	if err != nil {
		t.Fatalf("adtest: %v", err)
	}
	if err := syscall.Kill(-pid, syscall.SIGCONT); err != nil {
		t.Fatalf("adtest: resuming samba's process group %d: %v", pid, err)
	}
}

// Stop stops the DC with scripts/samba-ad/stop.sh (SIGTERM, waiting for its
// workers); see Kill.
func (dc *DC) Stop(t testing.TB) {
	t.Helper()
	dc.Hold(t)
	dc.restartAtEnd(t)
	if out, err := dc.script("stop.sh"); err != nil {
		t.Fatalf("adtest: stop.sh for %s: %v\n%s", dc.Dir, err, out)
	}
}

// Start starts the DC again after Kill or Stop (scripts/samba-ad/start.sh with
// its dir: the same smb.conf, ~1-2 s until LDAP answers). A DC that was down
// pulls what it missed from the other DC 5 s after it starts.
func (dc *DC) Start(t testing.TB) {
	t.Helper()
	if out, err := dc.script("start.sh"); err != nil {
		t.Fatalf("adtest: start.sh for %s: %v\n%s", dc.Dir, err, out)
	}
}

// Hold keeps other tests' Kill, Stop and Hold of this DC, in any package,
// waiting until this test ends (an exclusive lock on $Dir.adtest.lock). Kill
// and Stop take it themselves; a test that needs the second DC up throughout
// takes it too. Tests that do not take it are not protected.
func (dc *DC) Hold(t testing.TB) {
	t.Helper()
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if dc.held == nil {
		dc.held = map[testing.TB]bool{}
	}
	if dc.held[t] {
		return
	}
	f, err := os.OpenFile(strings.TrimSuffix(dc.Dir, "/")+".adtest.lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatalf("adtest: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("adtest: locking %s: %v", f.Name(), err)
	}
	dc.held[t] = true
	t.Cleanup(func() {
		f.Close() // releases the lock, after the restart cleanups (they run first)
		dc.mu.Lock()
		delete(dc.held, t)
		dc.mu.Unlock()
	})
}

// restartAtEnd starts the DC when the test ends with it down.
func (dc *DC) restartAtEnd(t testing.TB) {
	t.Cleanup(func() {
		if dc.listening() {
			return
		}
		if out, err := dc.script("start.sh"); err != nil {
			t.Errorf("adtest: starting %s again after the test: %v\n%s", dc.Dir, err, out)
		}
	})
}

// listening reports whether the DC accepts LDAPS connections.
func (dc *DC) listening() bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(dc.IP, "636"), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func (dc *DC) pid() (int, error) {
	path := filepath.Join(dc.Dir, "run", "samba.pid")
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("the DC's pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("%s: no pid in %q", path, b)
	}
	return pid, nil
}

// groupAlive reports whether a process of process group pgid is left that is
// not a zombie (a zombie holds no socket and its parent may never reap it).
func groupAlive(pgid int) bool {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(b[i+1:]))
		if len(fields) > 2 && fields[0] != "Z" && fields[2] == strconv.Itoa(pgid) {
			return true
		}
	}
	return false
}

// script runs scripts/samba-ad/<name> for this DC (SAMBA_AD_DIR=Dir,
// SAMBA_AD_IP=IP) and returns its output. The output goes through a file: a
// pipe would stay open as long as the samba daemon that start.sh launches.
func (dc *DC) script(name string) ([]byte, error) {
	path, err := scriptPath(name)
	if err != nil {
		return nil, err
	}
	out, err := os.CreateTemp("", "adtest-"+name+"-*.log")
	if err != nil {
		return nil, err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd := exec.Command(path)
	cmd.Env = append(os.Environ(), "SAMBA_AD_DIR="+dc.Dir, "SAMBA_AD_IP="+dc.IP)
	cmd.Stdout, cmd.Stderr = out, out
	runErr := cmd.Run()
	b, _ := os.ReadFile(out.Name())
	return b, runErr
}

// scriptPath finds scripts/samba-ad/<name>: above the working directory (go
// test runs in the package's directory), else next to this source file.
func scriptPath(name string) (string, error) {
	rel := filepath.Join("scripts", "samba-ad", name)
	if dir, err := os.Getwd(); err == nil {
		for {
			if p := filepath.Join(dir, rel); fileExists(p) {
				return p, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		if p := filepath.Join(filepath.Dir(file), "..", "..", rel); fileExists(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found above the working directory", rel)
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// Kerberos is the Kerberos material scripts/samba-ad/kerberos.sh exports for
// the domain's service account.
type Kerberos struct {
	Realm     string   // EXAMPLE.TEST
	Principal string   // svc-pwsync@EXAMPLE.TEST
	UserDN    string   // CN=svc-pwsync,CN=Users,<base>
	Keytab    string   // its keys (samba-tool domain exportkeytab)
	KRB5Conf  string   // a krb5.conf naming both DCs' KDCs, without DNS
	KDCs      []string // the KDCs' addresses (port 88): the first DC's, then the second's
	LDAPSPN   string   // the first DC's LDAP service principal, ldap/<its dnsHostName>
	LDAPSPN2  string   // the second DC's ("" without one)
}

// RequireKerberos returns the material kerberos.sh wrote to
// $SAMBA_AD_DIR/kerberos/env; without it the test is skipped, or fails under
// PWSYNC_REQUIRE_AD=1.
func RequireKerberos(t testing.TB) *Kerberos {
	t.Helper()
	path := filepath.Join(filepath.Dir(envFile()), "kerberos", "env")
	k, err := kerberosFromEnv(path)
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("Kerberos material required (%s=1) but not usable: %v", RequireEnv, err)
		}
		t.Skipf("Kerberos material not usable, skipping (run scripts/samba-ad/kerberos.sh): %v", err)
	}
	return k
}

func kerberosFromEnv(path string) (*Kerberos, error) {
	vars, err := parseEnv(path)
	if err != nil {
		return nil, err
	}
	k := &Kerberos{
		Realm: vars["SAMBA_AD_KRB5_REALM"], Principal: vars["SAMBA_AD_KRB5_PRINCIPAL"],
		UserDN: vars["SAMBA_AD_KRB5_USER_DN"], Keytab: vars["SAMBA_AD_KEYTAB"],
		KRB5Conf: vars["SAMBA_AD_KRB5_CONF"], KDCs: strings.Fields(vars["SAMBA_AD_KRB5_KDCS"]),
		LDAPSPN: vars["SAMBA_AD_LDAP_SPN"], LDAPSPN2: vars["SAMBA_AD2_LDAP_SPN"],
	}
	for name, v := range map[string]string{
		"SAMBA_AD_KRB5_REALM": k.Realm, "SAMBA_AD_KRB5_PRINCIPAL": k.Principal, "SAMBA_AD_KEYTAB": k.Keytab,
		"SAMBA_AD_KRB5_CONF": k.KRB5Conf, "SAMBA_AD_LDAP_SPN": k.LDAPSPN,
	} {
		if v == "" {
			return nil, fmt.Errorf("%s: %s is missing", path, name)
		}
	}
	if len(k.KDCs) == 0 {
		return nil, fmt.Errorf("%s: SAMBA_AD_KRB5_KDCS is missing", path)
	}
	for _, f := range []string{k.Keytab, k.KRB5Conf} {
		if !fileExists(f) {
			return nil, fmt.Errorf("%s: %s does not exist", path, f)
		}
	}
	return k, nil
}
