package adwatch

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/pwsync/pwsync/shared/logx"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/testrig/adtest"
)

func TestFullSyncPublishesEveryUser(t *testing.T) {
	dc := adtest.Require(t)
	ou := dc.NewOU(t)
	plain := dc.CreateUser(t, ou, "fs-plain", adtest.UserOpts{Mail: "fs-plain@example.test"})
	must := dc.CreateUser(t, ou, "fs-must", adtest.UserOpts{MustChange: true})
	never := dc.CreateUser(t, ou, "fs-never", adtest.UserOpts{NeverExpires: true})
	off := dc.CreateUser(t, ou, "fs-off", adtest.UserOpts{Disabled: true})
	bulk := dc.CreateUsers(t, ou, "fs-bulk", 30)
	want := byGUID(append([]adtest.User{plain, must, never, off}, bulk...))

	sink := &recSink{}
	cursors := kvCursorsFor(t)
	cfg := dcConfig(dc)
	cfg.PageSize = 7 // several pages even in a small domain
	r := start(t, cfg, sink, cursors, testLogger(t))
	r.waitReady(t, fullSyncWait)

	got := map[string]events.ADUser{}
	for _, u := range sink.under(ou, nil) {
		if !u.FullSync {
			t.Errorf("%s published with FullSync=false during the full sync", u.DN)
		}
		got[u.ObjectGUID] = u
	}
	if len(got) != len(want) {
		t.Fatalf("full sync published %d users of %s, want %d", len(got), ou, len(want))
	}
	for guid, w := range want {
		u, ok := got[guid]
		if !ok {
			t.Errorf("user %s (%s) not published", w.SAM, guid)
			continue
		}
		if u.DN != w.DN || u.UPN != w.UPN || u.SAMAccountName != w.SAM || u.ImmutableID != w.ImmutableID ||
			u.Domain != "example.test" || u.USNChanged == 0 || u.Deleted {
			t.Errorf("user %s published as %+v", w.SAM, u)
		}
	}
	if u := got[plain.GUID]; u.Mail != "fs-plain@example.test" || u.PwdLastSet == 0 || u.MustChange() ||
		u.NeverExpires() || u.Disabled() || u.ExpirySource != events.ExpirySourceDomain ||
		events.FileTime(u.Expiry).Sub(events.FileTime(u.PwdLastSet)) != 42*24*time.Hour {
		t.Errorf("plain user published as %+v", u)
	}
	// the full sync reads no constructed attribute (msDS-User-Account-Control-Computed
	// among them): must-change comes from pwdLastSet alone
	if u := got[must.GUID]; !u.MustChange() || u.ExpirySource != events.ExpirySourceMustChange {
		t.Errorf("must-change user published as %+v", u)
	}
	if u := got[never.GUID]; !u.NeverExpires() || u.Expiry != events.FileTimeNeverExpires {
		t.Errorf("never-expires user published as %+v", u)
	}
	if u := got[off.GUID]; !u.Disabled() {
		t.Errorf("disabled user published as %+v", u)
	}
	cookie, err := cursors.Load(context.Background(), "dirsync.example.test")
	if err != nil || len(cookie) == 0 {
		t.Fatalf("no DirSync cookie saved after the full sync (err %v)", err)
	}
}

func TestSeededMembershipAndPSO(t *testing.T) {
	dc := adtest.Require(t)
	// the seed (scripts/samba-ad/seed.sh) puts alice in Privileged-Users, which the PSO applies to
	alice := "CN=Alice Anders,OU=People,OU=Corp," + dc.BaseDN
	if _, err := dc.Conn(t).Search(ldap.NewSearchRequest(alice, ldap.ScopeBaseObject, 0, 0, 0, false,
		"(objectClass=*)", []string{"1.1"}, nil)); err != nil {
		t.Skipf("seed data not there (run scripts/samba-ad/seed.sh): %v", err)
	}
	sink := &recSink{}
	r := start(t, dcConfig(dc), sink, newMemCursors(), testLogger(t))
	r.waitReady(t, fullSyncWait)
	p, _ := sink.waitFor(t, 0, time.Second, "alice", func(u events.ADUser) bool { return u.DN == alice })
	// computed locally: the full sync reads no msDS-ResultantPSO
	if p.user.PolicyName != "PSO-Privileged" || p.user.ExpirySource != events.ExpirySourcePSO || len(p.user.MemberOf) == 0 ||
		!strings.HasPrefix(p.user.MemberOf[0], "CN=Privileged-Users,") {
		t.Errorf("alice published as %+v; want the PSO and the group", p.user)
	}
}

