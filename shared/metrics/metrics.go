// Package metrics owns pwsync's Prometheus registry and its collectors.
// Services record through the small functions here (one line at the place
// where the thing happens); the ops listener serves Handler() on /metrics.
//
// Collectors are package-level: a process has one registry, and tests read
// them with prometheus/testutil. Names follow Prometheus conventions:
// pwsync_<what>_total for counters, _seconds for durations.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Registry is the process's registry (Go runtime and process collectors included).
var Registry = prometheus.NewRegistry()

// Latency buckets: Graph calls take tens to hundreds of ms; the AD -> Graph
// figure is seconds (DirSync poll + pipeline) and minutes under throttling.
var (
	graphBuckets   = []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	latencyBuckets = []float64{.1, .25, .5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 900}
)

var (
	// EventsIngested counts events stored on EVENTS, by source (ad, graph, webhook).
	EventsIngested = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pwsync_events_ingested_total", Help: "Events stored on the EVENTS stream, by source (ad, graph, webhook); duplicates JetStream dropped are not counted."},
		[]string{"source"})
	// RuleDecisions counts the evaluator's rule decisions.
	RuleDecisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pwsync_rule_decisions_total", Help: "Rule decisions by rule and outcome (act, skip)."},
		[]string{"rule", "outcome"})
	// Actions counts the actuator's finished actions.
	Actions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pwsync_actions_total", Help: "Actions carried out by kind and outcome (ok, skipped, failed, dead_letter, dry_run...)."},
		[]string{"kind", "outcome"})
	// GraphRequests is every HTTP request to Graph, by method and status code.
	GraphRequests = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "pwsync_graph_request_duration_seconds", Help: "Graph HTTP request latency by method and status code (code \"error\" = no answer).",
		Buckets: graphBuckets}, []string{"method", "code"})
	// GraphThrottled counts Graph's 429 answers: GraphTransport those of
	// whole requests, msgraph's $batch decoder those of items in a 200 answer.
	GraphThrottled = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pwsync_graph_throttled_total", Help: "Graph answers with status 429 (Too Many Requests), items of $batch answers included."})
	// ADToGraph is the latency from the AD change (as ingest saw it) to the
	// Graph write that enforced it.
	ADToGraph = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "pwsync_ad_to_graph_write_seconds", Help: "Latency from the AD change seen by ingest to the Graph write done, by action kind.",
		Buckets: latencyBuckets}, []string{"kind"})
	// ConsumerPending is num_pending of every JetStream consumer, sampled.
	ConsumerPending = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pwsync_consumer_pending_messages", Help: "Messages not yet delivered to a JetStream consumer (num_pending), sampled."},
		[]string{"stream", "consumer"})
	// ConsumerAckPending is num_ack_pending of every consumer, sampled.
	ConsumerAckPending = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pwsync_consumer_ack_pending_messages", Help: "Messages delivered but not yet acknowledged (num_ack_pending), sampled."},
		[]string{"stream", "consumer"})
	// LeaseHeld is 1 while this replica holds the lease, else 0.
	LeaseHeld = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pwsync_lease_held", Help: "1 while this replica holds the lease, else 0."},
		[]string{"lease", "holder"})
	// LeaseHolder is 1 for the holder of each lease as the leases bucket
	// says, sampled: any replica shows who runs each singleton.
	LeaseHolder = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pwsync_lease_holder", Help: "1 for the current holder of each lease (leases bucket, sampled)."},
		[]string{"lease", "holder"})
	// CampaignADUnreachable is 1 while a running campaign waits for a DC it
	// cannot reach, by campaign.
	CampaignADUnreachable = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pwsync_campaign_ad_unreachable", Help: "1 while a running campaign's AD writes wait for a DC that cannot be reached, else 0."},
		[]string{"campaign"})
	// ADDC is 1 for the DC the AD watcher of a domain uses, 0 for the
	// domain's other known DCs.
	ADDC = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pwsync_ad_dc_in_use", Help: "1 for the DC the AD watcher of the domain uses, 0 for its other known DCs."},
		[]string{"domain", "dc"})
)

func init() {
	Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		EventsIngested, RuleDecisions, Actions, GraphRequests, GraphThrottled, ADToGraph,
		ConsumerPending, ConsumerAckPending, LeaseHeld, LeaseHolder, CampaignADUnreachable, ADDC)
}

// Handler serves the registry in the Prometheus exposition format.
func Handler() http.Handler {
	return promhttp.HandlerFor(Registry, promhttp.HandlerOpts{Registry: Registry})
}

// Ingested records n events stored from source.
func Ingested(source string, n int) {
	if n > 0 {
		EventsIngested.WithLabelValues(source).Add(float64(n))
	}
}

// Decision records one rule decision.
func Decision(rule, outcome string) { RuleDecisions.WithLabelValues(rule, outcome).Inc() }

// Action records a finished action and, for a successful write with a known
// start, the AD change -> Graph write latency.
func Action(kind, outcome string, eventTime, done time.Time) {
	Actions.WithLabelValues(kind, outcome).Inc()
	if outcome == "ok" && !eventTime.IsZero() && done.After(eventTime) {
		ADToGraph.WithLabelValues(kind).Observe(done.Sub(eventTime).Seconds())
	}
}

// ADDCInUse records the DC a domain's watcher uses among the known ones.
func ADDCInUse(domain, inUse string, known []string) {
	for _, dc := range known {
		v := 0.0
		if dc == inUse {
			v = 1
		}
		ADDC.WithLabelValues(domain, dc).Set(v)
	}
}

// Lease records whether this replica holds a lease.
func Lease(name, holder string, held bool) {
	v := 0.0
	if held {
		v = 1
	}
	LeaseHeld.WithLabelValues(name, holder).Set(v)
}

// GraphTransport wraps a RoundTripper to time every Graph request and count
// 429s. It sits below the SDK's middleware, so each HTTP exchange is counted
// once (pwsync removes the SDK's retry handler; retries are the actuator's,
// and each is a request of its own here).
func GraphTransport(next http.RoundTripper) http.RoundTripper {
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		start := time.Now()
		resp, err := next.RoundTrip(r)
		code := "error"
		if err == nil {
			code = strconv.Itoa(resp.StatusCode)
			if resp.StatusCode == http.StatusTooManyRequests {
				GraphThrottled.Inc()
			}
		}
		GraphRequests.WithLabelValues(r.Method, code).Observe(time.Since(start).Seconds())
		return resp, err
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
