package auditship

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	"google.golang.org/protobuf/proto"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/testrig/graphsim"
	"github.com/pwsync/pwsync/testrig/natstest"
)

const (
	testDCR    = "dcr-00112233445566778899aabbccddeeff"
	testStream = "Custom-PwsyncAudit_CL"
)

func sentinelSinkFor(t testing.TB, sim *graphsim.Server, maxBody int) Sink {
	t.Helper()
	cred, err := azidentity.NewClientSecretCredential(sim.TenantID(), sim.ClientID(), "sim-secret",
		&azidentity.ClientSecretCredentialOptions{DisableInstanceDiscovery: true, ClientOptions: azcore.ClientOptions{
			Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: sim.AuthorityHost()}, Transport: sim.HTTPClient()}})
	if err != nil {
		t.Fatal(err)
	}
	return NewSentinel(SentinelConfig{Endpoint: sim.URL(), RuleID: testDCR, Stream: testStream, APIVersion: "2023-01-01",
		Scope: "https://monitor.azure.com/.default", Credential: cred, HTTP: sim.HTTPClient(), MaxField: 4096, MaxBody: maxBody})
}

func startSim(t testing.TB) *graphsim.Server {
	t.Helper()
	sim, err := graphsim.Start(graphsim.Options{ClientSecret: "sim-secret"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	sim.LogsIngestion().AddRule(testDCR, testStream)
	return sim
}

// TestSentinelSink: a reset reaches the Logs Ingestion API once per
// record and in order, in calls within the size limit; a call above the
// limit (413) is split; 429s are waited out (Retry-After) and lose nothing.
func TestSentinelSink(t *testing.T) {
	sim := startSim(t)
	li := sim.LogsIngestion()
	// The simulator's limit is lower than the sink's: the sink meets 413s
	// and splits its calls.
	li.SetMaxBody(16 << 10)
	li.Throttle(2, time.Second)
	_, conn := natstest.Run(t)
	runShipper(t, conn.JS, []Target{{Name: "sentinel", Start: "all", BatchSize: 100, Sink: sentinelSinkFor(t, sim, 64<<10)}})
	recs := resetRecords(12, 0)
	write(t, conn.JS, recs)
	waitFor(t, "rows in the simulator", 30*time.Second, func() bool { return len(li.Rows(testDCR, testStream)) >= len(recs) })
	time.Sleep(300 * time.Millisecond)
	rows := li.Rows(testDCR, testStream)
	var keys []string
	var got []events.AuditRecord
	for _, r := range rows {
		d, _ := r["Detail"].(string)
		guid, _ := r["UserObjectGuid"].(string)
		if _, ok := r["TimeGenerated"].(string); !ok || r["Kind"] == "" {
			t.Fatalf("row without TimeGenerated or Kind: %v", r)
		}
		keys, got = append(keys, key(d)), append(got, events.AuditRecord{User: events.UserRef{ObjectGUID: guid}, Detail: d})
	}
	checkOncePerUserOrder(t, "sentinel", recs, keys, got)
	if li.Refused(http.StatusTooManyRequests) != 2 || li.Refused(http.StatusRequestEntityTooLarge) == 0 {
		t.Errorf("refused: 429 x%d (want 2), 413 x%d (want some)", li.Refused(429), li.Refused(413))
	}
}

// TestSentinelSinkRefusesGraphTokens: the simulator's API checks the
// token's audience, so the sink must ask for the monitor scope.
func TestSentinelSinkWrongScope(t *testing.T) {
	sim := startSim(t)
	s := sentinelSinkFor(t, sim, 0).(*sentinelSink)
	s.cfg.Scope = "https://graph.microsoft.com/.default"
	err := s.Send(context.Background(), resetRecords(1, 0)[:1])
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("a Graph token was accepted: %v", err)
	}
}

// otlpReceiver is an OTLP/HTTP logs endpoint decoding the official
// protobuf types; it can refuse (503) while down.
type otlpReceiver struct {
	mu      sync.Mutex
	down    bool
	records []*logspb.LogRecord
	res     [][]string // resource attribute keys per request
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/logs" || r.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "want POST /v1/logs application/x-protobuf", http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.down {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	b, _ := io.ReadAll(r.Body)
	var req collogs.ExportLogsServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for _, rl := range req.ResourceLogs {
		var keys []string
		for _, a := range rl.GetResource().GetAttributes() {
			keys = append(keys, a.Key+"="+a.GetValue().GetStringValue())
		}
		o.res = append(o.res, keys)
		for _, sl := range rl.ScopeLogs {
			o.records = append(o.records, sl.LogRecords...)
		}
	}
	out, _ := proto.Marshal(&collogs.ExportLogsServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (o *otlpReceiver) snapshot() []*logspb.LogRecord {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]*logspb.LogRecord(nil), o.records...)
}

func attrs(r *logspb.LogRecord) map[string]string {
	m := map[string]string{}
	for _, a := range r.Attributes {
		m[a.Key] = a.GetValue().GetStringValue()
	}
	return m
}

// TestOTLPSink: records reach an OTLP/HTTP receiver once, in order per
// user, with semantic-convention attributes; while it answers 503 the
// backlog is kept and delivered after.
func TestOTLPSink(t *testing.T) {
	rcv := &otlpReceiver{down: true}
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)
	sink, err := NewOTLP(context.Background(), OTLPConfig{Endpoint: srv.URL + "/v1/logs", Timeout: 5 * time.Second, MaxField: 4096, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	_, conn := natstest.Run(t)
	runShipper(t, conn.JS, []Target{{Name: "otlp", Start: "all", BatchSize: 32, Sink: sink}})
	recs := resetRecords(6, 0)
	write(t, conn.JS, recs)
	time.Sleep(time.Second) // refused meanwhile
	if n := len(rcv.snapshot()); n != 0 {
		t.Fatalf("%d records while down", n)
	}
	rcv.mu.Lock()
	rcv.down = false
	rcv.mu.Unlock()
	waitFor(t, "OTLP records", 30*time.Second, func() bool { return len(rcv.snapshot()) >= len(recs) })
	time.Sleep(300 * time.Millisecond)
	var keys []string
	var got []events.AuditRecord
	for _, r := range rcv.snapshot() {
		a := attrs(r)
		keys = append(keys, key(r.Body.GetStringValue()))
		got = append(got, events.AuditRecord{User: events.UserRef{ObjectGUID: a["user.id"]}})
		if a["user.name"] == "" || a["pwsync.audit.kind"] == "" || r.EventName != "pwsync.audit."+a["pwsync.audit.kind"] || r.TimeUnixNano == 0 {
			t.Fatalf("record: %v", r)
		}
	}
	checkOncePerUserOrder(t, "otlp", recs, keys, got)
	rcv.mu.Lock()
	res := strings.Join(rcv.res[0], ",")
	rcv.mu.Unlock()
	if !strings.Contains(res, "service.name=pwsync") {
		t.Errorf("resource: %s", res)
	}
}
