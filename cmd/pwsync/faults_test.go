package main

// Fault tests (issue 7): each injects a fault into a running pwsync over real
// Samba AD, real NATS and the Graph simulator, then counts, per AD change,
// the Graph writes that took effect (the simulator's effects log: whatever
// was answered, a lost answer included; a repeated group add's "already
// exist" too) and the action outcomes in the AUDIT stream. Lost = a change
// with no write or no "ok" outcome; doubled = a write of one kind that took
// effect more than once. Each test logs a FIGURES line with what it
// injected and found.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/adtest"
	"github.com/pwsync/pwsync/testrig/cutproxy"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// natsOutage is how long NATS stays away: the 60 s, or
// PWSYNC_NATS_OUTAGE (a duration) for local iteration, e.g. 8s: the
// mechanics (reconnect, backoff, resume) are the same, only the backoff
// delays grow with the outage.
func natsOutage() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("PWSYNC_NATS_OUTAGE")); err == nil && d > 0 {
		return d
	}
	return 60 * time.Second
}

// extNATS is a NATS server outside pwsync (nats.url) that the test stops and
// starts again on the same port and store directory.
type extNATS struct {
	addr, dir string
	emb       *natsx.Embedded
}

func startExtNATS(t testing.TB) *extNATS {
	t.Helper()
	n := &extNATS{addr: freeAddr(t), dir: t.TempDir()}
	n.start(t)
	t.Cleanup(n.stop)
	return n
}

func (n *extNATS) start(t testing.TB) {
	t.Helper()
	emb, err := natsx.StartEmbedded(natsx.EmbeddedConfig{DataDir: n.dir, Listen: n.addr})
	if err != nil {
		t.Fatalf("starting nats on %s: %v", n.addr, err)
	}
	n.emb = emb
}

func (n *extNATS) stop() {
	if n.emb != nil {
		n.emb.Shutdown()
		n.emb = nil
	}
}

func (n *extNATS) url() string { return "nats://" + n.addr }

// natsConn connects the test itself to the NATS pwsync uses.
func natsConn(t testing.TB, url string) *natsx.Conn {
	t.Helper()
	conn, err := natsx.Connect(natsx.ConnectConfig{URL: url, Name: "fault-test"}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.NC.Close)
	return conn
}

// streamMsgs returns every message of a stream, oldest first.
func streamMsgs(t testing.TB, js jetstream.JetStream, name string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("opening stream %s: %v", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", name, err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("getting %s message %d: %v", name, seq, err)
		}
		out = append(out, m)
	}
	return out
}

// streamCount is the number of messages a stream holds.
func streamCount(t testing.TB, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("opening stream %s: %v", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", name, err)
	}
	return info.State.Msgs
}

func auditRecords(t testing.TB, js jetstream.JetStream) []events.AuditRecord {
	t.Helper()
	var out []events.AuditRecord
	for _, m := range streamMsgs(t, js, natsx.StreamAudit) {
		var r events.AuditRecord
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatalf("audit record %d: %v", m.Sequence, err)
		}
		out = append(out, r)
	}
	return out
}

// effective counts a cloud user's Graph writes that took effect, by kind,
// from the simulator's effects log: a write that Graph applied and whose
// answer was lost (5xx or none) counts, and so does a group add answered
// "already exist" (the same add again).
func (s *stack) effective(cloudID string) map[string]int {
	out := map[string]int{}
	for _, e := range s.sim.Effects() {
		if !strings.Contains(e.Path, "/"+cloudID) && !bytes.Contains(e.Body, []byte(cloudID)) {
			continue
		}
		out[e.Method+" "+describe(graphsim.Request{Method: e.Method, Path: e.Path, Body: e.Body})]++
	}
	return out
}

// What a reset writes in Graph as it is, where a PATCH of the flag alone
// answers 204 and changes nothing (microsoft-graph-docs#4267): for a
// cloud-managed user the flag, then, its read-back finding it missing, the
// chain (actuator.cloud_managed.fallback: chain): revoke and the pending
// group. The trailing "*" means at least once: a PATCH that changed nothing
// cannot be told by any read from one never made, so after a lost answer it
// is sent again, and stays a no-op. A synced user gets the chain.
var (
	cloudReset  = []string{"PATCH force=true*", "POST revoke", "POST members"}
	cloudWrites = []string{"PATCH force=true 204", "POST revoke 200", "POST members 204"}
	syncedReset = []string{"POST revoke", "POST members"}
)

// ledger is what a fault test found: changes made, lost and doubled.
type ledger struct {
	changes, lost, doubled int
}

func (l ledger) report(t testing.TB, faults string) {
	t.Logf("FIGURES %s: faults %s; AD changes %d; lost %d; doubled %d", t.Name(), faults, l.changes, l.lost, l.doubled)
}

