package natstest

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/natsx"
)

func TestMain(m *testing.M) {
	ServeNodeIfChild()
	os.Exit(m.Run())
}

// TestClusterSurvivesANode: R3 streams and KV keep working with one node of
// three gone: shut down in process, or killed with SIGKILL in its own.
func TestClusterSurvivesANode(t *testing.T) {
	t.Run("stopped", func(t *testing.T) {
		c := RunCluster(t, 3)
		survives(t, c, func() { c.Stop(0) })
	})
	t.Run("killed", func(t *testing.T) {
		c := RunClusterProcesses(t, 3)
		survives(t, c, func() { c.Kill(t, 0) })
	})
}

func survives(t *testing.T, c *Cluster, lose func()) {
	conn := c.Connect(t)
	EnsureTopology(t, conn.JS, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	kv, err := natsx.Bucket(ctx, conn.JS, natsx.BucketUsers)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte("before")); err != nil {
		t.Fatal(err)
	}
	lose()
	if conn, err := net.DialTimeout("tcp", strings.TrimPrefix(c.urls[0], "nats://"), time.Second); err == nil {
		conn.Close()
		t.Fatalf("node 1 still accepts connections at %s", c.urls[0])
	}
	// Each attempt has its own short timeout: one put stuck on the lost
	// leader must not use up the whole wait while a new leader is elected.
	deadline := time.Now().Add(45 * time.Second)
	for {
		pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := kv.Put(pctx, "k", []byte("after"))
		pcancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("KV unusable 45s after losing one node of three: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The stream elects its own leader, apart from the KV's: the same
	// bounded wait (a SIGKILLed node's leadership is not handed over).
	for {
		pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := conn.JS.Publish(pctx, "events.ad.user", []byte("{}"))
		pcancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("publishing 45s after losing one node of three: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	e, err := kv.Get(ctx, "k")
	if err != nil || string(e.Value()) != "after" {
		t.Fatalf("get: %v %v", e, err)
	}
}
