package lease

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/natstest"
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