// expectOnce waits until every user has each expected kind of write at
// least once, then, after settle, checks that each took effect exactly once
// and nothing else did; it also checks that the AUDIT stream holds one "ok"
// outcome of the user's action and no dead letter.
func (s *stack) expectOnce(t testing.TB, js jetstream.JetStream, want map[string][]string, within, settle time.Duration) ledger {
	t.Helper()
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	okOutcomes := func() map[string]int {
		ok := map[string]int{}
		if js == nil {
			return ok
		}
		for _, r := range auditRecords(t, js) {
			if _, mine := want[r.CloudID]; !mine {
				continue
			}
			switch {
			case r.Outcome == events.OutcomeDeadLetter:
				ok[r.CloudID] += 1000 // reported below
			case r.Kind == "action" && r.Outcome == events.OutcomeOK && r.Action == string(events.ActionRequireChange):
				ok[r.CloudID]++
			}
		}
		return ok
	}
	deadline := time.Now().Add(within)
	for {
		missing := ""
		ok := okOutcomes()
		for _, id := range ids {
			if js != nil && ok[id] == 0 {
				missing = id + ": its audited outcome"
			}
			got := s.effective(id)
			for _, k := range want[id] {
				if got[strings.TrimSuffix(k, "*")] == 0 {
					missing = id + ": " + k
				}
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("after %v still missing %s", within, missing)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(settle)
	l := ledger{changes: len(ids)}
	for _, id := range ids {
		got := s.effective(id)
		lost := false
		for _, k := range want[id] {
			kind, noop := strings.CutSuffix(k, "*")
			switch n := got[kind]; {
			case n == 0:
				lost = true
				t.Errorf("%s: no %q took effect (writes %v)", id, kind, s.writes(id))
			case n > 1 && noop:
				t.Logf("%s: %q (a no-op in Graph) sent %d times", id, kind, n)
			case n > 1:
				l.doubled += n - 1
				t.Errorf("%s: %q took effect %d times (writes %v)", id, kind, n, s.writes(id))
			}
			delete(got, kind)
		}
		for k, n := range got {
			l.doubled += n
			t.Errorf("%s: unexpected write %q x%d (writes %v)", id, k, n, s.writes(id))
		}
		if lost {
			l.lost++
		}
	}
	if js == nil {
		return l
	}
	ok := okOutcomes()
	for _, id := range ids {
		if ok[id] != 1 {
			t.Errorf("audit: %d ok require_change outcomes for %s, want 1 (1000 per dead letter)", ok[id], id)
			if ok[id] == 0 {
				l.lost++
			}
		}
	}
	return l
}

// readyz returns the ops listener's /readyz status and body.
func (s *stack) readyz() (int, string) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + s.opsAddr + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// logCount counts the lines of pwsync's log that contain s.
func (s *stack) logCount(sub string) int {
	data, _ := os.ReadFile(filepath.Join(s.dir, "pwsync.log"))
	return strings.Count(string(data), sub)
}

// TestFaultNATSOutage stops the NATS server pwsync uses (nats.url) for
// natsOutage() (60 s), while one reset's Graph write is in flight (Graph
// holds the PATCH across the stop): the webhook answers 503 with
// Retry-After, /readyz fails, AD changes made meanwhile wait in AD (the
// watcher resumes from its cookie), nothing else reaches Graph, and the
// actuator, which wrote but could not record, waits; once NATS is back
// every change is written once (the in-flight one is not written again on
// redelivery) with one ok outcome each. Replayed notifications afterwards
// cause delta rounds, not writes.
func TestFaultNATSOutage(t *testing.T) {
	outage := natsOutage()
	n := startExtNATS(t)
	s := newStack(t, stackOpts{Webhook: true, NATSURL: n.url()})
	s.sim.SetForceChangeNoop(true) // Graph as it is, whatever the harness's default
	const pw = "Start.Passw0rd-1"
	before := s.dc.CreateUser(t, s.ou, "nats-before", adtest.UserOpts{Password: pw})
	beforeID := s.cloudUser(before, false)
	var during []adtest.User
	want := map[string][]string{beforeID: cloudReset}
	for i := range 4 {
		u := s.dc.CreateUser(t, s.ou, fmt.Sprintf("nats-during%d", i), adtest.UserOpts{Password: pw})
		during = append(during, u)
		want[s.cloudUser(u, i%2 == 1)] = map[bool][]string{false: cloudReset, true: syncedReset}[i%2 == 1]
	}
	// A reset whose Graph write is in flight when NATS goes: Graph holds
	// the PATCH (and then carries it out), so the actuator has written but
	// not yet recorded it; it must wait, and the redelivery after the
	// outage must find the flag set instead of writing again.
	inflight := s.dc.CreateUser(t, s.ou, "nats-inflight", adtest.UserOpts{Password: pw})
	inflightID := s.cloudUser(inflight, false)
	want[inflightID] = cloudReset
	s.startInProcess(t)
	waitFor(t, 30*time.Second, "a subscription to pwsync's webhook", func() bool { return len(s.sim.Subscriptions()) == 1 })
	sub := s.sim.Subscriptions()[0]
	s.dc.ForceChange(t, before.DN)
	s.waitWritesWithin(t, beforeID, cloudWrites, 0, 30*time.Second)

	const hold = 5 * time.Second
	held := make(chan struct{}, 1)
	s.sim.OnRequest(func(r graphsim.Request) {
		if r.Status == 0 && r.Method == http.MethodPatch && strings.HasSuffix(r.Path, "/"+inflightID) {
			select {
			case held <- struct{}{}:
			default:
			}
		}
	})
	t.Cleanup(func() { s.sim.OnRequest(nil) })
	s.sim.InjectFault(graphsim.Fault{Method: http.MethodPatch, PathPrefix: "/v1.0/users/" + inflightID, Hang: hold, Count: 1})
	s.dc.ForceChange(t, inflight.DN)
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("the in-flight reset's PATCH never reached Graph")
	}
	n.stop()
	down := time.Now()
	waitFor(t, 30*time.Second, "/readyz to fail", func() bool { code, _ := s.readyz(); return code == http.StatusServiceUnavailable })
	if _, body := s.readyz(); !strings.Contains(body, "nats") {
		t.Errorf("/readyz during the outage says %q, want the reason (nats)", body)
	}
	// Graph's delivery: 503 with Retry-After, so that it redelivers.
	note := fmt.Sprintf(`{"value":[{"changeType":"updated","clientState":%q,"resource":"Users/%s","subscriptionId":%q,`+
		`"subscriptionExpirationDateTime":"2099-01-01T00:00:00Z","tenantId":%q,"resourceData":{"id":%q}}]}`,
		sub.ClientState, beforeID, sub.ID, s.sim.TenantID(), beforeID)
	resp, err := s.hook.Post("https://"+s.hookAddr+"/graph/notifications", "application/json", strings.NewReader(note))
	if err != nil {
		t.Fatalf("POST to the webhook during the outage: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("webhook during the outage: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	for _, u := range during {
		s.dc.ForceChange(t, u.DN)
	}
	time.Sleep(time.Until(down.Add(outage))) // the fault's length, not an assertion
	// The held PATCH was answered while NATS was down: a write in flight
	// across the stop, not one that waited for NATS to come back.
	var inflightWrites []graphsim.Request
	for _, r := range s.requestsFor(inflightID) {
		if r.Method == http.MethodPatch {
			inflightWrites = append(inflightWrites, r)
		}
	}
	if len(inflightWrites) != 1 || inflightWrites[0].Status != http.StatusNoContent ||
		!inflightWrites[0].Time.Before(down) || !inflightWrites[0].Time.Add(inflightWrites[0].Duration).After(down) {
		t.Fatalf("the in-flight PATCH did not span the stop of NATS at %v: %+v", down.Format(time.StampMilli), inflightWrites)
	}
	for id := range want {
		if id != beforeID && id != inflightID && len(s.writes(id)) != 0 {
			t.Fatalf("Graph written for %s while NATS was down: %v", id, s.writes(id))
		}
	}
	n.start(t)
	l := s.expectOnce(t, natsConn(t, n.url()).JS, want, 60*time.Second+outage, 3*time.Second)
	waitFor(t, 30*time.Second, "/readyz to pass again", func() bool { code, _ := s.readyz(); return code == http.StatusOK })
	resp, err = s.hook.Post("https://"+s.hookAddr+"/graph/notifications", "application/json", strings.NewReader(note))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("webhook after the outage: %d, want 202", resp.StatusCode)
	}
	// A replay that gets past deduplication (after JetStream's window, or
	// with a new notification id) is accepted, but a notification only
	// triggers a delta round, which finds nothing changed: no write.
	replayed := time.Now()
	for i := range 3 {
		replay := strings.Replace(note, `{"changeType"`, fmt.Sprintf(`{"id":"replay-%d","changeType"`, i), 1)
		resp, err = s.hook.Post("https://"+s.hookAddr+"/graph/notifications", "application/json", strings.NewReader(replay))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Errorf("replayed notification: %d, want 202", resp.StatusCode)
		}
	}
	waitFor(t, 60*time.Second, "a delta round after the replays", func() bool {
		for _, r := range s.sim.Requests() {
			if strings.HasSuffix(r.Path, "/users/delta") && r.Time.After(replayed) {
				return true
			}
		}
		return false
	})
	// After an outage this takes up to the delta lease's TTL (15 s): the
	// holder lost its lease while it could not renew it.
	t.Logf("delta round %v after the replays", time.Since(replayed).Round(time.Second))
	time.Sleep(2 * time.Second) // what a stray write would need
	if w := s.writes(beforeID); fmt.Sprint(w) != fmt.Sprint(cloudWrites) {
		t.Errorf("writes after replayed notifications: %v", w)
	}
	// The watcher either waited in its publish (ingest retries it) or lost
	// its session and resumed from the cookie in KV; never a full resync.
	if n := s.logCount(`"full sync done"`); n != 1 {
		t.Errorf("%d full syncs, want 1: the watcher must resume from its cookie", n)
	}
	l.changes++ // the reset before the outage
	l.report(t, fmt.Sprintf("NATS down %v, 1 Graph write in flight across the stop", outage))
}

// TestFaultGraphStorm runs resets through a Graph that throttles (429 with
// short and long Retry-After, on writes and on a GET), fails (503, 502),
// resets connections and answers too late (past graph.timeout, while still
// carrying the write out), applies writes and then loses their answers (a
// 5xx or a reset after the write, or no answer at all), and whose token
// endpoint fails (503, reset): every action takes effect exactly once (by
// the simulator's effects, not its answers), every kind of fault was met,
// and no retry after a 429 came sooner than its Retry-After.
func TestFaultGraphStorm(t *testing.T) {
	// Tokens that MSAL deems stale 2 s after issue (it renews within 5 min
	// of expiry), so that pwsync asks the token endpoint during the storm.
	s := newStack(t, stackOpts{GraphTimeout: 2 * time.Second, SimTokenLifetime: 5*time.Minute + 2*time.Second})
	// The kinder world, where the flag-only PATCH takes: a lost answer to
	// it is settled by reading the flag back, which this test checks; a
	// flag that never takes cannot be read back (the other fault tests).
	s.sim.SetForceChangeNoop(false)
	s.opts.NATSListen = freeAddr(t)
	const pw = "Start.Passw0rd-1"
	want := map[string][]string{}
	var users []adtest.User
	for i := range 8 {
		u := s.dc.CreateUser(t, s.ou, fmt.Sprintf("storm%d", i), adtest.UserOpts{Password: pw})
		users = append(users, u)
		synced := i%2 == 1
		id := s.cloudUser(u, synced)
		want[id] = []string{"PATCH force=true"}
		if synced {
			want[id] = []string{"POST revoke", "POST members"}
		}
	}
	s.startInProcess(t)
	type fault = struct {
		method, prefix string
		suffix         string // the revoke, not the group add's membership check (also a POST /users/...)
		status         int
		retryAfter     time.Duration
		count          int
		hang           time.Duration
		reset, after   bool // after: the write takes effect, then its answer is lost
	}
	const revoke = "/revokeSignInSessions"
	storm := []fault{
		{method: http.MethodGet, prefix: "/v1.0/users", status: http.StatusServiceUnavailable, count: 3},
		{method: http.MethodGet, prefix: "/v1.0/users", status: http.StatusTooManyRequests, retryAfter: time.Second, count: 1},
		{method: http.MethodPatch, status: http.StatusTooManyRequests, retryAfter: time.Second, count: 2},
		{method: http.MethodPatch, reset: true, count: 2},
		{method: http.MethodPatch, hang: 4 * time.Second, count: 1},                                        // lost answer, write done
		{method: http.MethodPost, prefix: "/v1.0/users/", suffix: revoke, hang: 4 * time.Second, count: 1}, // revoke: lost answer
		{method: http.MethodPost, prefix: "/v1.0/users/", suffix: revoke, status: http.StatusServiceUnavailable, count: 2},
		{method: http.MethodPost, prefix: "/v1.0/users/", suffix: revoke, reset: true, count: 1},
		{method: http.MethodPost, prefix: "/v1.0/groups/", status: http.StatusTooManyRequests, retryAfter: 3 * time.Second, count: 1}, // long: back to JetStream
		{method: http.MethodPost, prefix: "/v1.0/groups/", hang: 4 * time.Second, count: 1},
		{method: http.MethodPost, prefix: "/v1.0/groups/", status: http.StatusBadGateway, count: 1},
		// Graph applies the write and the answer is lost.
		{method: http.MethodPatch, status: http.StatusServiceUnavailable, after: true, count: 1},
		{method: http.MethodPatch, reset: true, after: true, count: 1},
		{method: http.MethodPost, prefix: "/v1.0/users/", suffix: revoke, status: http.StatusInternalServerError, after: true, count: 1},
		{method: http.MethodPost, prefix: "/v1.0/users/", suffix: revoke, reset: true, after: true, count: 1},
		{method: http.MethodPost, prefix: "/v1.0/groups/", status: http.StatusServiceUnavailable, after: true, count: 1},
		{method: http.MethodPost, prefix: "/v1.0/groups/", hang: 4 * time.Second, reset: true, after: true, count: 1}, // never answered
	}
	// The token endpoint is not in the request log: that these were met is
	// checked by asking for a token afterwards, which works only once both
	// are spent.
	tokenPath := "/" + s.sim.TenantID() + "/oauth2/v2.0/token"
	tokenFaults := []fault{
		{method: http.MethodPost, prefix: tokenPath, status: http.StatusServiceUnavailable, retryAfter: time.Second, count: 1},
		{method: http.MethodPost, prefix: tokenPath, reset: true, count: 1},
	}
	kindOf := func(f fault) string {
		switch {
		case f.after:
			return "after"
		case f.reset:
			return "reset"
		case f.hang > 0:
			return "timeout"
		}
		return fmt.Sprint(f.status)
	}
	injected := map[string]int{}
	for _, f := range append(storm, tokenFaults...) {
		s.sim.InjectFault(graphsim.Fault{Method: f.method, PathPrefix: f.prefix, PathSuffix: f.suffix, Status: f.status,
			RetryAfter: f.retryAfter, Count: f.count, Hang: f.hang, Reset: f.reset, After: f.after})
	}
	for _, f := range storm {
		injected[kindOf(f)] += f.count
	}
	tokensBefore := s.sim.Stats().Tokens
	for _, u := range users {
		s.dc.ForceChange(t, u.DN)
	}
	conn := natsConn(t, "nats://"+s.opts.NATSListen)
	l := s.expectOnce(t, conn.JS, want, 90*time.Second, 3*time.Second)

	// Every kind of fault was met as often as injected: the storm really
	// happened. A hang ends when the client gives up (2 s after it started).
	reqs := s.sim.Requests()
	met := map[string]int{}
	for _, r := range reqs {
		switch {
		case r.Status == 0:
			met["reset"]++
		case r.Duration >= 1500*time.Millisecond:
			met["timeout"]++
		case r.Status == http.StatusTooManyRequests || r.Status >= 500:
			met[fmt.Sprint(r.Status)]++
		}
	}
	// A fault after the write: an effect whose request was answered with
	// an error or not at all.
	answer := map[string]int{}
	for _, r := range reqs {
		answer[r.Time.String()+r.Method+r.Path+string(r.Body)] = r.Status
	}
	for _, e := range s.sim.Effects() {
		if st, ok := answer[e.Time.String()+e.Method+e.Path+string(e.Body)]; ok && (st == 0 || st >= 500) {
			met["after"]++
		}
	}
	total := 0
	for kind, n := range injected {
		if met[kind] == 0 || met[kind] < n {
			t.Errorf("fault %s: met %d times, injected %d", kind, met[kind], n)
		}
		total += met[kind]
	}
	// Each retry after a 429 came no sooner than its Retry-After, counted
	// from when the answer left the simulator.
	retryAfter := func(r graphsim.Request) time.Duration {
		for _, f := range storm {
			if f.status == http.StatusTooManyRequests && f.method == r.Method && strings.HasPrefix(r.Path, f.prefix) && strings.HasSuffix(r.Path, f.suffix) {
				return f.retryAfter
			}
		}
		return 0
	}
	throttled := 0
	for i, r := range reqs {
		if r.Status != http.StatusTooManyRequests {
			continue
		}
		throttled++
		answered, wait := r.Time.Add(r.Duration), retryAfter(r)
		retried := false
		for _, next := range reqs[i+1:] {
			// The same request again (a group add's path is every user's; its body names the user).
			if next.Method == r.Method && next.Path == r.Path && next.Query == r.Query && bytes.Equal(next.Body, r.Body) {
				retried = true
				if gap := next.Time.Sub(answered); gap < wait {
					t.Errorf("%s %s retried %v after a 429 with Retry-After %v", r.Method, r.Path, gap.Round(time.Millisecond), wait)
				} else {
					t.Logf("%s %s retried %v after a 429 with Retry-After %v", r.Method, r.Path, gap.Round(time.Millisecond), wait)
				}
				break
			}
		}
		if !retried {
			t.Errorf("%s %s was never retried after its 429", r.Method, r.Path)
		}
	}
	if throttled != injected["429"] {
		t.Errorf("%d requests answered 429, want the %d injected", throttled, injected["429"])
	}
	// The token endpoint's faults were spent by pwsync: a token request
	// now gets a token.
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {s.sim.ClientID()},
		"client_secret": {s.secret}, "scope": {"https://graph.microsoft.com/.default"}}
	resp, err := s.sim.HTTPClient().PostForm(s.sim.URL()+tokenPath, form)
	if err != nil {
		t.Errorf("the token endpoint's faults were not all met by pwsync: %v", err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("the token endpoint's faults were not all met by pwsync: a token request got %d", resp.StatusCode)
		} else {
			met["token 503"], met["token reset"] = 1, 1
			total += 2
		}
	}
	tokens := s.sim.Stats().Tokens - tokensBefore - 1 // less the probe's
	t.Logf("faults met by kind: %v; %d tokens issued during the storm", met, tokens)
	l.report(t, fmt.Sprintf("%d Graph faults met (%v)", total, met))
}

// TestFaultDCOutageAndRejectedCookie cuts pwsync off the DC (a TCP proxy in
// front of LDAPS; the shared DC itself keeps running), changes AD meanwhile,
// and restores it: the change is written once. Then it replaces the saved
// DirSync cookie with one the DC does not accept and touches every user
// (new uSNChanged, nothing password-relevant): the watcher runs a full
// resync, the evaluator sees every user again, and no user gets a write.
func TestFaultDCOutageAndRejectedCookie(t *testing.T) {
	s := newStack(t, stackOpts{})
	s.sim.SetForceChangeNoop(true) // Graph as it is, whatever the harness's default
	target := strings.TrimPrefix(s.dc.LDAPSURL, "ldaps://")
	proxy := cutproxy.Start(t, target)
	s.opts.ADURL = "ldaps://" + proxy.Addr()
	s.opts.NATSListen = freeAddr(t)
	const pw = "Start.Passw0rd-1"
	flagged := s.dc.CreateUser(t, s.ou, "dc-flagged", adtest.UserOpts{Password: pw, MustChange: true})
	quiet := s.dc.CreateUser(t, s.ou, "dc-quiet", adtest.UserOpts{Password: pw})
	syncedQuiet := s.dc.CreateUser(t, s.ou, "dc-squiet", adtest.UserOpts{Password: pw})
	changed := s.dc.CreateUser(t, s.ou, "dc-changed", adtest.UserOpts{Password: pw})
	flaggedID, quietID := s.cloudUser(flagged, false), s.cloudUser(quiet, false)
	syncedQuietID, changedID := s.cloudUser(syncedQuiet, true), s.cloudUser(changed, false)
	s.startInProcess(t)
	conn := natsConn(t, "nats://"+s.opts.NATSListen)
	s.waitWritesWithin(t, flaggedID, cloudWrites, 0, 30*time.Second) // backfill

	// 1. The DC goes away; a helpdesk reset happens meanwhile; it comes back.
	proxy.Cut()
	waitFor(t, 30*time.Second, "/readyz to fail while the DC is away", func() bool { code, _ := s.readyz(); return code != http.StatusOK })
	s.dc.ForceChange(t, changed.DN)
	waitFor(t, 30*time.Second, "the watcher to retry", func() bool { return s.logCount("AD watch interrupted") >= 2 })
	if w := s.writes(changedID); len(w) != 0 {
		t.Fatalf("written while the DC was away: %v", w)
	}
	proxy.Restore()
	waitFor(t, 90*time.Second, "/readyz to pass again", func() bool { code, _ := s.readyz(); return code == http.StatusOK })
	l := s.expectOnce(t, conn.JS, map[string][]string{changedID: cloudReset}, 60*time.Second, 2*time.Second)

	// 2. A cookie the DC no longer accepts (e.g. the DC was restored from
	// backup): controlled full resync, no action storm.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cursors, err := conn.JS.KeyValue(ctx, natsx.BucketCursors)
	if err != nil {
		t.Fatal(err)
	}
	actionsBefore := streamCount(t, conn.JS, natsx.StreamActions)
	proxy.Cut()
	waitFor(t, 30*time.Second, "/readyz to fail while the DC is away", func() bool { code, _ := s.readyz(); return code != http.StatusOK })
	keys, err := cursors.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	corrupted := 0
	for _, k := range keys {
		if !strings.Contains(k, "dirsync") {
			continue
		}
		junk := make([]byte, 96)
		_, _ = rand.Read(junk)
		v, _ := json.Marshal(map[string][]byte{"users": junk, "deleted": junk})
		if _, err := cursors.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
		corrupted++
	}
	if corrupted != 1 {
		t.Fatalf("found %d DirSync cursors in %v, want 1", corrupted, keys)
	}
	// New uSNChanged for every user (description is not password-relevant), so
	// that the resync's events are new to JetStream's dedup and reach the
	// evaluator instead of being dropped as repeats.
	all := []adtest.User{flagged, quiet, syncedQuiet, changed}
	c := s.dc.Conn(t)
	usn := map[string]string{}
	for _, u := range all {
		m := ldap.NewModifyRequest(u.DN, nil)
		m.Replace("description", []string{"touched by " + t.Name()})
		if err := c.Modify(m); err != nil {
			t.Fatalf("touching %s: %v", u.DN, err)
		}
		usn[u.GUID] = s.dc.Read(t, u.DN, "uSNChanged").GetAttributeValue("uSNChanged")
	}
	proxy.Restore()
	waitFor(t, 90*time.Second, "a full resync after the rejected cookie", func() bool { return s.logCount(`"full sync done"`) >= 2 })
	if s.logCount("rejected a DirSync cookie") == 0 {
		t.Errorf("the log does not say that the DC rejected the cookie")
	}
	// The evaluator has taken the resync's events: each user's state in KV
	// "users" holds the new uSNChanged, seen by the full sync.
	users, err := conn.JS.KeyValue(ctx, natsx.BucketUsers)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, "the resync's events to be evaluated", func() bool {
		for _, u := range all {
			e, err := users.Get(ctx, events.KeySafe(u.GUID))
			if err != nil {
				return false
			}
			var st struct {
				AD events.ADUser `json:"ad"`
			}
			if json.Unmarshal(e.Value(), &st) != nil || fmt.Sprint(st.AD.USNChanged) != usn[u.GUID] || !st.AD.FullSync {
				return false
			}
		}
		return true
	})
	time.Sleep(2 * time.Second) // what the actuator would do with a stray action
	if n := streamCount(t, conn.JS, natsx.StreamActions); n != actionsBefore {
		t.Errorf("the full resync emitted %d actions, want 0", n-actionsBefore)
	}
	for id, w := range map[string][]string{flaggedID: cloudWrites, quietID: nil, syncedQuietID: nil, changedID: cloudWrites} {
		if got := s.writes(id); fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("writes for %s after the resync = %v, want %v", id, got, w)
			l.doubled++
		}
	}
	l.report(t, "DC cut twice; 1 rejected DirSync cookie (full resync of 4 users)")
}