func TestChangesArePublished(t *testing.T) {
	dc := adtest.Require(t)
	tests := []struct {
		name          string
		notifications bool
		poll          time.Duration
		within        time.Duration
	}{
		// the poll interval is far longer than the wait: only a notification can deliver it
		{"notification_triggers_poll", true, time.Minute, 5 * time.Second},
		{"poll_without_notifications", false, 300 * time.Millisecond, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ou := dc.NewOU(t)
			u := dc.CreateUser(t, ou, "ch-user", adtest.UserOpts{})
			sink := &recSink{}
			cfg := dcConfig(dc)
			cfg.Notifications, cfg.PollInterval = tt.notifications, tt.poll
			r := start(t, cfg, sink, newMemCursors(), testLogger(t))
			r.waitReady(t, fullSyncWait)
			sink.waitFor(t, 0, 5*time.Second, "full state", func(x events.ADUser) bool { return x.ObjectGUID == u.GUID })
			if tt.notifications {
				r.waitNotifying(t, 10*time.Second)
			}
			from := sink.len()

			t0 := time.Now()
			dc.ForceChange(t, u.DN)
			p, _ := sink.waitFor(t, from, tt.within, "forced change", func(x events.ADUser) bool {
				return x.ObjectGUID == u.GUID && x.PwdLastSet == 0
			})
			t.Logf("pwdLastSet=0 published %s after the modify started", p.at.Sub(t0))
			if p.user.FullSync || !p.user.MustChange() {
				t.Errorf("change published as %+v", p.user)
			}

			// "password never expires" arrives the same way
			from = sink.len()
			dc.SetNeverExpires(t, u.DN, true)
			sink.waitFor(t, from, tt.within, "never-expires", func(x events.ADUser) bool {
				return x.ObjectGUID == u.GUID && x.NeverExpires() && x.ExpiryComputed == events.FileTimeNeverExpires
			})
		})
	}
}

func TestMustChangeResetEndsOnFinalState(t *testing.T) {
	dc := adtest.Require(t)
	ou := dc.NewOU(t)
	u := dc.CreateUser(t, ou, "reset-user", adtest.UserOpts{})
	sink := &recSink{}
	cfg := dcConfig(dc)
	cfg.PollInterval = 200 * time.Millisecond
	r := start(t, cfg, sink, newMemCursors(), testLogger(t))
	r.waitReady(t, fullSyncWait)
	time.Sleep(300 * time.Millisecond)
	from := sink.len()

	// two modifies: unicodePwd (pwdLastSet=<now>), then pwdLastSet=0
	dc.ResetPassword(t, u.DN, "Helpdesk.Passw0rd-7", true)
	sink.waitFor(t, from, 5*time.Second, "reset", func(x events.ADUser) bool {
		return x.ObjectGUID == u.GUID && x.PwdLastSet == 0
	})
	time.Sleep(5 * cfg.PollInterval) // anything still coming would arrive now
	got, _ := sink.snapshot()
	var last events.ADUser
	for _, p := range got[from:] {
		if p.user.ObjectGUID == u.GUID {
			last = p.user
		}
	}
	if !last.MustChange() {
		t.Fatalf("last published state has pwdLastSet=%d, want 0 (must change)", last.PwdLastSet)
	}
}

