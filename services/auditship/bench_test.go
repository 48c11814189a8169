package auditship

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/testrig/benchreport"
	"github.com/pwsync/pwsync/testrig/natstest"
)

// benchreport: PWSYNC_BENCH_REPORT=1 PWSYNC_REQUIRE_RSYSLOG=1 -run ^TestSyslogThroughputReport$ -timeout 10m

// benchRecords are n typical step records of many users (~400 bytes as JSON).
func benchRecords(n int, round string) []events.AuditRecord {
	out := make([]events.AuditRecord, n)
	for i := range out {
		u := i % 500
		out[i] = events.AuditRecord{Time: time.Now().UTC(), Kind: "step", EventID: fmt.Sprintf("ev-%s-%d", round, i), ActionID: fmt.Sprintf("act-%d", i),
			Rule: "forced-change", Action: "require_password_change", Step: "patch_password_profile", Outcome: events.OutcomeOK, HTTPStatus: 204,
			User:   events.UserRef{UPN: fmt.Sprintf("user%d@example.test", u), ObjectGUID: fmt.Sprintf("6f1c0a3e-0000-4000-8000-%012d", u), Domain: "example.test"},
			Detail: fmt.Sprintf("u%d#%s.%d passwordProfile.forceChangePasswordNextSignIn set", u, round, i), LatencyMS: 150}
	}
	return out
}

// lineCounter counts the lines rsyslog wrote, reading only what is new
// (re-reading a 30 MB file every poll would take the CPU the measured
// pipeline needs).
type lineCounter struct {
	f     *os.File
	lines int
	buf   []byte
}

func (c *lineCounter) count(path string) int {
	if c.f == nil {
		f, err := os.Open(path)
		if err != nil {
			return 0
		}
		c.f, c.buf = f, make([]byte, 1<<20)
	}
	for {
		n, _ := c.f.Read(c.buf)
		if n == 0 {
			return c.lines
		}
		c.lines += bytes.Count(c.buf[:n], []byte{'\n'})
	}
}

func (rs *rsyslog) waitLines(t testing.TB, c *lineCounter, n int, d time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(d)
	for c.count(rs.out) < n {
		if time.Now().After(deadline) {
			t.Fatalf("rsyslog wrote %d lines of %d in %s", c.lines, n, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Now()
}

// TestSyslogThroughputReport: records per second delivered to rsyslog over
// TLS by the shipper (live: written to AUDIT while it ships; drain: a
// backlog left by an outage), next to a bare TLS write loop of the same
// records and framing in the same run. Each is timed until rsyslog has
// written every record to its file.
func TestSyslogThroughputReport(t *testing.T) {
	if os.Getenv("PWSYNC_BENCH_REPORT") == "" {
		t.Skip("PWSYNC_BENCH_REPORT=1 runs the audit shipping benchmark")
	}
	const n = 20000
	rs := startRsyslog(t)
	lc := &lineCounter{}
	t.Cleanup(func() {
		if lc.f != nil {
			_ = lc.f.Close()
		}
	})
	recs := benchRecords(n, "live")
	sink := &syslogSink{cfg: SyslogConfig{Network: "tls", Format: "json", MaxField: 4096,
		Header: syslogHeader{Facility: 10, Hostname: "bench", AppName: "pwsync"}}}

	// Baseline: the same RFC 5425 frames, 256 a write, on one TLS connection.
	c, err := tls.Dial("tcp", rs.tlsAddr, rs.clientTLS(t))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var buf []byte
	for i := 0; i < n; i += 256 {
		buf = buf[:0]
		for _, r := range recs[i:min(i+256, n)] {
			buf = octetCounted(buf, sink.message(r))
		}
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	bare := float64(n) / rs.waitLines(t, lc, n, 2*time.Minute).Sub(start).Seconds()
	_ = c.Close()

	_, conn := natstest.Run(t)
	tgt := syslogTarget(t, rs, "bench", "tls", "json", "pwsync-bench", nil)
	tgt.BatchSize = 256

	// Live: the shipper runs while the records are written.
	run := runShipper(t, conn.JS, []Target{tgt})
	start = time.Now()
	write(t, conn.JS, recs)
	live := float64(n) / rs.waitLines(t, lc, 2*n, 5*time.Minute).Sub(start).Seconds()
	run.stop()

	// Drain: a backlog of n written while the shipper was stopped.
	write(t, conn.JS, benchRecords(n, "drain")) // new IDs: AUDIT's duplicate window would drop the same records
	tgt.Sink = NewSyslog(tgt.Sink.(*syslogSink).cfg)
	start = time.Now()
	runShipper(t, conn.JS, []Target{tgt})
	drain := float64(n) / rs.waitLines(t, lc, 3*n, 5*time.Minute).Sub(start).Seconds()

	base := "bare TLS write loop, same records and framing, same run"
	benchreport.Emit(benchreport.Figure{Name: "audit_syslog_tls_live_per_s", Value: live, Unit: "records/s", Baseline: bare, BaselineName: base,
		Better: "higher", Target: ">= 1000", Desc: fmt.Sprintf("audit records written to AUDIT and delivered to rsyslog over TLS by the shipper (%d records, batch 256)", n)})
	benchreport.Emit(benchreport.Figure{Name: "audit_syslog_tls_drain_per_s", Value: drain, Unit: "records/s", Baseline: bare, BaselineName: base,
		Better: "higher", Target: ">= 0.5x baseline", Desc: fmt.Sprintf("backlog drain after an outage: %d stored records delivered to rsyslog over TLS", n)})
}
