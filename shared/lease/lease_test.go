package lease

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/testrig/natstest"
)

const (
	ttl   = 2 * time.Second
	renew = 400 * time.Millisecond
)

func bucket(t *testing.T, js jetstream.JetStream) jetstream.KeyValue {
	t.Helper()
	kv, err := js.CreateOrUpdateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: "leases_test", TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// worker records when it runs and checks no two run at once.
type worker struct {
	running *atomic.Int32
	overlap *atomic.Bool
	started chan string
}

func (w worker) fn(name string) func(context.Context) error {
	return func(ctx context.Context) error {
		if w.running.Add(1) > 1 {
			w.overlap.Store(true)
		}
		defer w.running.Add(-1)
		w.started <- name
		<-ctx.Done()
		return nil
	}
}

func TestLeaseMovesToSurvivorWhenHolderDies(t *testing.T) {
	emb, conn := natstest.Run(t)
	kvB := bucket(t, conn.JS)
	// Replica A on its own connection, so that "dying" is closing it.
	connA := natstest.Connect(t, emb)
	kvA, err := connA.JS.KeyValue(context.Background(), "leases_test")
	if err != nil {
		t.Fatal(err)
	}
	w := worker{running: &atomic.Int32{}, overlap: &atomic.Bool{}, started: make(chan string, 4)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := New(kvA, "subscriptions", "replica-a", renew, zerolog.Nop())
	b := New(kvB, "subscriptions", "replica-b", renew, zerolog.Nop())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = a.Run(ctx, w.fn("a")) }()
	if got := <-w.started; got != "a" {
		t.Fatalf("first holder = %s", got)
	}
	go func() { defer wg.Done(); _ = b.Run(ctx, w.fn("b")) }()
	time.Sleep(3 * renew)
	if !a.Held() || b.Held() {
		t.Fatalf("held: a=%v b=%v; want only a", a.Held(), b.Held())
	}

	died := time.Now()
	connA.NC.Close() // replica A loses NATS: cannot renew, cannot release
	select {
	case got := <-w.started:
		if got != "b" {
			t.Fatalf("took over: %s", got)
		}
	case <-time.After(ttl + 4*renew):
		t.Fatalf("no takeover within %v", ttl+4*renew)
	}
	took := time.Since(died)
	if took > ttl+4*renew {
		t.Fatalf("takeover took %v", took)
	}
	if w.overlap.Load() {
		t.Fatal("both replicas ran the singleton at once")
	}
	if h, _ := b.Holder(context.Background()); h != "replica-b" {
		t.Fatalf("holder in KV = %q", h)
	}
	t.Logf("takeover after %v (ttl %v, renew %v)", took.Round(time.Millisecond), ttl, renew)
	cancel()
	wg.Wait()
}

func TestLeaseReleasedOnShutdownIsTakenAtOnce(t *testing.T) {
	_, conn := natstest.Run(t)
	kv := bucket(t, conn.JS)
	w := worker{running: &atomic.Int32{}, overlap: &atomic.Bool{}, started: make(chan string, 4)}
	ctxA, stopA := context.WithCancel(context.Background())
	ctxB, stopB := context.WithCancel(context.Background())
	defer stopB()
	doneA := make(chan struct{})
	go func() { defer close(doneA); _ = New(kv, "delta", "a", renew, zerolog.Nop()).Run(ctxA, w.fn("a")) }()
	<-w.started
	go func() { _ = New(kv, "delta", "b", renew, zerolog.Nop()).Run(ctxB, w.fn("b")) }()
	stopA()
	<-doneA
	start := time.Now()
	select {
	case <-w.started:
	case <-time.After(ttl):
		t.Fatal("graceful release did not hand over before the TTL")
	}
	if d := time.Since(start); d > 2*renew {
		t.Fatalf("handover took %v, want about renew/2", d)
	}
}

// A replica killed holding the lease and restarted under the same name takes
// it back at once; a replica under another name still waits for the TTL.
func TestRestartedHolderReclaimsItsLeaseAtOnce(t *testing.T) {
	emb, conn := natstest.Run(t)
	kv := bucket(t, conn.JS)
	connA := natstest.Connect(t, emb)
	kvA, err := connA.JS.KeyValue(context.Background(), "leases_test")
	if err != nil {
		t.Fatal(err)
	}
	w := worker{running: &atomic.Int32{}, overlap: &atomic.Bool{}, started: make(chan string, 4)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { _ = New(kvA, "campaign", "node1-actuator", renew, zerolog.Nop()).Run(ctx, w.fn("a")) })
	<-w.started
	connA.NC.Close() // kill -9: no release
	// The other replica is waiting too; the restarted one must win well
	// before the TTL runs out.
	other := New(kv, "campaign", "node2-actuator", renew, zerolog.Nop())
	wg.Go(func() { _ = other.Run(ctx, w.fn("other")) })
	time.Sleep(renew)
	restarted := New(kv, "campaign", "node1-actuator", renew, zerolog.Nop())
	start := time.Now()
	wg.Go(func() { _ = restarted.Run(ctx, w.fn("restarted")) })
	select {
	case got := <-w.started:
		if got != "restarted" {
			t.Fatalf("%s took the lease, want the restarted holder", got)
		}
	case <-time.After(ttl / 2):
		t.Fatalf("the restarted holder did not reclaim its lease within %v (ttl %v)", ttl/2, ttl)
	}
	if d := time.Since(start); d > ttl/2 {
		t.Fatalf("reclaim took %v", d)
	}
	if other.Held() || !other.Standby() || restarted.Standby() {
		t.Fatalf("other: held=%v standby=%v; restarted standby=%v", other.Held(), other.Standby(), restarted.Standby())
	}
	// It keeps it: renewals work on the reclaimed revision.
	time.Sleep(3 * renew)
	if !restarted.Held() || other.Held() {
		t.Fatalf("after renewals: restarted=%v other=%v", restarted.Held(), other.Held())
	}
	if h, _ := other.Holder(context.Background()); h != "node1-actuator" {
		t.Fatalf("holder in KV = %q", h)
	}
}
