package health_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/health"
	"github.com/pwsync/pwsync/shared/lease"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/natstest"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// eventually polls f until it returns true or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReadyzFollowsNATS stops the real nats-server under a connected
// replica: /readyz turns 503 naming NATS while /healthz stays 200, and both
// recover when a server comes back on the same port and store.
func TestReadyzFollowsNATS(t *testing.T) {
	dir := t.TempDir()
	emb, err := natsx.StartEmbedded(natsx.EmbeddedConfig{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	url := emb.ClientURL()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			emb.Shutdown()
		}
	})
	conn, err := natsx.Connect(natsx.ConnectConfig{URL: url, Name: t.Name()}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.NC.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := natsx.NewTopology(natsx.DefaultOptions()).Ensure(ctx, conn.JS); err != nil {
		t.Fatal(err)
	}
	kv, err := natsx.Bucket(ctx, conn.JS, natsx.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	leaseCtx, stopLease := context.WithCancel(ctx)
	defer stopLease()
	l := lease.New(kv, "graph-delta", "replica-a", time.Second, zerolog.Nop())
	go l.Run(leaseCtx, func(ctx context.Context) error { <-ctx.Done(); return nil })
	eventually(t, 5*time.Second, "lease acquired", l.Held)

	var synced atomic.Bool
	c := &health.Checker{NC: conn.NC, JS: conn.JS, Streams: []string{natsx.StreamEvents, natsx.StreamActions},
		LeasesBucket: natsx.BucketLeases, Targets: []health.Target{{Name: "ingest", Ready: synced.Load}}}
	mux := http.NewServeMux()
	c.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	code, body := get(t, srv.URL+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "FAIL ingest") {
		t.Fatalf("before first sync: want 503 naming ingest, got %d\n%s", code, body)
	}
	synced.Store(true)
	code, body = get(t, srv.URL+"/readyz")
	for _, want := range []string{"ok   nats: connected", "ok   jetstream:", "ok   stream EVENTS: present", "ok   ingest: ready", "lease graph-delta: held by replica-a"} {
		if !strings.Contains(body, want) {
			t.Errorf("readyz lacks %q:\n%s", want, body)
		}
	}
	if code != http.StatusOK {
		t.Fatalf("ready: got %d\n%s", code, body)
	}

	stopLease()
	emb.Shutdown()
	stopped = true
	eventually(t, 5*time.Second, "client sees the server gone", func() bool { return !conn.NC.IsConnected() })
	code, body = get(t, srv.URL+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "FAIL nats: not connected") {
		t.Fatalf("nats down: want 503 naming nats, got %d\n%s", code, body)
	}
	code, body = get(t, srv.URL+"/healthz")
	if code != http.StatusOK || !strings.Contains(body, "FAIL nats") {
		t.Fatalf("nats down: healthz must stay 200 and report nats, got %d\n%s", code, body)
	}

	emb2, err := natsx.StartEmbedded(natsx.EmbeddedConfig{DataDir: dir, Listen: strings.TrimPrefix(url, "nats://")})
	if err != nil {
		t.Fatal(err)
	}
	defer emb2.Shutdown()
	eventually(t, 10*time.Second, "readyz back to 200", func() bool {
		code, _ := get(t, srv.URL+"/readyz")
		return code == http.StatusOK
	})
}

// TestReadyzMissingStream: a replica whose stream was deleted is not ready.
func TestReadyzMissingStream(t *testing.T) {
	_, conn := natstest.Run(t)
	ctx := context.Background()
	if err := conn.JS.DeleteStream(ctx, natsx.StreamAudit); err != nil {
		t.Fatal(err)
	}
	c := &health.Checker{NC: conn.NC, JS: conn.JS, Streams: []string{natsx.StreamEvents, natsx.StreamAudit}}
	res := c.Ready(ctx)
	var failed []string
	for _, r := range res {
		if !r.OK {
			failed = append(failed, r.Name+": "+r.Detail)
		}
	}
	if len(failed) != 1 || !strings.Contains(failed[0], "stream AUDIT") || !strings.Contains(failed[0], jetstream.ErrStreamNotFound.Error()) {
		t.Fatalf("want exactly the AUDIT stream failing, got %v", failed)
	}
}

// TestReadyzStoreError: a store that cannot be written fails readiness
// with its cause, even while JetStream still answers.
func TestReadyzStoreError(t *testing.T) {
	_, conn := natstest.Run(t)
	var storeErr error
	c := &health.Checker{NC: conn.NC, JS: conn.JS, StoreError: func() error { return storeErr }}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, "ok   jetstream store: writable"},
		{errors.New("write .../1.blk: no space left on device"), "FAIL jetstream store: write .../1.blk: no space left on device"},
	} {
		storeErr = tc.err
		mux := http.NewServeMux()
		c.Register(mux)
		srv := httptest.NewServer(mux)
		code, body := get(t, srv.URL+"/readyz")
		srv.Close()
		if want := map[bool]int{true: http.StatusOK, false: http.StatusServiceUnavailable}[tc.err == nil]; code != want || !strings.Contains(body, tc.want) {
			t.Errorf("store error %v: %d\n%s\nwant %d with %q", tc.err, code, body, want, tc.want)
		}
	}
}
