package adtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/events"
)

// AgePassword sets u's password (pw; empty: DefaultPassword) as though it had
// been set age ago, so that expiry is tested with the real clock: AD accepts
// only 0 and -1 for pwdLastSet over LDAP, so the password is written by a
// local samba-tool run under faketime, straight into the DC's sam.ldb (as
// scripts/samba-ad/seed.sh does for its aged users). Samba then computes
// msDS-UserPasswordExpiryTimeComputed from the aged pwdLastSet.
//
// The write is local, not over LDAP: DirSync and uSNChanged polls see it on
// the next poll, but LDAP change notifications only after Samba's ~5 s timer.
// It needs root (sam.ldb), faketime and samba-tool on this machine, which
// scripts/samba-ad/start.sh installs; without them the test is skipped, or
// failed under PWSYNC_REQUIRE_AD=1. It returns the pwdLastSet AD now holds.
func (dc *DC) AgePassword(t testing.TB, u User, age time.Duration, pw string) time.Time {
	t.Helper()
	if pw == "" {
		pw = DefaultPassword
	}
	conf, err := dc.smbConf()
	if err == nil {
		for _, tool := range []string{"faketime", "samba-tool"} {
			if _, lerr := exec.LookPath(tool); lerr != nil {
				err = fmt.Errorf("%s not installed (scripts/samba-ad/start.sh installs it): %w", tool, lerr)
				break
			}
		}
	}
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("adtest: aging a password: %v", err)
		}
		t.Skipf("adtest: cannot age a password here: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// faketime's plain number is an offset in seconds; the fake clock runs
	// on from there, so pwdLastSet lands within the command's run time.
	offset := "-" + strconv.FormatInt(int64(age/time.Second), 10)
	cmd := exec.CommandContext(ctx, "faketime", "-f", offset,
		"samba-tool", "user", "setpassword", u.SAM, "--newpassword="+pw, "-s", conf)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	before := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("adtest: aging the password of %s by %s: %v\n%s", u.SAM, age, err, out.Bytes())
	}
	e := dc.Read(t, u.DN, "pwdLastSet")
	ft, err := strconv.ParseInt(e.GetAttributeValue("pwdLastSet"), 10, 64)
	if err != nil {
		t.Fatalf("adtest: %s has pwdLastSet %q after aging: %v", u.SAM, e.GetAttributeValue("pwdLastSet"), err)
	}
	set := events.FileTime(ft)
	// the fake clock started at before-age and ran for the command's time
	if lo, hi := before.Add(-age).Add(-time.Second), time.Now().Add(-age).Add(time.Second); set.Before(lo) || set.After(hi) {
		t.Fatalf("adtest: %s's pwdLastSet is %s after aging by %s, want between %s and %s (faketime not effective?)",
			u.SAM, set.UTC().Format(time.RFC3339), age, lo.UTC().Format(time.RFC3339), hi.UTC().Format(time.RFC3339))
	}
	return set
}

// smbConf is the running DC's smb.conf (SAMBA_AD_SMB_CONF in start.sh's env):
// a local samba-tool without -H opens the sam.ldb it names.
func (dc *DC) smbConf() (string, error) {
	path := envFile()
	if dc.Dir != "" { // this DC's own (the second DC's is in its dir)
		path = filepath.Join(dc.Dir, "env")
	}
	vars, err := parseEnv(path)
	if err != nil {
		return "", err
	}
	conf := vars["SAMBA_AD_SMB_CONF"]
	if conf == "" {
		return "", fmt.Errorf("%s has no SAMBA_AD_SMB_CONF", path)
	}
	if _, err := os.Stat(conf); err != nil {
		return "", fmt.Errorf("the DC's smb.conf: %w (is the DC on this machine?)", err)
	}
	return conf, nil
}