// TestFaultKilledRepeatedly kills pwsync (SIGKILL) again and again while AD
// resets stream in, restarting it each time: at a random point of a
// round's resets, while Graph holds one of its writes, while it redelivers
// what a killed process held, and during its start (before it is ready).
// Every reset is written once; at least one kill cut a Graph write (the
// request reached Graph, its ok outcome had not been recorded).
func TestFaultKilledRepeatedly(t *testing.T) {
	kinds := []string{"random", "mid-write", "redelivery", "startup", "random", "mid-write"}
	resetRounds := 0
	for _, k := range kinds {
		if k != "redelivery" {
			resetRounds++
		}
	}
	s := newStack(t, stackOpts{})
	s.sim.SetForceChangeNoop(true) // Graph as it is, whatever the harness's default
	s.opts.NATSListen = freeAddr(t)
	const pw = "Start.Passw0rd-1"
	var users []adtest.User
	want := map[string][]string{}
	for i := range 2 * resetRounds {
		u := s.dc.CreateUser(t, s.ou, fmt.Sprintf("kill%d", i), adtest.UserOpts{Password: pw})
		users = append(users, u)
		synced := i%3 == 2
		id := s.cloudUser(u, synced)
		want[id] = cloudReset
		if synced {
			want[id] = syncedReset
		}
	}
	// Some writes are applied and then their answers lost (a 5xx, a reset),
	// after the same 300 ms: the restarted process meets those too.
	s.sim.InjectFault(graphsim.Fault{Method: http.MethodPost, PathPrefix: "/v1.0/users/", Status: http.StatusInternalServerError,
		After: true, Hang: 300 * time.Millisecond, Count: 2})
	s.sim.InjectFault(graphsim.Fault{Method: http.MethodPost, PathPrefix: "/v1.0/groups/", Reset: true,
		After: true, Hang: 300 * time.Millisecond, Count: 2})
	// A slow Graph (every write takes 300 ms, and is carried out even when the
	// client is gone) widens the window in which a kill lands between a write
	// and its idempotency record.
	s.sim.InjectFault(graphsim.Fault{Method: http.MethodPatch, Hang: 300 * time.Millisecond, Count: -1})
	s.sim.InjectFault(graphsim.Fault{Method: http.MethodPost, Hang: 300 * time.Millisecond, Count: -1})
	held := make(chan struct{}, 1)
	s.sim.OnRequest(func(r graphsim.Request) {
		if r.Status == 0 && r.Method != http.MethodGet {
			select {
			case held <- struct{}{}:
			default:
			}
		}
	})
	t.Cleanup(func() { s.sim.OnRequest(nil) })
	drain := func() {
		select {
		case <-held:
		default:
		}
	}
	p := s.startProcess(t)
	type kill struct {
		kind string
		at   time.Time
		note string
	}
	var killed []kill
	next, round := 0, 0
	for k, kind := range kinds {
		drain()
		if kind != "redelivery" {
			round++
			for ; next < len(users)*round/resetRounds; next++ {
				s.dc.ForceChange(t, users[next].DN)
			}
		}
		note := ""
		switch kind {
		case "random": // a random point of the resets' way through ingest, evaluator and actuator
			d := randomDuration(1500 * time.Millisecond)
			time.Sleep(d) // where the kill lands: the fault's timing, not an assertion
			note = d.Round(time.Millisecond).String()
		case "mid-write":
			select {
			case <-held:
			case <-time.After(60 * time.Second):
				t.Fatalf("round %d: no Graph write to kill pwsync in", k)
			}
		case "redelivery":
			// No new resets: what the last kill left undone comes back (the
			// watcher's cookie, pending messages, those held unacknowledged
			// after AckWait, 30 s); kill while Graph holds one of its writes.
			select {
			case <-held:
				note = "in a write left by the last kill"
			case <-time.After(45 * time.Second):
				note = "nothing came back"
			}
		case "startup": // the process was started without waiting for it to be ready
			d := randomDuration(2 * time.Second)
			time.Sleep(d)
			note = d.Round(time.Millisecond).String() + " after start"
		}
		_ = p.cmd.Process.Signal(os.Kill)
		killed = append(killed, kill{kind: kind, at: time.Now(), note: note})
		<-p.done
		if k+1 < len(kinds) && kinds[k+1] == "startup" {
			p = s.spawnProcess(t)
		} else {
			p = s.startProcess(t)
		}
	}
	for i, k := range killed {
		t.Logf("kill %d (%s) %s %s", i+1, k.kind, k.at.Format("15:04:05.000"), k.note)
	}
	// Messages a killed consumer held come back after AckWait (30 s).
	js := natsConn(t, "nats://"+s.opts.NATSListen).JS
	l := s.expectOnce(t, js, want, 120*time.Second, 3*time.Second)

	// Cut writes: in flight at a kill (arrived before it, answered after),
	// for a user whose ok outcome was not recorded before it.
	okAt := map[string]time.Time{} // cloud id -> when its ok outcome was stored
	for _, m := range streamMsgs(t, js, natsx.StreamAudit) {
		var r events.AuditRecord
		if json.Unmarshal(m.Data, &r) == nil && r.Kind == "action" && r.Outcome == events.OutcomeOK {
			if at, ok := okAt[r.CloudID]; !ok || m.Time.Before(at) {
				okAt[r.CloudID] = m.Time
			}
		}
	}
	cut := map[string]int{}
	for _, r := range s.sim.Requests() {
		if r.Method == http.MethodGet {
			continue
		}
		owner := ""
		for id := range want {
			if strings.Contains(r.Path, "/"+id) || bytes.Contains(r.Body, []byte(id)) {
				owner = id
			}
		}
		for _, k := range killed {
			if owner != "" && r.Time.Before(k.at) && !r.Time.Add(r.Duration).Before(k.at) && !okAt[owner].Before(k.at) {
				cut[k.kind]++
			}
		}
	}
	total := 0
	for _, n := range cut {
		total += n
	}
	if total == 0 {
		t.Errorf("no kill cut a Graph write: the test did not exercise a write without its record")
	}
	for _, f := range s.sim.Faults() {
		if f.After {
			t.Errorf("a fault after the write was not met: %+v", f)
		}
	}
	t.Logf("Graph writes cut by a kill, by kind of kill: %v", cut)
	l.report(t, fmt.Sprintf("%d kill -9 (%v), %d Graph writes cut", len(killed), kinds, total))
}

