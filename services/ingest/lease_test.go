package ingest

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/ingest/adwatch"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/adtest"
	"github.com/pwsync/pwsync/testrig/natstest"
)

// recordingSink publishes through the replica's own NATS connection (a dead
// replica cannot publish) and records what JetStream acknowledged: what it
// holds is on the EVENTS stream.
type recordingSink struct {
	*EventSink
	mu  sync.Mutex
	got []events.ADUser
}

func (s *recordingSink) Publish(ctx context.Context, users []events.ADUser) error {
	if err := s.EventSink.Publish(ctx, users); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, users...)
	return nil
}

func (s *recordingSink) users() []events.ADUser {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]events.ADUser(nil), s.got...)
}

// mustChange reports whether the sink published guid flagged "must change".
func (s *recordingSink) mustChange(guid string) bool {
	for _, u := range s.users() {
		if u.ObjectGUID == guid && u.PwdLastSet == 0 {
			return true
		}
	}
	return false
}

// replayed reports whether the sink published guid's "must change" again
// other than in a policy re-read: other packages' tests share the DC and may
// change a PSO during the handover, and the re-read of every user that
// follows is right (it carries the new policy revision, so a new event ID).
func (s *recordingSink) replayed(guid string) bool {
	for _, u := range s.users() {
		if u.ObjectGUID == guid && u.PwdLastSet == 0 && u.PolicyRev == 0 {
			return true
		}
	}
	return false
}

// ingestReplica is one ingest replica on its own NATS connection.
type ingestReplica struct {
	name   string
	svc    *Service
	sink   *recordingSink
	conn   *natsx.Conn
	cancel context.CancelFunc
	done   chan struct{}
}

func startIngestReplica(t *testing.T, emb *natsx.Embedded, name string, dc adwatch.Config) *ingestReplica {
	t.Helper()
	conn := natstest.Connect(t, emb)
	r := &ingestReplica{name: name, conn: conn, sink: &recordingSink{EventSink: NewEventSink(conn.JS)}, done: make(chan struct{})}
	log := zerolog.New(zerolog.ConsoleWriter{Out: zerolog.TestWriter{T: t, Frame: 6}, TimeFormat: "15:04:05.000"}).
		Level(zerolog.InfoLevel).With().Timestamp().Str("replica", name).Logger()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	svc, err := New(ctx, Deps{JS: conn.JS, NC: conn.NC, Domains: []adwatch.Config{dc}, Holder: name, Sink: r.sink, Log: log})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	r.svc = svc
	runCtx, stop := context.WithCancel(context.Background())
	r.cancel = stop
	go func() { defer close(r.done); _ = svc.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-r.done })
	return r
}

// kill mimics kill -9: the connection goes first, so the lease is not
// released and nothing more is published or saved.
func (r *ingestReplica) kill() {
	r.conn.NC.Close()
	r.cancel()
	<-r.done
}

func (r *ingestReplica) watching() bool { return len(r.svc.Watching()) > 0 }

func waitUntil(t *testing.T, within time.Duration, what string, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !ok() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// Two ingest replicas watch one domain on real Samba AD over real NATS: only
// the lease holder watches (one DC load, one cursor writer); the other
// stands by, ready. Killed without releasing, the holder's lease expires and
// the standby takes over within the TTL plus its poll, resumes from the
// saved cursor (no full sync) and publishes a change made during the
// handover.
func TestOneReplicaWatchesADAndTheOtherTakesOver(t *testing.T) {
	dc := adtest.Require(t)
	ou := dc.NewOU(t)
	before := dc.CreateUser(t, ou, "lease-before", adtest.UserOpts{})
	during := dc.CreateUser(t, ou, "lease-during", adtest.UserOpts{})

	emb, conn := natstest.Run(t)
	cfg := adwatch.DefaultConfig()
	cfg.Domain, cfg.URL, cfg.CAFile = strings.ToLower(dc.Realm), dc.LDAPSURL, dc.CAFile
	cfg.BindDN, cfg.BindPassword, cfg.BaseDN = dc.BindDN, dc.BindPassword, dc.BaseDN

	a := startIngestReplica(t, emb, "replica-a", cfg)
	waitUntil(t, 60*time.Second, "replica-a watching and synced", func() bool { return a.watching() && a.svc.Ready() })
	b := startIngestReplica(t, emb, "replica-b", cfg)
	waitUntil(t, 10*time.Second, "replica-b ready on standby", b.svc.Ready)
	if b.watching() {
		t.Fatal("replica-b watches the domain too")
	}
	leases, err := natsx.Bucket(context.Background(), conn.JS, natsx.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	holder := func() string {
		e, err := leases.Get(context.Background(), LeasePrefix+cfg.Domain)
		if err != nil {
			return ""
		}
		return string(e.Value())
	}
	if h := holder(); h != "replica-a" {
		t.Fatalf("lease %s%s held by %q, want replica-a", LeasePrefix, cfg.Domain, h)
	}

	// Only the holder publishes.
	dc.ForceChange(t, before.DN)
	waitUntil(t, 15*time.Second, "replica-a publishes the first reset", func() bool { return a.sink.mustChange(before.GUID) })
	time.Sleep(time.Second)
	if n := len(b.sink.users()); n != 0 {
		t.Fatalf("the standby published %d users", n)
	}
	cursors, err := natsx.Bucket(context.Background(), conn.JS, natsx.BucketCursors)
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := cursors.Keys(context.Background())
	if len(keys) == 0 {
		t.Fatal("the holder saved no cursor")
	}

	// kill -9 of the holder; a reset made while nobody watches.
	killedAt := time.Now()
	a.kill()
	dc.ForceChange(t, during.DN)
	if h := holder(); h != "replica-a" {
		t.Fatalf("the killed holder released its lease (holder now %q): not a kill -9", h)
	}
	bound := natsx.LeaseTTL + natsx.LeaseRenew
	waitUntil(t, bound, "replica-b takes the lease over", b.watching)
	took := time.Since(killedAt)
	if took > bound {
		t.Fatalf("takeover took %s, bound %s", took, bound)
	}
	waitUntil(t, 15*time.Second, "replica-b publishes the reset made during the handover",
		func() bool { return b.sink.mustChange(during.GUID) })
	if h := holder(); h != "replica-b" {
		t.Fatalf("lease holder = %q, want replica-b", h)
	}
	for _, u := range b.sink.users() {
		if u.FullSync {
			t.Fatalf("replica-b ran a full sync (published %s as full sync): it did not resume from the saved cursor", u.DN)
		}
	}
	if b.sink.replayed(before.GUID) {
		t.Error("replica-b re-published the reset replica-a had published: the cursor was not resumed")
	}

	// A replica restarted under the same name takes its lease back at once.
	b.kill()
	restartedAt := time.Now()
	b2 := startIngestReplica(t, emb, "replica-b", cfg)
	waitUntil(t, natsx.LeaseTTL/3, "the restarted replica-b reclaims its lease", func() bool { return b2.watching() && b2.svc.Ready() })
	reclaim := time.Since(restartedAt)
	for _, u := range b2.sink.users() {
		if u.FullSync {
			t.Fatalf("the restarted replica ran a full sync (%s)", u.DN)
		}
	}
	t.Logf("takeover %.1fs after the kill (bound %s = lease TTL %s + renew %s); replica-b published %d users after it; restarted under its name, it reclaimed the lease in %.1fs",
		took.Seconds(), bound, natsx.LeaseTTL, natsx.LeaseRenew, len(b.sink.users()), reclaim.Seconds())
}
