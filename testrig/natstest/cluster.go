package natstest

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/natsx"
)

// Cluster is a JetStream cluster of real nats-servers in this process, on
// loopback, each with its own store: tests stop nodes to see the rest carry on.
type Cluster struct {
	Servers []*server.Server // nil once stopped (in-process nodes)
	urls    []string
	procs   []*exec.Cmd // nodes in their own processes (RunClusterProcesses)
	status  []string    // their readiness files
	exited  []chan struct{}
}

// RunCluster starts n clustered servers and waits until JetStream has a
// meta leader (streams can be created); cleanup stops them.
func RunCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	clientPorts, routePorts, routes := clusterPorts(t, n)
	c := &Cluster{}
	for i := range n {
		opts, err := nodeSpec{Name: fmt.Sprintf("n%d", i+1), Port: clientPorts[i], RoutePort: routePorts[i],
			Routes: routes, StoreDir: t.TempDir()}.options()
		if err != nil {
			t.Fatal(err)
		}
		srv, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("nats node %d: %v", i+1, err)
		}
		srv.Start()
		c.Servers = append(c.Servers, srv)
		c.urls = append(c.urls, fmt.Sprintf("nats://127.0.0.1:%d", clientPorts[i]))
	}
	t.Cleanup(func() {
		for i := range c.Servers {
			c.Stop(i)
		}
	})
	for i, s := range c.Servers {
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("nats node %d not ready", i+1)
		}
	}
	c.waitMetaLeader(t)
	return c
}

// waitMetaLeader waits until JetStream answers (a meta leader is elected).
func (c *Cluster) waitMetaLeader(t testing.TB) {
	t.Helper()
	conn := c.Connect(t)
	defer conn.NC.Close()
	err := retryFor(context.Background(), 20*time.Second, 2*time.Second, func(ctx context.Context) error {
		_, err := conn.JS.AccountInfo(ctx)
		return err
	})
	if err != nil {
		t.Fatalf("jetstream cluster has no meta leader after 20s: %v", err)
	}
}

// retryFor calls fn until it succeeds or total has passed, and returns its
// last error. Each call has its own timeout of try: one call stuck on a lost
// leader must not use up the whole wait while a new leader is elected.
func retryFor(ctx context.Context, total, try time.Duration, fn func(context.Context) error) error {
	deadline := time.Now().Add(total)
	for {
		tctx, cancel := context.WithTimeout(ctx, try)
		err := fn(tctx)
		cancel()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// URL is every node's client URL, comma separated (nats.url).
func (c *Cluster) URL() string { return strings.Join(c.urls, ",") }

// Stop shuts in-process node i down (idempotent).
func (c *Cluster) Stop(i int) {
	if i >= len(c.Servers) {
		return
	}
	if s := c.Servers[i]; s != nil {
		s.Shutdown()
		s.WaitForShutdown()
		c.Servers[i] = nil
	}
}

// Connect opens a client connection to the cluster (any node), closed at cleanup.
func (c *Cluster) Connect(t testing.TB) *natsx.Conn {
	t.Helper()
	conn, err := natsx.Connect(natsx.ConnectConfig{URL: c.URL(), Name: t.Name()}, zerolog.Nop())
	if err != nil {
		t.Fatalf("connecting to the nats cluster: %v", err)
	}
	t.Cleanup(conn.NC.Close)
	return conn
}

// EnsureTopology creates pwsync's topology with the given replicas.
func EnsureTopology(t testing.TB, js jetstream.JetStream, replicas int) {
	t.Helper()
	o := natsx.DefaultOptions()
	o.Replicas = replicas
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := natsx.NewTopology(o).Ensure(ctx, js); err != nil {
		t.Fatalf("ensuring topology R%d: %v", replicas, err)
	}
}

// clusterPorts picks n client and n route ports, and the route URLs.
func clusterPorts(t testing.TB, n int) (client, route []int, routes []string) {
	client, route = freePorts(t, n), freePorts(t, n)
	for _, p := range route {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	return client, route, routes
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var out []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}
