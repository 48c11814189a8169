package auditship

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otellog "go.opentelemetry.io/otel/log"
	"go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/proto"

	"github.com/pwsync/pwsync/shared/events"
)

// OTLPConfig configures the OpenTelemetry logs sink.
type OTLPConfig struct {
	Endpoint string // full URL of the logs endpoint, e.g. https://collector:4318/v1/logs
	Headers  map[string]string
	TLS      *tls.Config // nil = the system roots
	Timeout  time.Duration
	MaxField int
	Version  string
}

// Attribute names: OpenTelemetry semantic conventions where one exists
// (user.*, http.*, url.path, service.*), pwsync.* for the rest.
const (
	attrUserID      = "user.id"   // AD objectGUID
	attrUserName    = "user.name" // UPN
	attrHTTPStatus  = "http.response.status_code"
	attrHTTPMethod  = "http.request.method"
	attrURLPath     = "url.path"
	attrKind        = "pwsync.audit.kind"
	attrOutcome     = "pwsync.outcome"
	attrRule        = "pwsync.rule"
	attrAction      = "pwsync.action"
	attrStep        = "pwsync.step"
	attrEventID     = "pwsync.event_id"
	attrActionID    = "pwsync.action_id"
	attrDomain      = "pwsync.user.domain"
	attrCloudUserID = "pwsync.cloud_user_id"
	attrLatency     = "pwsync.latency_ms"
	attrPrincipal   = "pwsync.admin.principal"
)

// otlpSink emits records through the OpenTelemetry SDK's logger into a
// collecting processor, then posts them as one OTLP/HTTP protobuf request
// (the official otlp/logs/v1 types) and returns only when the collector
// answered: the batch is acked after a 2xx. The SDK's batch processor
// would export in the background and ack too early; the otlploghttp
// exporter links grpc and its gateway (text/template: the binary grew by
// 90 MB), so the request is built here.
type otlpSink struct {
	cfg      OTLPConfig
	http     *http.Client
	provider *log.LoggerProvider
	logger   otellog.Logger
	pending  *collector
}

// collector is a log.Processor that keeps what is emitted until taken.
type collector struct{ recs []log.Record }

func (c *collector) Enabled(context.Context, log.EnabledParameters) bool { return true }
func (c *collector) OnEmit(_ context.Context, r *log.Record) error {
	c.recs = append(c.recs, r.Clone())
	return nil
}
func (c *collector) Shutdown(context.Context) error   { return nil }
func (c *collector) ForceFlush(context.Context) error { return nil }

// NewOTLP returns an OTLP/HTTP logs sink.
func NewOTLP(_ context.Context, cfg OTLPConfig) (Sink, error) {
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("otlp endpoint %q: want an http(s) URL", cfg.Endpoint)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg.TLS
	res := resource.NewSchemaless(serviceAttrs(cfg.Version)...)
	col := &collector{}
	lp := log.NewLoggerProvider(log.WithResource(res), log.WithProcessor(col),
		log.WithAttributeValueLengthLimit(max(cfg.MaxField, 256)))
	return &otlpSink{cfg: cfg, http: &http.Client{Transport: tr, Timeout: cfg.Timeout}, provider: lp, pending: col,
		logger: lp.Logger(otlpScope, otellog.WithInstrumentationVersion(cfg.Version))}, nil
}

const otlpScope = "github.com/pwsync/pwsync/services/auditship"