func TestDeletedUserIsPublished(t *testing.T) {
	dc := adtest.Require(t)
	for _, mode := range []string{ModeDirSync, ModeUSN} {
		t.Run(mode, func(t *testing.T) {
			ou := dc.NewOU(t)
			u := dc.CreateUser(t, ou, "del-user", adtest.UserOpts{})
			sink := &recSink{}
			cfg := dcConfig(dc)
			cfg.Mode, cfg.PollInterval = mode, 200*time.Millisecond
			r := start(t, cfg, sink, newMemCursors(), testLogger(t))
			r.waitReady(t, fullSyncWait)
			from := sink.len()

			dc.Delete(t, u.DN)
			p, _ := sink.waitFor(t, from, 5*time.Second, "deletion", func(x events.ADUser) bool {
				return x.ObjectGUID == u.GUID && x.Deleted
			})
			if p.user.USNChanged == 0 || p.user.SAMAccountName != u.SAM || p.user.ImmutableID != u.ImmutableID ||
				!strings.Contains(p.user.DN, "CN=Deleted Objects,") || p.user.EventID() == "" {
				t.Errorf("deletion published as %+v", p.user)
			}
		})
	}
}

func TestRestartResumesFromSavedCursor(t *testing.T) {
	dc := adtest.Require(t)
	for _, mode := range []string{ModeDirSync, ModeUSN} {
		t.Run(mode, func(t *testing.T) {
			ou := dc.NewOU(t)
			a := dc.CreateUser(t, ou, "rs-a", adtest.UserOpts{})
			b := dc.CreateUser(t, ou, "rs-b", adtest.UserOpts{})
			cursors := kvCursorsFor(t)
			cfg := dcConfig(dc)
			cfg.Mode, cfg.PollInterval = mode, 200*time.Millisecond

			first := &recSink{}
			r1 := start(t, cfg, first, cursors, testLogger(t))
			r1.waitReady(t, fullSyncWait)
			dc.ForceChange(t, a.DN) // a change seen by the first run only
			first.waitFor(t, 0, 5*time.Second, "first run's change", func(x events.ADUser) bool {
				return x.ObjectGUID == a.GUID && x.PwdLastSet == 0
			})
			r1.stop()
			savedUSN := savedWatermark(t, cursors, cfg, mode)

			second := &recSink{}
			r2 := start(t, cfg, second, cursors, testLogger(t))
			r2.waitReady(t, 10*time.Second)
			dc.ForceChange(t, b.DN)
			second.waitFor(t, 0, 5*time.Second, "second run's change", func(x events.ADUser) bool {
				return x.ObjectGUID == b.GUID && x.PwdLastSet == 0
			})
			// A change that committed while the first run's last poll was
			// scanning is above the watermark that poll saved (read before the
			// scan, so nothing is skipped): the second run publishes it again
			// under the same event ID, which JetStream's duplicate window drops.
			// Anything else published again is a replay of old state.
			firstIDs := map[string]bool{}
			for _, u := range first.under(ou, nil) {
				firstIDs[u.EventID()] = true
			}
			// polls are sequential: whatever old the second run would re-emit came before this
			for _, u := range second.under(ou, nil) {
				if firstIDs[u.EventID()] && u.USNChanged > savedUSN {
					t.Logf("published again under the same event ID (above the saved watermark %d): %s at USN %d", savedUSN, u.DN, u.USNChanged)
					continue
				}
				// Other packages' tests share the DC and may change a PSO between
				// the two runs: the re-read that follows is right, and it carries
				// the new policy revision. The cursor must not replay anything else.
				if u.PolicyRev != 0 {
					continue
				}
				if u.ObjectGUID != b.GUID || u.FullSync || u.PwdLastSet != 0 {
					t.Errorf("after the restart an old state was published again: %+v", u)
				}
			}
		})
	}
}

