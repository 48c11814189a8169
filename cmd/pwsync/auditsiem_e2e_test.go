package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	"google.golang.org/protobuf/proto"

	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/adtest"
)

// otlpKeys is an OTLP/HTTP logs receiver that keeps, per record, its
// timestamp and kind (official protobuf types).
type otlpKeys struct {
	mu   sync.Mutex
	keys []string
}

func (o *otlpKeys) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var req collogs.ExportLogsServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, rl := range req.ResourceLogs {
		for _, sl := range rl.ScopeLogs {
			for _, lr := range sl.LogRecords {
				kind := ""
				for _, a := range lr.Attributes {
					if a.Key == "pwsync.audit.kind" {
						kind = a.GetValue().GetStringValue()
					}
				}
				o.keys = append(o.keys, fmt.Sprintf("%d/%s", lr.TimeUnixNano, kind))
			}
		}
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
}

func (o *otlpKeys) snapshot() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.keys...)
}

// TestResetAuditReachesSIEM: pwsync run with two SIEM sinks (Sentinel's
// Logs Ingestion API in the simulator, with the Graph app's credentials,
// and an OTLP/HTTP receiver): every record of the AUDIT stream after a
// real AD reset reaches each sink exactly once. (Syslog over TLS and UDP
// against Debian's rsyslog: services/auditship.)
func TestResetAuditReachesSIEM(t *testing.T) {
	const dcr, stream = "dcr-00112233445566778899aabbccddeeff", "Custom-PwsyncAudit_CL"
	rcv := &otlpKeys{}
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)
	s := newStack(t, stackOpts{NATSListen: freeAddr(t)})
	s.sim.LogsIngestion().AddRule(dcr, stream)
	s.opts.ExtraYAML = fmt.Sprintf(`audit:
  sinks:
    - {name: sentinel, type: sentinel, sentinel: {endpoint: %q, rule_id: %s, stream: %s}}
    - {name: otel, type: otlp, otlp: {endpoint: %q}}`, s.sim.URL(), dcr, stream, srv.URL+"/v1/logs")
	alice := s.dc.CreateUser(t, s.ou, "siem-alice", adtest.UserOpts{Password: "Start.Passw0rd-1"})
	aliceID := s.cloudUser(alice, false)
	s.startInProcess(t)
	s.dc.ForceChange(t, alice.DN)
	s.waitWritesWithin(t, aliceID, cloudResetWrites, 1500*time.Millisecond, 90*time.Second) // the shared DC can be slow

	conn, err := natsx.Connect(natsx.ConnectConfig{URL: "nats://" + s.opts.NATSListen, Name: t.Name()}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.NC.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var want []string
	resetRecords := 0
	if err := audit.Read(ctx, conn.JS, audit.Query{}, func(r events.AuditRecord) error {
		want = append(want, fmt.Sprintf("%d/%s", r.Time.UnixNano(), r.Kind))
		if r.User.ObjectGUID == alice.GUID && (r.Kind == "step" || r.Kind == "action") {
			resetRecords++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if resetRecords < 2 {
		t.Fatalf("the reset left %d step/action records in AUDIT", resetRecords)
	}
	sentinelKeys := func() []string {
		var out []string
		for _, r := range s.sim.LogsIngestion().Rows(dcr, stream) {
			ts, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(r["TimeGenerated"]))
			out = append(out, fmt.Sprintf("%d/%s", ts.UnixNano(), r["Kind"]))
		}
		return out
	}
	for name, got := range map[string]func() []string{"sentinel": sentinelKeys, "otlp": rcv.snapshot} {
		deadline := time.Now().Add(30 * time.Second)
		for !containsAll(got(), want) && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond)
		counts := map[string]int{}
		for _, k := range got() {
			counts[k]++
		}
		for _, k := range want {
			if counts[k] != 1 {
				t.Errorf("%s: AUDIT record %s arrived %d times, want once", name, k, counts[k])
			}
		}
	}
}

func containsAll(have, want []string) bool {
	set := map[string]bool{}
	for _, h := range have {
		set[h] = true
	}
	for _, w := range want {
		if !set[w] {
			return false
		}
	}
	return true
}
