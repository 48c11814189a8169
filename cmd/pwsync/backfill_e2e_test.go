package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/logx"
	"github.com/pwsync/pwsync/testrig/adtest"
)

// editConfig rewrites the rendered config file (the harness template has
// no key for what these tests turn).
func editConfig(t *testing.T, path string, pairs ...string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("config has no %q", pairs[i])
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// runStoppable runs pwsync in process on the config file as it is, and
// returns a stop that waits for it: these tests restart it.
func (s *stack) runStoppable(t *testing.T, n int) (stop func()) {
	t.Helper()
	cfg, _, err := config.Load(s.cfgPath, config.AllTargets, os.Getenv)
	if err != nil {
		t.Fatalf("loading config: %v", err)
	}
	logFile, err := os.Create(filepath.Join(s.dir, fmt.Sprintf("pwsync-%d.log", n)))
	if err != nil {
		t.Fatal(err)
	}
	log, _ := logx.New(logFile, cfg.Log.Level, "json")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, config.AllTargets, log) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("pwsync run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("pwsync did not stop within 20s")
		}
		logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logFile.Name()); err == nil {
				t.Logf("pwsync log %d (tail):\n%s", n, tail(string(b), 8000))
			}
		}
	}
	t.Cleanup(stop)
	s.waitReady(t, done)
	return stop
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// backfillCLI runs `pwsync backfill ...` against the stack's admin API.
func backfillCLI(t *testing.T, a *adminStack, token string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	all := append([]string{"backfill"}, args[0])
	all = append(all, "--admin-url", a.URL(), "--token", token, "--ca-file", a.CA)
	all = append(all, args[1:]...)
	err := dispatch(context.Background(), all, &out, &out)
	return out.String(), err
}

// heldBatch waits for `pwsync backfill status` to list a held batch and
// returns its ID.
func heldBatch(t *testing.T, a *adminStack) string {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, err := backfillCLI(t, a, a.Viewer, "status")
		if err == nil {
			for _, line := range strings.Split(out, "\n") {
				if f := strings.Fields(line); len(f) > 3 && f[3] == "held" {
					return f[0]
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no held backfill: %s %v", out, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestBackfillThresholdEndToEnd: pwsync's first start on a domain where
// more users are flagged than forced_change.backfill_threshold writes
// nothing to Graph, keeps holding across a restart, and writes each user
// once when an approver approves with `pwsync backfill approve`.
func TestBackfillThresholdEndToEnd(t *testing.T) {
	s := newStack(t, stackOpts{})
	a := s.withAdmin(t)
	var ids []string
	for i := range 4 {
		u := s.dc.CreateUser(t, s.ou, fmt.Sprintf("bf-held-%d", i), adtest.UserOpts{Password: "Start.Passw0rd-1", MustChange: true})
		ids = append(ids, s.cloudUser(u, false))
	}
	s.writeConfig(t)
	editConfig(t, s.cfgPath, "evaluator:\n", "evaluator:\n  forced_change: {backfill_threshold: 3}\n")

	stop := s.runStoppable(t, 1)
	id := heldBatch(t, a)
	out, _ := backfillCLI(t, a, a.Viewer, "status", id)
	if !strings.Contains(out, "users      4 (threshold 3)") || !strings.Contains(out, "bf-held-0") {
		t.Errorf("status of the held batch:\n%s", out)
	}
	for _, cid := range ids {
		if w := s.writes(cid); len(w) != 0 {
			t.Fatalf("written while held: %v", w)
		}
	}

	stop() // a restart keeps the hold
	s.runStoppable(t, 2)
	time.Sleep(3 * time.Second)
	if got := heldBatch(t, a); got != id {
		t.Fatalf("after a restart the held batch is %s, want %s", got, id)
	}
	for _, cid := range ids {
		if w := s.writes(cid); len(w) != 0 {
			t.Fatalf("written after a restart while held: %v", w)
		}
	}

	if _, err := backfillCLI(t, a, a.Viewer, "approve", id); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("a viewer approved: %v", err)
	}
	out, err := backfillCLI(t, a, a.Approver, "approve", id)
	if err != nil || !strings.Contains(out, "status     approved") || !strings.Contains(out, "decided by e2e-approver") {
		t.Fatalf("approve: %v\n%s", err, out)
	}
	s.waitRequiredOnce(t, ids)
}

// waitRequiredOnce waits for each user's require-change write and checks
// that it was made once (what follows it, e.g. the fallback for a flag-only
// PATCH that changed nothing, is the actuator's business).
func (s *stack) waitRequiredOnce(t *testing.T, ids []string) {
	t.Helper()
	for _, cid := range ids {
		waitFor(t, 60*time.Second, "the require-change write of "+cid, func() bool { return len(s.writes(cid)) > 0 })
	}
	time.Sleep(2 * time.Second)
	for _, cid := range ids {
		if n := countWrites(s.writes(cid), "PATCH force=true"); n != 1 {
			t.Errorf("writes for %s = %v: %d require-change PATCHes, want 1", cid, s.writes(cid), n)
		}
	}
}

func countWrites(ws []string, prefix string) int {
	n := 0
	for _, w := range ws {
		if strings.HasPrefix(w, prefix) {
			n++
		}
	}
	return n
}

// TestReevaluateAfterPolicyChangeEndToEnd: users pwsync knew while
// forced_change was off get their decision once when it is turned on, and a
// second restart with the same policy writes nothing more.
func TestReevaluateAfterPolicyChangeEndToEnd(t *testing.T) {
	s := newStack(t, stackOpts{})
	var ids []string
	for i := range 2 {
		u := s.dc.CreateUser(t, s.ou, fmt.Sprintf("bf-re-%d", i), adtest.UserOpts{Password: "Start.Passw0rd-1", MustChange: true})
		ids = append(ids, s.cloudUser(u, false))
	}
	s.writeConfig(t)
	// The pass re-evaluates every user of the shared DC (thousands after
	// the other packages' tests) before its batch is counted and released:
	// at the default 20 users/s that is minutes.
	editConfig(t, s.cfgPath, "evaluator:\n", "evaluator:\n  reevaluate: {rate: 2000}\n  forced_change: {enabled: false}\n")
	stop := s.runStoppable(t, 1)
	time.Sleep(5 * time.Second) // the first full sync has stored the users
	stop()
	for _, cid := range ids {
		if w := s.writes(cid); len(w) != 0 {
			t.Fatalf("written with the rule off: %v", w)
		}
	}

	editConfig(t, s.cfgPath, "forced_change: {enabled: false}", "forced_change: {enabled: true}")
	stop = s.runStoppable(t, 2)
	s.waitRequiredOnce(t, ids)
	before := map[string]int{}
	for _, cid := range ids {
		before[cid] = len(s.writes(cid))
	}
	stop()

	s.runStoppable(t, 3)
	time.Sleep(5 * time.Second)
	for _, cid := range ids {
		if w := s.writes(cid); len(w) != before[cid] {
			t.Fatalf("after a second restart: %v, want no more than the %d before", w, before[cid])
		}
	}
}
