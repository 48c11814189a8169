package auditship

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/metrics"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/natstest"
)

// resetRecords are the audit records of a forced reset of n users, as the
// evaluator and the actuator write them: a decision, the steps, the
// action. Each detail is unique ("u<user>#<seq>") so that a test can find
// every record and its order per user; some carry hostile text.
func resetRecords(n, round int) []events.AuditRecord {
	var out []events.AuditRecord
	steps := []string{"patch_password_profile", "verify_password_profile", "revoke_sessions"}
	for seq := 0; seq < 2+len(steps); seq++ {
		for u := range n {
			ref := events.UserRef{UPN: fmt.Sprintf("user%d@example.test", u), ObjectGUID: fmt.Sprintf("guid-%d", u), Domain: "example.test"}
			r := events.AuditRecord{EventID: fmt.Sprintf("ev-%d-%d", round, u), ActionID: fmt.Sprintf("act-%d-%d", round, u),
				Rule: "forced-change", User: ref, Outcome: events.OutcomeOK, Action: "require_password_change"}
			switch {
			case seq == 0:
				r.Kind, r.Outcome = "decision", "act"
			case seq <= len(steps):
				r.Kind, r.Step, r.HTTPStatus = "step", steps[seq-1], 204
			default:
				r.Kind = "action"
			}
			r.Detail = fmt.Sprintf("u%d#%d.%d", u, round, seq)
			if u == 1 && seq == 1 { // a hostile answer quoted in a detail
				r.Detail += " |x=y\nCEF:0|evil|evil|1|forged|forged|10|duser=root\r\n<13>1 - - - - - forged " + strings.Repeat("A", 9000)
			}
			out = append(out, r)
		}
	}
	return out
}

// key is what identifies a record at the receiving end: its detail's
// "u<user>#<round>.<seq>" prefix.
func key(detail string) string {
	k, _, _ := strings.Cut(detail, " ")
	return k
}

func write(t testing.TB, js jetstream.JetStream, recs []events.AuditRecord) {
	t.Helper()
	w := audit.NewWriter(natsx.NewPublisher(js), nil)
	for _, r := range recs {
		if err := w.Write(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
}

type shipperRun struct {
	cancel context.CancelFunc
	done   chan error
}

func runShipper(t testing.TB, js jetstream.JetStream, targets []Target) *shipperRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := New(ctx, Deps{JS: js, Pub: natsx.NewPublisher(js), Targets: targets, Holder: "test-" + t.Name(),
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel), FetchWait: 200 * time.Millisecond,
		RetryMin: 100 * time.Millisecond, RetryMax: 500 * time.Millisecond, AckWait: 10 * time.Second})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	r := &shipperRun{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- svc.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *shipperRun) stop() {
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
	}
}

// received decodes what rsyslog wrote for one app name (one sink) into
// record keys, in arrival order, with the decoded records.
func received(t testing.TB, rs *rsyslog, app string) ([]string, []events.AuditRecord) {
	t.Helper()
	var keys []string
	var recs []events.AuditRecord
	for _, l := range rs.lines(t) {
		if l.app != app {
			continue
		}
		var r events.AuditRecord
		if strings.HasPrefix(l.msg, "CEF:0|") {
			_, ext := parseCEF(t, l.msg)
			r = events.AuditRecord{Kind: ext["cat"], Detail: ext["msg"], Outcome: ext["outcome"],
				User: events.UserRef{UPN: ext["duser"], ObjectGUID: ext["duid"]}}
		} else if err := json.Unmarshal([]byte(l.msg), &r); err != nil {
			t.Fatalf("%s: rsyslog wrote a message that is not a record: %v: %q", app, err, l.msg)
		}
		if r.Kind != l.msgid {
			t.Fatalf("%s: MSGID %q but kind %q", app, l.msgid, r.Kind)
		}
		keys, recs = append(keys, key(r.Detail)), append(recs, r)
	}
	return keys, recs
}

