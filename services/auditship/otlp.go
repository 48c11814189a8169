package auditship

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	otellog "go.opentelemetry.io/otel/log"
	"go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"

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

// otlpSink emits records through the SDK's logger into a collecting
// processor, then exports them with one synchronous Export call: the
// batch is acked only when the collector answered 2xx. (The SDK's own
// batch processor exports in the background, which would ack too early.)
type otlpSink struct {
	cfg      OTLPConfig
	exporter *otlploghttp.Exporter
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

// NewOTLP returns an OTLP/HTTP logs sink. Retries are the shipper's (one
// retry policy for every sink), so the exporter's own are off.
func NewOTLP(ctx context.Context, cfg OTLPConfig) (Sink, error) {
	opts := []otlploghttp.Option{otlploghttp.WithEndpointURL(cfg.Endpoint), otlploghttp.WithTimeout(cfg.Timeout),
		otlploghttp.WithRetry(otlploghttp.RetryConfig{Enabled: false}), otlploghttp.WithHeaders(cfg.Headers)}
	if cfg.TLS != nil {
		opts = append(opts, otlploghttp.WithTLSClientConfig(cfg.TLS))
	}
	exp, err := otlploghttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("otlp exporter: %w", err)
	}
	res := resource.NewSchemaless(serviceAttrs(cfg.Version)...)
	col := &collector{}
	lp := log.NewLoggerProvider(log.WithResource(res), log.WithProcessor(col),
		log.WithAttributeValueLengthLimit(max(cfg.MaxField, 256)))
	return &otlpSink{cfg: cfg, exporter: exp, provider: lp, pending: col,
		logger: lp.Logger("github.com/pwsync/pwsync/services/auditship", otellog.WithInstrumentationVersion(cfg.Version))}, nil
}

func (s *otlpSink) Send(ctx context.Context, recs []events.AuditRecord) error {
	s.pending.recs = s.pending.recs[:0]
	now := time.Now()
	for _, r := range recs {
		s.logger.Emit(ctx, otlpRecord(bounded(r, s.cfg.MaxField), now))
	}
	if err := s.exporter.Export(ctx, s.pending.recs); err != nil {
		return fmt.Errorf("otlp %s: %w", s.cfg.Endpoint, err)
	}
	return nil
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
	_ = s.provider.Shutdown(ctx)
	return s.exporter.Shutdown(ctx)
}

// serviceAttrs are the resource's service.* attributes.
func serviceAttrs(version string) []attribute.KeyValue {
	return []attribute.KeyValue{attribute.String("service.name", "pwsync"), attribute.String("service.version", version)}
}
