package adwatch

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/adtest"
	"github.com/pwsync/pwsync/testrig/natstest"
)

// published is one user as the sink received it, and when.
type published struct {
	user events.ADUser
	at   time.Time
}

// recSink records every published user and wakes waiters.
type recSink struct {
	mu      sync.Mutex
	got     []published
	changed chan struct{} // closed and replaced on every Publish
}

func (s *recSink) Publish(_ context.Context, users []events.ADUser) error {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range users {
		s.got = append(s.got, published{user: u, at: now})
	}
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	return nil
}

// snapshot returns what was published so far and a channel closed on the next Publish.
func (s *recSink) snapshot() ([]published, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return append([]published(nil), s.got...), s.changed
}

// waitFor waits until a published user from index from on matches ok, and
// returns it with its index.
func (s *recSink) waitFor(t testing.TB, from int, timeout time.Duration, what string, ok func(events.ADUser) bool) (published, int) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		got, changed := s.snapshot()
		for i := from; i < len(got); i++ {
			if ok(got[i].user) {
				return got[i], i
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("%s: not published within %s (%d users published)", what, timeout, len(got))
		}
	}
}

func (s *recSink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

// under returns the published users whose DN is below ouDN (tombstones of
// users deleted from it included, by GUID).
func (s *recSink) under(ouDN string, guids map[string]bool) []events.ADUser {
	got, _ := s.snapshot()
	var out []events.ADUser
	for _, p := range got {
		if strings.HasSuffix(strings.ToLower(p.user.DN), ","+strings.ToLower(ouDN)) || guids[p.user.ObjectGUID] {
			out = append(out, p.user)
		}
	}
	return out
}

type memCursors struct {
	mu sync.Mutex
	m  map[string][]byte
}

func newMemCursors() *memCursors { return &memCursors{m: map[string][]byte{}} }

func (c *memCursors) Load(_ context.Context, key string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[key], nil
}

func (c *memCursors) Save(_ context.Context, key string, v []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[key] = append([]byte(nil), v...)
	return nil
}

// kvCursorsFor runs a real NATS server and returns cursors in its cursors bucket.
func kvCursorsFor(t testing.TB) Cursors {
	t.Helper()
	_, conn := natstest.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := natsx.Bucket(ctx, conn.JS, natsx.BucketCursors)
	if err != nil {
		t.Fatal(err)
	}
	return KVCursors(kv)
}

// dcConfig watches the test DC over LDAPS with its CA, as its administrator.
func dcConfig(dc *adtest.DC) Config {
	c := DefaultConfig()
	c.Domain = strings.ToLower(dc.Realm)
	c.URL = dc.LDAPSURL
	c.CAFile = dc.CAFile
	c.BindDN = dc.BindDN
	c.BindPassword = dc.BindPassword
	c.BaseDN = dc.BaseDN
	return c
}

func testLogger(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.ConsoleWriter{Out: zerolog.TestWriter{T: t, Frame: 6}, TimeFormat: "15:04:05.000"}).
		Level(zerolog.InfoLevel).With().Timestamp().Logger()
}

// running is a watcher running in the background of a test.
type running struct {
	w    *Watcher
	stop func() // cancels Run and waits for it; fails the test if Run does not return nil
}

// start runs a watcher until the test ends (or stop is called).
func start(t testing.TB, cfg Config, sink Sink, cursors Cursors, log zerolog.Logger) *running {
	t.Helper()
	w, err := New(cfg, sink, cursors, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v after cancel, want nil", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not return within 10s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return &running{w: w, stop: stop}
}

// fullSyncWait bounds a full sync of the test DC: the shared DC holds
// adtest's 5,000-user bulk OU and other tests' users, and 2-core CI boxes
// run other packages against it at the same time.
const fullSyncWait = 3 * time.Minute

// waitReady waits until the watcher's first sync is done.
func (r *running) waitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !r.w.Ready() {
		if time.Now().After(deadline) {
			t.Fatalf("watcher not ready within %s", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func byGUID(users []adtest.User) map[string]adtest.User {
	m := make(map[string]adtest.User, len(users))
	for _, u := range users {
		m[u.GUID] = u
	}
	return m
}

func guidSet(users ...adtest.User) map[string]bool {
	m := make(map[string]bool, len(users))
	for _, u := range users {
		m[u.GUID] = true
	}
	return m
}

// waitNotifying waits until the change notification search is open, and a
// little more for the DC to have taken it in.
func (r *running) waitNotifying(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !r.w.notifying.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("change notifications not on within %s", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
}

// savedWatermark is the USN the stored cursor says every change is published
// up to; in DirSync mode the cookie is exact and there is none, so MaxInt64.
func savedWatermark(t testing.TB, cursors Cursors, cfg Config, mode string) int64 {
	t.Helper()
	if mode != ModeUSN {
		return math.MaxInt64
	}
	raw, err := cursors.Load(context.Background(), cfg.cursorKey(ModeUSN))
	if err != nil {
		t.Fatalf("loading the USN cursor: %v", err)
	}
	var cur usnCursor
	if err := json.Unmarshal(raw, &cur); err != nil {
		t.Fatalf("decoding the USN cursor %q: %v", raw, err)
	}
	return cur.USN
}