func randomDuration(limit time.Duration) time.Duration {
	var b [8]byte
	_, _ = rand.Read(b[:])
	n := int64(0)
	for _, c := range b {
		n = n<<8 | int64(c)
	}
	if n < 0 {
		n = -n
	}
	return time.Duration(n % int64(limit))
}

// TestFaultJetStreamFull fills the embedded JetStream's store
// (nats.embedded.max_store) with another stream's data: /readyz fails and
// says why, the log says why, a reset made meanwhile reaches no one but is
// not lost; once space is freed it is written exactly once.
func TestFaultJetStreamFull(t *testing.T) {
	s := newStack(t, stackOpts{NATSMaxStore: "16MiB"})
	s.sim.SetForceChangeNoop(true) // Graph as it is, whatever the harness's default
	s.opts.NATSListen = freeAddr(t)
	u := s.dc.CreateUser(t, s.ou, "full-reset", adtest.UserOpts{Password: "Start.Passw0rd-1"})
	id := s.cloudUser(u, false)
	s.startInProcess(t)
	conn := natsConn(t, "nats://"+s.opts.NATSListen)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := conn.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "FILLER", Subjects: []string{"filler.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	filled := false
	for _, size := range []int{512 << 10, 16 << 10} { // big chunks, then the last crumbs
		chunk := make([]byte, size)
		for range 4096 {
			if _, err := conn.JS.Publish(ctx, "filler.x", chunk); err != nil {
				if !strings.Contains(err.Error(), "insufficient resources") {
					t.Fatalf("filling the store: %v", err)
				}
				filled = true
				break
			}
		}
	}
	if !filled {
		t.Fatal("the store never filled up")
	}
	waitFor(t, 30*time.Second, "/readyz to fail", func() bool { code, _ := s.readyz(); return code == http.StatusServiceUnavailable })
	if _, body := s.readyz(); !strings.Contains(body, "FAIL jetstream storage: full") {
		t.Errorf("/readyz does not say the store is full:\n%s", body)
	}
	waitFor(t, 30*time.Second, "the log to say the store is full", func() bool { return s.logCount("jetstream storage full") > 0 })

	s.dc.ForceChange(t, u.DN)
	waitFor(t, 30*time.Second, "the watcher's publish to be refused", func() bool { return s.logCount("insufficient resources") > 0 })
	if w := s.writes(id); len(w) != 0 {
		t.Fatalf("written while the store was full: %v", w)
	}
	if err := conn.JS.DeleteStream(ctx, "FILLER"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "/readyz to pass again", func() bool { code, _ := s.readyz(); return code == http.StatusOK })
	l := s.expectOnce(t, conn.JS, map[string][]string{id: cloudReset}, 90*time.Second, 2*time.Second)
	l.report(t, "JetStream store full (16MiB max_store filled)")
}

// TestFaultJetStreamStoreFails makes the embedded JetStream's disk fail
// under a running pwsync (a child process), two ways:
//   - disk full: its data dir is a small tmpfs that the test fills with
//     another file, a real ENOSPC (not max_store, which JetStream counts
//     itself: TestFaultJetStreamFull);
//   - unwritable: pwsync runs as an unprivileged user (root cannot be
//     denied by permissions) and its store loses write permission. Files
//     already open stay writable, so nats-server notices at its next
//     stream-state flush (every 2 to 2.5 min) and shuts JetStream down.
//
// /readyz must fail naming jetstream and the log must say why; a reset made
// during the fault must not be lost: once the fault is removed and pwsync
// restarted (nats-server does not write to a failed store again before a
// restart), it is written exactly once.
func TestFaultJetStreamStoreFails(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a tmpfs, runs pwsync as another user")
	}
	for _, tc := range []struct {
		name, cause string
		setup       func(t *testing.T, s *stack, natsDir string)
		inject      func(t *testing.T, natsDir string)
		remove      func(t *testing.T, natsDir string)
		within      time.Duration // for the failure to show
	}{
		{
			name: "disk full", cause: "no space left on device", within: 90 * time.Second,
			setup: func(t *testing.T, s *stack, natsDir string) {
				if err := os.MkdirAll(natsDir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := syscall.Mount("tmpfs", natsDir, "tmpfs", 0, "size=48m,mode=0700"); err != nil {
					t.Fatalf("mounting a tmpfs on %s: %v", natsDir, err)
				}
				t.Cleanup(func() { _ = syscall.Unmount(natsDir, syscall.MNT_DETACH) })
			},
			inject: func(t *testing.T, natsDir string) { fillDisk(t, filepath.Join(natsDir, "filler")) },
			remove: func(t *testing.T, natsDir string) {
				if err := os.Remove(filepath.Join(natsDir, "filler")); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "unwritable", cause: "permission denied", within: 4 * time.Minute,
			setup: func(t *testing.T, s *stack, natsDir string) {
				const nobody = 65534
				// The child needs to reach its files: the test binary (copied
				// out of go test's private work dir), its dir, its store.
				bin := filepath.Join(s.dir, "pwsync.test")
				copyFile(t, os.Args[0], bin, 0o755)
				for _, d := range []string{filepath.Dir(s.dir), s.dir} {
					if err := os.Chmod(d, 0o711); err != nil {
						t.Fatal(err)
					}
				}
				if err := os.MkdirAll(natsDir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.Chown(natsDir, nobody, nobody); err != nil {
					t.Fatal(err)
				}
				s.opts.ChildBinary = bin
				s.opts.ChildCredential = &syscall.Credential{Uid: nobody, Gid: nobody}
			},
			inject: func(t *testing.T, natsDir string) { chmodTree(t, natsDir, false) },
			remove: func(t *testing.T, natsDir string) { chmodTree(t, natsDir, true) },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStack(t, stackOpts{})
			s.sim.SetForceChangeNoop(true) // Graph as it is, whatever the harness's default
			s.opts.NATSListen = freeAddr(t)
			natsDir := filepath.Join(s.dir, "nats")
			tc.setup(t, s, natsDir)
			u := s.dc.CreateUser(t, s.ou, "store-reset", adtest.UserOpts{Password: "Start.Passw0rd-1"})
			id := s.cloudUser(u, false)
			p := s.startProcess(t)

			tc.inject(t, natsDir)
			injected := time.Now()
			waitFor(t, tc.within, "/readyz to fail", func() bool { code, _ := s.readyz(); return code == http.StatusServiceUnavailable })
			failedAfter := time.Since(injected)
			waitFor(t, 30*time.Second, "/readyz to say why", func() bool {
				_, body := s.readyz()
				return strings.Contains(body, "FAIL jetstream store: jetstream store cannot be written") && strings.Contains(body, tc.cause)
			})
			waitFor(t, 30*time.Second, "the log to say why", func() bool {
				return s.logCount("jetstream store cannot be written") > 0 && s.logCount(tc.cause) > 0
			})
			// Made while the store is failing. An unwritable directory fails
			// each stream when it next opens a block file, not all at once:
			// this change may still pass through a stream whose file is open
			// (and be written now), or wait in AD until the restart. Either
			// way it is written exactly once, asserted after the restart.
			s.dc.ForceChange(t, u.DN)
			time.Sleep(5 * time.Second) // what a write would need; the fault's window, not an assertion
			during := s.writes(id)

			tc.remove(t, natsDir)
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(45 * time.Second):
				t.Errorf("pwsync did not stop within 45s of SIGTERM with a failed store")
				_ = p.cmd.Process.Kill()
				<-p.done
			}
			s.startProcess(t)
			l := s.expectOnce(t, natsConn(t, "nats://"+s.opts.NATSListen).JS, map[string][]string{id: cloudReset}, 90*time.Second, 2*time.Second)
			t.Logf("store failure seen %v after the fault; writes during it: %v", failedAfter.Round(time.Second), during)
			l.report(t, fmt.Sprintf("embedded JetStream store %s (%s), then restart", tc.name, tc.cause))
		})
	}
}

// fillDisk writes path until its file system has no byte left.
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
}

// chmodTree adds or removes write permission on every file and directory
// under root (root itself included).
func chmodTree(t testing.TB, root string, writable bool) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := info.Mode().Perm() &^ 0o222
		if writable {
			mode |= 0o200
		}
		return os.Chmod(p, mode)
	})
	if err != nil {
		t.Fatalf("chmod under %s: %v", root, err)
	}
}

func copyFile(t testing.TB, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