func TestUSNModeBelowAnOU(t *testing.T) {
	dc := adtest.Require(t)
	ou := dc.NewOU(t)
	users := dc.CreateUsers(t, ou, "usn", 12)
	outside := dc.NewOU(t)
	other := dc.CreateUser(t, outside, "usn-out", adtest.UserOpts{})
	for _, mode := range []string{ModeUSN, ModeAuto} { // auto: DirSync refuses a base that is not the domain root
		t.Run(mode, func(t *testing.T) {
			sink := &recSink{}
			cursors := newMemCursors()
			cfg := dcConfig(dc)
			cfg.Mode, cfg.BaseDN, cfg.PollInterval = mode, ou, 200*time.Millisecond
			r := start(t, cfg, sink, cursors, testLogger(t))
			r.waitReady(t, fullSyncWait)
			got, _ := sink.snapshot()
			if len(got) != len(users) {
				t.Fatalf("full sync below %s published %d users, want %d", ou, len(got), len(users))
			}
			want := byGUID(users)
			for _, p := range got {
				if _, ok := want[p.user.ObjectGUID]; !ok || !p.user.FullSync {
					t.Errorf("unexpected %+v", p.user)
				}
			}
			if c, _ := cursors.Load(context.Background(), "usn.example.test"); !bytes.Contains(c, []byte(`"usn":`)) {
				t.Errorf("USN cursor = %q", c)
			}
			if c, _ := cursors.Load(context.Background(), "dirsync.example.test"); c != nil {
				t.Errorf("a DirSync cookie was saved in %s mode", mode)
			}

			from := sink.len()
			on := mode == ModeUSN               // each run flips it, so that each sees a change
			dc.SetNeverExpires(t, other.DN, on) // outside the base: never published
			dc.SetNeverExpires(t, users[3].DN, on)
			p, _ := sink.waitFor(t, from, 5*time.Second, "change", func(x events.ADUser) bool {
				return x.ObjectGUID == users[3].GUID && x.NeverExpires() == on
			})
			if p.user.FullSync {
				t.Errorf("change published as a full sync: %+v", p.user)
			}
			time.Sleep(3 * cfg.PollInterval)
			for _, q := range sink.under(outside, nil) {
				t.Errorf("user outside the base published: %+v", q)
			}
		})
	}
}

func TestTransportSecurity(t *testing.T) {
	dc := adtest.Require(t)
	ou := dc.NewOU(t)
	u := dc.CreateUser(t, ou, "tls-user", adtest.UserOpts{})
	tests := []struct {
		name    string
		edit    func(*Config)
		wantTLS bool
	}{
		{"ldaps", func(*Config) {}, true},
		{"starttls", func(c *Config) { c.URL, c.StartTLS = dc.LDAPURL, true }, true},
		{"plain_allowed", func(c *Config) { c.URL, c.AllowPlain, c.CAFile = dc.LDAPURL, true, "" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &recSink{}
			cfg := dcConfig(dc)
			cfg.Mode, cfg.BaseDN = ModeUSN, ou
			tt.edit(&cfg)
			r := start(t, cfg, sink, newMemCursors(), testLogger(t))
			r.waitReady(t, fullSyncWait)
			sink.waitFor(t, 0, time.Second, "user", func(x events.ADUser) bool { return x.ObjectGUID == u.GUID })
			// Samba also takes simple binds in clear: check the connection itself
			c, err := r.w.dial()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if state, ok := c.TLSConnectionState(); ok != tt.wantTLS || (ok && !state.HandshakeComplete) {
				t.Errorf("TLS = %v (handshake complete %v), want %v", ok, state.HandshakeComplete, tt.wantTLS)
			}
		})
	}
}

// logCounter counts log lines that contain a message.
type logCounter struct{ logx.Buffer }

func (l *logCounter) count(s string) int { return strings.Count(l.String(), s) }

func TestUnusableDCIsRetried(t *testing.T) {
	dc := adtest.Require(t)
	tests := []struct {
		name string
		edit func(*Config)
	}{
		{"unreachable", func(c *Config) { c.URL = "ldaps://127.0.0.1:1" }},
		// without the test CA the DC's certificate must not be trusted
		{"unverified_certificate", func(c *Config) { c.CAFile = "" }},
		{"wrong_password", func(c *Config) { c.BindPassword = "Wrong.Passw0rd" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := dcConfig(dc)
			tt.edit(&cfg)
			logs := &logCounter{}
			r := start(t, cfg, &recSink{}, newMemCursors(), zerolog.New(logs))
			// Samba answers a wrong password slowly, and the machine may be
			// busy: the bound is generous, what matters is that it retries.
			deadline := time.Now().Add(30 * time.Second)
			for logs.count("retrying") < 3 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if n := logs.count("retrying"); n < 3 {
				t.Fatalf("%d retries logged in 30s, want at least 3; logs:\n%s", n, logs.String())
			}
			if r.w.Ready() {
				t.Fatal("Ready() with an unusable DC")
			}
			if strings.Contains(logs.String(), cfg.BindPassword) {
				t.Fatal("the bind password was logged")
			}
			t0 := time.Now()
			r.stop()
			if d := time.Since(t0); d > time.Second {
				t.Errorf("Run took %s to return after cancel", d)
			}
		})
	}
}