// checkOncePerUserOrder checks that every wanted record arrived exactly
// once and that each user's records arrived in the order written.
func checkOncePerUserOrder(t testing.TB, sink string, want []events.AuditRecord, got []string, gotRecs []events.AuditRecord) {
	t.Helper()
	seen := map[string]int{}
	for _, k := range got {
		seen[k]++
	}
	for _, r := range want {
		if n := seen[key(r.Detail)]; n != 1 {
			t.Errorf("%s: record %s arrived %d times, want once", sink, key(r.Detail), n)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s: %d records arrived, want %d", sink, len(got), len(want))
	}
	last := map[string]int{} // user -> position in want of the last record seen
	pos := map[string]int{}
	for i, r := range want {
		pos[key(r.Detail)] = i
	}
	for i, k := range got {
		u := gotRecs[i].User.ObjectGUID
		if p, ok := pos[k]; ok {
			if prev, seen := last[u]; seen && p < prev {
				t.Errorf("%s: user %s: record %s arrived after a later one", sink, u, k)
			}
			last[u] = p
		}
	}
}

func waitFor(t testing.TB, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func syslogTarget(t testing.TB, rs *rsyslog, name, network, format, app string, kinds []string) Target {
	cfg := SyslogConfig{Network: network, Address: rs.tlsAddr, Format: format, MaxField: 4096, Version: "test",
		Header: syslogHeader{Facility: 10, Hostname: "pwsync-test", AppName: app}}
	if network == "udp" {
		cfg.Address = rs.udpAddr
	} else {
		cfg.TLS = rs.clientTLS(t)
	}
	return Target{Name: name, Kinds: kinds, Start: "all", BatchSize: 64, LagAlert: 1000, Sink: NewSyslog(cfg)}
}

// TestResetReachesEverySyslogSink: every record of a reset reaches each
// sink once, in order per user: RFC 5425 TLS with a client certificate
// (JSON and CEF, the CEF one filtered to steps and actions) and UDP.
func TestResetReachesEverySyslogSink(t *testing.T) {
	rs := startRsyslog(t)
	_, conn := natstest.Run(t)
	targets := []Target{
		syslogTarget(t, rs, "tls-json", "tls", "json", "pwsync-json", nil),
		syslogTarget(t, rs, "tls-cef", "tls", "cef", "pwsync-cef", []string{"step", "action"}),
		syslogTarget(t, rs, "udp-json", "udp", "json", "pwsync-udp", nil),
	}
	runShipper(t, conn.JS, targets)
	recs := resetRecords(8, 0)
	write(t, conn.JS, recs)
	var stepsAndActions []events.AuditRecord
	for _, r := range recs {
		if r.Kind == "step" || r.Kind == "action" {
			stepsAndActions = append(stepsAndActions, r)
		}
	}
	for _, c := range []struct {
		app  string
		want []events.AuditRecord
	}{{"pwsync-json", recs}, {"pwsync-cef", stepsAndActions}, {"pwsync-udp", recs}} {
		waitFor(t, c.app+" records", 30*time.Second, func() bool { k, _ := received(t, rs, c.app); return len(k) >= len(c.want) })
	}
	time.Sleep(500 * time.Millisecond) // duplicates, if any, would arrive now
	for _, c := range []struct {
		app  string
		want []events.AuditRecord
	}{{"pwsync-json", recs}, {"pwsync-cef", stepsAndActions}, {"pwsync-udp", recs}} {
		keys, got := received(t, rs, c.app)
		checkOncePerUserOrder(t, c.app, c.want, keys, got)
		hostileSeen := false
		for _, r := range got {
			if key(r.Detail) != "u1#0.1" {
				continue
			}
			hostileSeen = true
			// The hostile detail arrives whole inside its own record: its
			// line breaks and separators as data, cut to max_field.
			if !strings.HasSuffix(r.Detail, truncMark) || !strings.Contains(r.Detail, "|x=y\nCEF:0|evil") || len(r.Detail) > 4096 {
				t.Errorf("%s: hostile detail arrived as %d bytes: %.80q", c.app, len(r.Detail), r.Detail)
			}
		}
		if !hostileSeen {
			t.Errorf("%s: the record with the hostile detail did not arrive", c.app)
		}
	}
	if n := testutil.ToFloat64(metrics.AuditSinkDelivered.WithLabelValues("tls-json")); n < float64(len(recs)) {
		t.Errorf("delivered metric %v, want >= %d", n, len(recs))
	}
}

// TestSinkOutageLosesNothing: rsyslog stopped while records are written,
// then restarted: the backlog is kept (lag metric, an alert past the
// limit), then delivered, nothing lost, order per user kept. A restarted
// shipper resumes where it stopped.
func TestSinkOutageLosesNothing(t *testing.T) {
	rs := startRsyslog(t)
	_, conn := natstest.Run(t)
	tgt := syslogTarget(t, rs, "outage", "tls", "json", "pwsync-outage", nil)
	tgt.LagAlert = 20
	run := runShipper(t, conn.JS, []Target{tgt})
	first := resetRecords(5, 0)
	write(t, conn.JS, first)
	waitFor(t, "the first reset", 30*time.Second, func() bool { k, _ := received(t, rs, "pwsync-outage"); return len(k) >= len(first) })

	rs.stop(t)
	outage := resetRecords(10, 1)
	var wg sync.WaitGroup
	wg.Go(func() { write(t, conn.JS, outage) })
	wg.Wait()
	waitFor(t, "the lag metric", 20*time.Second, func() bool {
		return testutil.ToFloat64(metrics.AuditSinkLag.WithLabelValues("outage")) >= float64(len(outage))
	})
	waitFor(t, "the lag alert", 20*time.Second, func() bool {
		st, err := conn.JS.Stream(context.Background(), natsx.StreamActions)
		if err != nil {
			return false
		}
		m, err := st.GetLastMsgForSubject(context.Background(), "actions."+string(events.ActionAlert))
		return err == nil && strings.Contains(string(m.Data), "audit sink outage is")
	})
	time.Sleep(2 * time.Second) // the sink stays down for a while, the shipper retrying
	rs.start(t)
	all := append(append([]events.AuditRecord{}, first...), outage...)
	waitFor(t, "the backlog", 60*time.Second, func() bool { k, _ := received(t, rs, "pwsync-outage"); return len(k) >= len(all) })

	// A restart resumes: only what was written while it was down arrives.
	run.stop()
	later := resetRecords(3, 2)
	write(t, conn.JS, later)
	tgt.Sink = NewSyslog(tgt.Sink.(*syslogSink).cfg)
	runShipper(t, conn.JS, []Target{tgt})
	all = append(all, later...)
	waitFor(t, "the records written while stopped", 30*time.Second, func() bool {
		k, _ := received(t, rs, "pwsync-outage")
		return len(k) >= len(all)
	})
	time.Sleep(500 * time.Millisecond)
	keys, got := received(t, rs, "pwsync-outage")
	checkOncePerUserOrder(t, "outage", all, keys, got)
}
