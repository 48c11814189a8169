// Package health answers the ops listener's /healthz and /readyz.
//
// /healthz: the process is alive and serving; it reports NATS but does not
// fail on it, so that an orchestrator does not restart every replica during
// a NATS outage (they reconnect by themselves). /readyz: this replica can do
// its work now: NATS connected, JetStream answering with room to store, every stream present,
// every target's own readiness (e.g. ingest's first AD sync). Both list one
// line per check and the lease holders, for humans and probes alike.
package health

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/shared/metrics"
	"github.com/pwsync/pwsync/shared/natsx"
)

// Target is one service's own readiness.
type Target struct {
	Name  string
	Ready func() bool
	// Detail, when set, adds what the target is using (e.g. the DC in use).
	Detail func() string
}

// Checker runs the checks. Streams are the streams that must exist.
type Checker struct {
	NC           *nats.Conn
	JS           jetstream.JetStream
	Streams      []string
	LeasesBucket string // "" = no lease report
	Targets      []Target
	Timeout      time.Duration // per request, default 2 s
	// StoreLimit is the embedded server's JetStream storage limit in bytes,
	// used when the account has none (0 = unknown: not checked).
	StoreLimit int64
	// StoreError says why the store cannot be written (the embedded
	// server's disk full or unwritable), nil while it can; nil = not checked.
	StoreError func() error
}

// Result is one check's outcome.
type Result struct {
	Name   string
	OK     bool
	Detail string
}

// Register adds /healthz and /readyz to mux.
func (c *Checker) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		res := []Result{{Name: "process", OK: true, Detail: "serving"}, c.natsConnected()}
		res = append(res, c.leases(r.Context())...)
		write(w, http.StatusOK, res)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		res := c.Ready(r.Context())
		status := http.StatusOK
		if !allOK(res) {
			status = http.StatusServiceUnavailable
		}
		res = append(res, c.leases(r.Context())...)
		write(w, status, res)
	})
}

// Ready runs the readiness checks.
func (c *Checker) Ready(ctx context.Context) []Result {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res := []Result{c.natsConnected()}
	if !res[0].OK {
		// Everything below would only wait for the timeout.
		res = append(res, Result{Name: "jetstream", Detail: "skipped: nats not connected"})
	} else {
		res = append(res, c.jetstream(ctx)...)
	}
	if c.StoreError != nil {
		r := Result{Name: "jetstream store", OK: true, Detail: "writable"}
		if err := c.StoreError(); err != nil {
			r.OK, r.Detail = false, err.Error()
		}
		res = append(res, r)
	}
	for _, t := range c.Targets {
		r := Result{Name: t.Name, OK: t.Ready()}
		r.Detail = map[bool]string{true: "ready", false: "not ready (e.g. first sync not done)"}[r.OK]
		if t.Detail != nil {
			if d := t.Detail(); d != "" {
				r.Detail += "; " + d
			}
		}
		res = append(res, r)
	}
	return res
}

func (c *Checker) natsConnected() Result {
	if c.NC.IsConnected() {
		return Result{Name: "nats", OK: true, Detail: "connected to " + c.NC.ConnectedUrlRedacted()}
	}
	return Result{Name: "nats", Detail: "not connected (" + c.NC.Status().String() + ")"}
}

func (c *Checker) jetstream(ctx context.Context) []Result {
	// AccountInfo is the cheapest call that needs a working JetStream (a
	// meta leader on a cluster).
	info, err := c.JS.AccountInfo(ctx)
	if err != nil {
		return []Result{{Name: "jetstream", Detail: err.Error()}}
	}
	res := []Result{{Name: "jetstream", OK: true, Detail: fmt.Sprintf("%d streams, %d consumers", info.Streams, info.Consumers)}}
	// A full store refuses every publish ("insufficient resources"): nothing
	// is lost (sources retry), but nothing moves either.
	st := natsx.Storage{Used: int64(info.Store), Limit: info.Limits.MaxStore}
	if st.Limit <= 0 {
		st.Limit = c.StoreLimit
	}
	if st.Limit > 0 {
		r := Result{Name: "jetstream storage", OK: !st.Full(), Detail: st.String()}
		if !r.OK {
			r.Detail = "full: " + r.Detail
		}
		res = append(res, r)
	}
	for _, name := range c.Streams {
		r := Result{Name: "stream " + name}
		if _, err := c.JS.Stream(ctx, name); err != nil {
			r.Detail = err.Error()
		} else {
			r.OK, r.Detail = true, "present"
		}
		res = append(res, r)
	}
	return res
}

// leases reports who holds each lease; informational, never a failure.
func (c *Checker) leases(ctx context.Context) []Result {
	if c.LeasesBucket == "" || !c.NC.IsConnected() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	holders, err := metrics.LeaseHolders(ctx, c.JS, c.LeasesBucket)
	if err != nil {
		return []Result{{Name: "leases", OK: true, Detail: "unknown: " + err.Error()}}
	}
	names := make([]string, 0, len(holders))
	for n := range holders {
		names = append(names, n)
	}
	slices.Sort(names)
	var res []Result
	for _, n := range names {
		res = append(res, Result{Name: "lease " + n, OK: true, Detail: "held by " + holders[n]})
	}
	return res
}

func allOK(res []Result) bool {
	for _, r := range res {
		if !r.OK {
			return false
		}
	}
	return true
}

func write(w http.ResponseWriter, status int, res []Result) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	for _, r := range res {
		mark := "ok  "
		if !r.OK {
			mark = "FAIL"
		}
		io.WriteString(w, fmt.Sprintf("%s %s: %s\n", mark, r.Name, r.Detail))
	}
}