func TestUnusableCursorMeansFullSync(t *testing.T) {
	dc := adtest.Require(t)
	ou := dc.NewOU(t)
	u := dc.CreateUser(t, ou, "cur-user", adtest.UserOpts{})
	tests := []struct {
		name   string
		cursor string
	}{
		// valid JSON, but cookies the DC cannot parse (Samba answers 12): found on the first poll
		{"rejected_cookie", `{"users":"Z2FyYmFnZQ==","deleted":"Z2FyYmFnZQ=="}`},
		{"not_json", `garbage`},
		{"one_cookie_missing", `{"users":"Z2FyYmFnZQ=="}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cursors := newMemCursors()
			if err := cursors.Save(context.Background(), "dirsync.example.test", []byte(tt.cursor)); err != nil {
				t.Fatal(err)
			}
			sink := &recSink{}
			start(t, dcConfig(dc), sink, cursors, testLogger(t))
			sink.waitFor(t, 0, fullSyncWait, "full state", func(x events.ADUser) bool {
				return x.ObjectGUID == u.GUID && x.FullSync
			})
			// The cursor is saved when the whole domain is read, which on
			// the shared DC (adtest's 5,000-user bulk OU) is well after
			// this user's event (and, for a rejected cookie, after ready:
			// the resume was ready before the DC refused the cookie).
			deadline := time.Now().Add(fullSyncWait)
			for {
				c, _ := cursors.Load(context.Background(), "dirsync.example.test")
				var cur dirSyncCursor
				if json.Unmarshal(c, &cur) == nil && len(cur.Users) > 20 && len(cur.Deleted) > 20 {
					break // a real cookie (Samba's are ~100 bytes) replaced the bad one
				}
				if time.Now().After(deadline) {
					t.Fatalf("cursor after the full sync: %q", c)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

func TestConsistencyGuidAnchor(t *testing.T) {
	dc := adtest.Require(t)
	ou := dc.NewOU(t)
	moved := dc.CreateUser(t, ou, "anc-moved", adtest.UserOpts{})
	plain := dc.CreateUser(t, ou, "anc-plain", adtest.UserOpts{})
	// A user migrated from another forest keeps its old anchor here.
	anchor := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	c := dc.Conn(t)
	req := ldap.NewModifyRequest(moved.DN, nil)
	req.Replace(attrConsistencyGUID, []string{string(anchor)})
	if err := c.Modify(req); err != nil {
		t.Fatalf("setting %s: %v", attrConsistencyGUID, err)
	}
	tests := []struct {
		anchor    string
		wantMoved string
	}{
		{AnchorObjectGUID, moved.ImmutableID},
		{AnchorConsistencyGUID, events.ImmutableID(anchor)},
	}
	for _, tt := range tests {
		t.Run(tt.anchor, func(t *testing.T) {
			sink := &recSink{}
			cfg := dcConfig(dc)
			cfg.Anchor = tt.anchor
			r := start(t, cfg, sink, newMemCursors(), testLogger(t))
			r.waitReady(t, fullSyncWait)
			got := map[string]string{}
			for _, u := range sink.under(ou, nil) {
				got[u.ObjectGUID] = u.ImmutableID
			}
			if got[moved.GUID] != tt.wantMoved {
				t.Errorf("moved user's immutable id = %q, want %q", got[moved.GUID], tt.wantMoved)
			}
			if got[plain.GUID] != plain.ImmutableID {
				t.Errorf("user without %s: immutable id = %q, want the objectGUID's %q", attrConsistencyGUID, got[plain.GUID], plain.ImmutableID)
			}
		})
	}
}
