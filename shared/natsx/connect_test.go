package natsx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// syncBuffer is a log sink that the server's goroutines may write to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// nonLoopbackIP is an address of this host that is not loopback, or "".
func nonLoopbackIP() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return ""
}

func TestConnectWarnsOnPlaintextBeyondLoopback(t *testing.T) {
	ip := nonLoopbackIP()
	if ip == "" {
		t.Skip("this host has no non-loopback IPv4 address to connect through")
	}
	emb, err := StartEmbedded(EmbeddedConfig{DataDir: t.TempDir(), Listen: "0.0.0.0:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	_, port, err := net.SplitHostPort(strings.TrimPrefix(emb.ClientURL(), "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host string
		warn bool
	}{{"127.0.0.1", false}, {ip, true}} {
		var buf syncBuffer
		conn, err := Connect(ConnectConfig{URL: "nats://" + net.JoinHostPort(tc.host, port), Name: "test"}, zerolog.New(&buf))
		if err != nil {
			t.Fatal(err)
		}
		conn.NC.Close()
		if got := strings.Contains(buf.String(), "nats connection is not encrypted"); got != tc.warn {
			t.Errorf("plaintext connection to %s: warned %v, want %v; log:\n%s", tc.host, got, tc.warn, buf.String())
		}
	}
	var buf syncBuffer
	conn, err := Connect(ConnectConfig{Embedded: emb, Name: "test"}, zerolog.New(&buf))
	if err != nil {
		t.Fatal(err)
	}
	conn.NC.Close()
	if strings.Contains(buf.String(), "not encrypted") {
		t.Errorf("an in-process connection warned: %s", buf.String())
	}
}

// TestEmbeddedReportsDiskFull runs the embedded server on a small tmpfs and
// fills it: a real ENOSPC. The server reports it only in its log; Embedded
// must forward that to pwsync's log and hold it as StorageError.
func TestEmbeddedReportsDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=8m"); err != nil {
		t.Fatalf("mounting a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	var buf syncBuffer
	log := zerolog.New(&buf)
	emb, err := StartEmbedded(EmbeddedConfig{DataDir: dir, Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	conn, err := Connect(ConnectConfig{Embedded: emb, Name: "test"}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.NC.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := conn.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.JS.Publish(ctx, "t.x", []byte("before")); err != nil {
		t.Fatal(err)
	}
	if err := emb.StorageError(); err != nil {
		t.Fatalf("StorageError before the disk is full: %v", err)
	}
	fillDisk(t, filepath.Join(dir, "filler"))
	for i := 0; i < 50 && emb.StorageError() == nil; i++ {
		pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, _ = conn.JS.Publish(pctx, "t.x", bytes.Repeat([]byte("x"), 8<<10))
		pcancel()
	}
	err = emb.StorageError()
	if err == nil || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("StorageError with the disk full = %v, want no space left on device", err)
	}
	select {
	case <-emb.StorageFailed():
	default:
		t.Error("StorageFailed is not closed")
	}
	if !strings.Contains(buf.String(), `"component":"nats-server"`) || !strings.Contains(buf.String(), "no space left on device") {
		t.Errorf("the server's error is not in the log:\n%s", buf.String())
	}
}

// fillDisk writes path until the file system has no byte left.
func fillDisk(t testing.TB, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for size := 1 << 20; size > 0; size /= 2 {
		chunk := make([]byte, size)
		for {
			if _, err := f.Write(chunk); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("filling %s: %v", path, err)
				}
				break
			}
		}
	}
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.ENOSPC) {
		t.Fatal(fmt.Errorf("syncing %s: %w", path, err))
	}
}
