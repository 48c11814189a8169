// Package natstest runs a real nats-server with JetStream for tests. Import it
// from _test.go files only.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/natsx"
)

// Run starts an embedded server on a temp dir that also listens on a random
// loopback port, connects to it, creates pwsync's topology, and registers
// cleanup. The returned Embedded can be stopped and restarted by the test.
func Run(t testing.TB) (*natsx.Embedded, *natsx.Conn) {
	t.Helper()
	dir := t.TempDir()
	emb, err := natsx.StartEmbedded(natsx.EmbeddedConfig{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("starting nats: %v", err)
	}
	t.Cleanup(emb.Shutdown)
	conn := Connect(t, emb)
	return emb, conn
}

// Connect opens a connection to emb and ensures the topology.
func Connect(t testing.TB, emb *natsx.Embedded) *natsx.Conn {
	t.Helper()
	conn, err := natsx.Connect(natsx.ConnectConfig{Embedded: emb, Name: t.Name()}, zerolog.Nop())
	if err != nil {
		t.Fatalf("connecting to nats: %v", err)
	}
	t.Cleanup(conn.NC.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := natsx.NewTopology(natsx.DefaultOptions()).Ensure(ctx, conn.JS); err != nil {
		t.Fatalf("ensuring topology: %v", err)
	}
	return conn
}
