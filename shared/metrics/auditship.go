package metrics

import "github.com/prometheus/client_golang/prometheus"

var (
	// AuditSinkLag is each SIEM sink's backlog: audit records stored and
	// not yet accepted by the sink (its consumer's pending + unacked).
	AuditSinkLag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pwsync_audit_sink_lag", Help: "Audit records not yet accepted by the SIEM sink, by sink."}, []string{"sink"})
	// AuditSinkDelivered counts records the sink accepted.
	AuditSinkDelivered = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pwsync_audit_sink_delivered_total", Help: "Audit records accepted by the SIEM sink, by sink."}, []string{"sink"})
	// AuditSinkFailures counts failed sends (each is retried).
	AuditSinkFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pwsync_audit_sink_failures_total", Help: "Failed sends to the SIEM sink (retried), by sink."}, []string{"sink"})
)

func init() { Registry.MustRegister(AuditSinkLag, AuditSinkDelivered, AuditSinkFailures) }

// AuditShipped records a batch the sink accepted.
func AuditShipped(sink string, n int) { AuditSinkDelivered.WithLabelValues(sink).Add(float64(n)) }

// AuditSinkFailed records a failed send.
func AuditSinkFailed(sink string) { AuditSinkFailures.WithLabelValues(sink).Inc() }

// AuditLag sets a sink's backlog.
func AuditLag(sink string, n uint64) { AuditSinkLag.WithLabelValues(sink).Set(float64(n)) }
