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
	err = retryFor(ctx, 45*time.Second, 3*time.Second, func(ctx context.Context) error {
		_, err := kv.Put(ctx, "k", []byte("after"))
		return err
	})
	if err != nil {
		t.Fatalf("KV unusable 45s after losing one node of three: %v", err)
	}
	// The stream elects its own leader, apart from the KV's: the same
	// bounded wait (a SIGKILLed node's leadership is not handed over).
	err = retryFor(ctx, 45*time.Second, 3*time.Second, func(ctx context.Context) error {
		_, err := conn.JS.Publish(ctx, "events.ad.user", []byte("{}"))
		return err
	})
	if err != nil {
		t.Fatalf("publishing 45s after losing one node of three: %v", err)
	}
	e, err := kv.Get(ctx, "k")
	if err != nil || string(e.Value()) != "after" {
		t.Fatalf("get: %v %v", e, err)
	}
}
