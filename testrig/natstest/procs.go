package natstest

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// envNode carries a node's options to a child process (ServeNodeIfChild).
const envNode = "PWSYNC_NATSTEST_NODE"

type nodeSpec struct {
	Name       string   `json:"name"`
	Port       int      `json:"port"`
	RoutePort  int      `json:"route_port"`
	Routes     []string `json:"routes"`
	StoreDir   string   `json:"store_dir"`
	ParentPID  int      `json:"parent_pid"`
	StatusFile string   `json:"status_file"`
}

func (n nodeSpec) options() (*server.Options, error) {
	var routes []*url.URL
	for _, r := range n.Routes {
		u, err := url.Parse(r)
		if err != nil {
			return nil, fmt.Errorf("route %q: %w", r, err)
		}
		routes = append(routes, u)
	}
	return &server.Options{
		ServerName: n.Name, Host: "127.0.0.1", Port: n.Port,
		JetStream: true, StoreDir: n.StoreDir, NoLog: true, NoSigs: true,
		Cluster: server.ClusterOpts{Name: "pwsync-test", Host: "127.0.0.1", Port: n.RoutePort},
		Routes:  routes,
	}, nil
}

// ServeNodeIfChild runs a nats-server node and never returns when this
// process was started by RunClusterProcesses; otherwise it returns at once.
// A test binary that uses RunClusterProcesses calls it first in TestMain.
func ServeNodeIfChild() {
	spec := os.Getenv(envNode)
	if spec == "" {
		return
	}
	var n nodeSpec
	if err := json.Unmarshal([]byte(spec), &n); err != nil {
		fmt.Fprintln(os.Stderr, "natstest node:", err)
		os.Exit(2)
	}
	opts, err := n.options()
	if err == nil {
		var srv *server.Server
		if srv, err = server.NewServer(opts); err == nil {
			srv.Start()
			if !srv.ReadyForConnections(20 * time.Second) {
				err = fmt.Errorf("not ready after 20s")
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "natstest node "+n.Name+":", err)
		os.Exit(2)
	}
	_ = os.WriteFile(n.StatusFile, []byte("ready"), 0o600)
	// Ends by SIGKILL (the test's kill) or SIGTERM (cleanup), or when the
	// test process is gone (a crashed test must not leave nodes behind).
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	for {
		select {
		case <-sig:
			os.Exit(0)
		case <-time.After(time.Second):
			if os.Getppid() != n.ParentPID {
				os.Exit(0)
			}
		}
	}
}

// RunClusterProcesses starts n clustered nats-servers, each in its own
// process (the test binary re-executed: see ServeNodeIfChild), so that
// Kill is a real SIGKILL: no shutdown, no leadership handover, nothing
// flushed. It waits for a JetStream meta leader; cleanup stops them all.
func RunClusterProcesses(t testing.TB, n int) *Cluster {
	t.Helper()
	clientPorts, routePorts, routes := clusterPorts(t, n)
	c := &Cluster{procs: make([]*exec.Cmd, n)}
	dir := t.TempDir()
	for i := range n {
		spec := nodeSpec{Name: fmt.Sprintf("n%d", i+1), Port: clientPorts[i], RoutePort: routePorts[i], Routes: routes,
			StoreDir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)), ParentPID: os.Getpid(),
			StatusFile: filepath.Join(dir, fmt.Sprintf("n%d.ready", i+1))}
		b, _ := json.Marshal(spec)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envNode+"="+string(b))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting nats node %d: %v", i+1, err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		c.procs[i], c.exited = cmd, append(c.exited, exited)
		c.urls = append(c.urls, fmt.Sprintf("nats://127.0.0.1:%d", clientPorts[i]))
		c.status = append(c.status, spec.StatusFile)
	}
	t.Cleanup(func() {
		for _, p := range c.procs {
			if p != nil {
				_ = p.Process.Signal(syscall.SIGTERM)
			}
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for _, f := range c.status {
		for {
			if _, err := os.Stat(f); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("nats node %s not ready after 30s (does TestMain call natstest.ServeNodeIfChild?)", f)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	c.waitMetaLeader(t)
	return c
}

// Kill ends node i's process with SIGKILL (idempotent); only for a
// cluster of RunClusterProcesses.
func (c *Cluster) Kill(t testing.TB, i int) {
	t.Helper()
	if c.procs == nil {
		t.Fatal("natstest: Kill needs RunClusterProcesses (in-process nodes can only Stop)")
	}
	if p := c.procs[i]; p != nil {
		if err := p.Process.Kill(); err != nil {
			t.Fatalf("killing nats node %d: %v", i+1, err)
		}
		select { // the signal is asynchronous: gone means reaped
		case <-c.exited[i]:
		case <-time.After(10 * time.Second):
			t.Fatalf("nats node %d still running 10s after SIGKILL", i+1)
		}
		c.procs[i] = nil
	}
}