func (s *otlpSink) Send(ctx context.Context, recs []events.AuditRecord) error {
	s.pending.recs = s.pending.recs[:0]
	now := time.Now()
	for _, r := range recs {
		s.logger.Emit(ctx, otlpRecord(bounded(r, s.cfg.MaxField), now))
	}
	body, err := proto.Marshal(logsData(s.pending.recs))
	if err != nil {
		return fmt.Errorf("otlp: encoding: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.Endpoint, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("otlp: %w", err)
	}
	for k, v := range s.cfg.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := s.http.Do(req)
	if err != nil {
		return fmt.Errorf("otlp %s: %w", redactURL(s.cfg.Endpoint), err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode/100 == 2:
		// A partial success (records the collector rejected for good) is
		// accepted too: sending them again would not help.
		return nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable ||
		resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusGatewayTimeout:
		after := 5 * time.Second
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs >= 0 {
			after = time.Duration(secs) * time.Second
		}
		return &retryAfterError{After: after, Err: fmt.Errorf("otlp %s: %s", redactURL(s.cfg.Endpoint), resp.Status)}
	}
	return fmt.Errorf("otlp %s: %s: %s", redactURL(s.cfg.Endpoint), resp.Status, clip(string(msg), 300))
}

// logsData is the OTLP request: ExportLogsServiceRequest and LogsData are
// the same message on the wire (field 1, resource_logs).
func logsData(recs []log.Record) *logspb.LogsData {
	if len(recs) == 0 {
		return &logspb.LogsData{}
	}
	rl := &logspb.ResourceLogs{Resource: &resourcepb.Resource{Attributes: kvs(recs[0].Resource().Attributes())}}
	scope := recs[0].InstrumentationScope()
	sl := &logspb.ScopeLogs{Scope: &commonpb.InstrumentationScope{Name: scope.Name, Version: scope.Version}}
	for i := range recs {
		r := &recs[i]
		lr := &logspb.LogRecord{TimeUnixNano: uint64(r.Timestamp().UnixNano()), ObservedTimeUnixNano: uint64(r.ObservedTimestamp().UnixNano()),
			SeverityNumber: logspb.SeverityNumber(r.Severity()), SeverityText: r.SeverityText(), Body: anyValue(r.Body()),
			EventName: r.EventName()}
		r.WalkAttributes(func(kv attribute.KeyValue) bool {
			lr.Attributes = append(lr.Attributes, &commonpb.KeyValue{Key: string(kv.Key), Value: anyValue(kv.Value)})
			return true
		})
		sl.LogRecords = append(sl.LogRecords, lr)
	}
	rl.ScopeLogs = []*logspb.ScopeLogs{sl}
	return &logspb.LogsData{ResourceLogs: []*logspb.ResourceLogs{rl}}
}

func kvs(in []attribute.KeyValue) []*commonpb.KeyValue {
	out := make([]*commonpb.KeyValue, 0, len(in))
	for _, kv := range in {
		out = append(out, &commonpb.KeyValue{Key: string(kv.Key), Value: anyValue(kv.Value)})
	}
	return out
}

// anyValue covers the value types otlpRecord sets.
func anyValue(v attribute.Value) *commonpb.AnyValue {
	switch v.Type() {
	case attribute.BOOL:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: v.AsBool()}}
	case attribute.INT64:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: v.AsInt64()}}
	case attribute.FLOAT64:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: v.AsFloat64()}}
	}
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v.Emit()}}
}

// redactURL drops user info and the query (tokens live there sometimes).
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "[endpoint]"
	}
	u.User, u.RawQuery = nil, ""
	return u.String()
}

func otlpRecord(r events.AuditRecord, now time.Time) otellog.Record {
	var o otellog.Record
	o.SetEventName("pwsync.audit." + r.Kind)
	o.SetTimestamp(r.Time)
	o.SetObservedTimestamp(now)
	if severity(r) == 4 {
		o.SetSeverity(otellog.SeverityWarn)
		o.SetSeverityText("WARN")
	} else {
		o.SetSeverity(otellog.SeverityInfo)
		o.SetSeverityText("INFO")
	}
	o.SetBody(attribute.StringValue(firstNonEmpty(r.Detail, r.Kind+" "+r.Outcome)))
	kv := make([]attribute.KeyValue, 0, 16)
	str := func(k, v string) {
		if v != "" {
			kv = append(kv, attribute.String(k, v))
		}
	}
	str(attrKind, r.Kind)
	str(attrOutcome, r.Outcome)
	str(attrRule, r.Rule)
	str(attrAction, r.Action)
	str(attrStep, r.Step)
	str(attrEventID, r.EventID)
	str(attrActionID, r.ActionID)
	str(attrUserID, r.User.ObjectGUID)
	str(attrUserName, r.User.UPN)
	str(attrDomain, r.User.Domain)
	str(attrCloudUserID, firstNonEmpty(r.CloudID, r.User.CloudID))
	if r.HTTPStatus != 0 {
		kv = append(kv, attribute.Int(attrHTTPStatus, r.HTTPStatus))
	}
	if r.LatencyMS != 0 {
		kv = append(kv, attribute.Float64(attrLatency, r.LatencyMS))
	}
	if a := r.Admin; a != nil {
		str(attrPrincipal, a.Principal)
		str(attrHTTPMethod, a.Method)
		str(attrURLPath, a.Path)
	}
	o.AddAttributes(kv...)
	return o
}

func (s *otlpSink) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.http.CloseIdleConnections()
	return s.provider.Shutdown(ctx)
}

// serviceAttrs are the resource's service.* attributes.
func serviceAttrs(version string) []attribute.KeyValue {
	return []attribute.KeyValue{attribute.String("service.name", "pwsync"), attribute.String("service.version", version)}
}
