package natsx

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/shared/events"
)

// Stream, consumer and bucket names: the whole topology, in one reviewable place.
const (
	StreamEvents  = "EVENTS"
	StreamActions = "ACTIONS"
	StreamAudit   = "AUDIT"
	StreamDLQ     = "DLQ"

	ConsumerEvaluator = "evaluator"
	ConsumerActuator  = "actuator"
	// ConsumerGraphWatch feeds the Graph delta poller with notifications and
	// lifecycle events (triggers only; it never sees the events.graph.user
	// events the poller publishes).
	ConsumerGraphWatch = "graphwatch"

	BucketUsers    = "users"    // evaluator: per-user state, key = AD objectGUID
	BucketCursors  = "cursors"  // ingest: DirSync cookie / USN watermark per domain, delta link
	BucketIdentity = "identity" // join index: AD objectGUID -> cloud user
	BucketDone     = "done"     // actuator: idempotency records per action step
	BucketLeases   = "leases"   // singleton work
	// BucketSubscriptions: Graph subscriptions and their clientState secrets.
	BucketSubscriptions = "subscriptions"
	// BucketCampaigns: mass-reset campaigns, their targets, per-user progress
	// and batch intents (services/campaign).
	BucketCampaigns = "campaigns"
	// BucketBackfill: the backfill brake (services/evaluator): batches of
	// mass actions staged until counted, held ones awaiting approval, and
	// the fingerprint of the rules policy last re-evaluated.
	BucketBackfill = "backfill"

	// The notifier's own, ensured by the notifier when it runs (see
	// NotifierConsumer): a consumer nobody reads would only pile up pending
	// counts, and their sizes come from the notify settings.
	ConsumerNotifier    = "notifier"             // on ACTIONS: actions.notify, actions.alert
	ConsumerDeadLetters = "notifier-deadletters" // on DLQ: admins' dead-letter alerts
	BucketNotices       = "notices"              // the notifier's exactly-once ledger
	BucketPacing        = "pacing"               // the notifier's send pacing, for a successor

	// ConsumerAuditSinkPrefix + sink name: one durable consumer per SIEM
	// sink on StreamAudit (services/auditship), ensured when it runs.
	ConsumerAuditSinkPrefix = "audit-sink-"

	// ConsumerADWriter executes the actions that write AD rather than
	// Graph (risk: pwdLastSet 0) and dismiss Identity Protection risk
	// (services/actuator/adwrite); the actuator acks these kinds unread.
	ConsumerADWriter = "adwriter"
)

// Lease keys in BucketLeases: one holder each across replicas.
const (
	LeaseScheduler         = "scheduler.expiry"   // evaluator: expiry points
	LeaseBackfillGate      = "evaluator.backfill" // evaluator: re-evaluation pass
	LeaseCampaignRunner    = "campaign-runner"    // campaign: the runner
	LeaseNotifier          = "notifier"           // notifier: sends and dead-letter alerts
	LeaseGraphSubscription = "graph-subscription" // graphwatch: the subscription
	LeaseGraphDelta        = "graph-delta"        // graphwatch: delta rounds
	LeaseGraphRisk         = "graph-risk"         // graphwatch: Identity Protection polls
	// LeaseADWatchPrefix + AD domain: one DirSync/USN watcher per domain.
	LeaseADWatchPrefix = "adwatch."
	// LeaseAuditSinkPrefix + sink name: one shipper per SIEM sink, so that
	// records reach it in stream order.
	LeaseAuditSinkPrefix = "auditship."
)

// Topology is the set of streams, consumers and KV buckets pwsync needs.
type Topology struct {
	Streams   []jetstream.StreamConfig
	Consumers map[string][]jetstream.ConsumerConfig // stream -> consumers
	Buckets   []jetstream.KeyValueConfig
}

// Options size the topology for a deployment.
type Options struct {
	Replicas     int           // 1 embedded, 3 on a cluster
	EventsMaxAge time.Duration // how long events stay for replay and dead-letter triage
	AuditMaxAge  time.Duration
	Duplicates   time.Duration // Nats-Msg-Id dedup window
	DoneTTL      time.Duration // how long an action's idempotency record is kept
}

// DefaultOptions are those of a single embedded server.
func DefaultOptions() Options {
	return Options{
		Replicas:     1,
		EventsMaxAge: 7 * 24 * time.Hour,
		AuditMaxAge:  400 * 24 * time.Hour,
		Duplicates:   15 * time.Minute,
		DoneTTL:      14 * 24 * time.Hour,
	}
}

// MaxParked is MaxAckPending of the consumers whose handlers park messages
// with a delayed NAK: the evaluator's timers (an undo's wait for hash sync,
// the writeback check), the actuator's undos waiting for the cloud and its
// long Retry-Afters, the notifier's deferrals (quiet hours, pacing). A
// parked message counts as pending until it is acked, so with a small bound
// a few hundred users changing their passwords within an undo's wait
// (expiry morning) held every new event, helpdesk resets included, until a
// timer came due: minutes. Work in flight is bounded by the consumers'
// concurrency and pull size (Consume), not by this.
const MaxParked = 100_000

// AckWait only catches crashes and hangs; retry timing lives in Process.
const (
	evaluatorAckWait = 15 * time.Second
	actuatorAckWait  = 30 * time.Second
	MaxDeliver       = 10

	// LeaseTTL is how long a dead replica's singleton lease outlives it;
	// holders renew every LeaseRenew.
	LeaseTTL   = 15 * time.Second
	LeaseRenew = 5 * time.Second
)

// NewTopology builds the topology for the given options.
func NewTopology(o Options) Topology {
	if o.Replicas < 1 {
		o.Replicas = 1
	}
	return Topology{
		Streams: []jetstream.StreamConfig{
			{Name: StreamEvents, Subjects: []string{"events.>"}, Storage: jetstream.FileStorage,
				Replicas: o.Replicas, MaxAge: o.EventsMaxAge, Duplicates: o.Duplicates},
			{Name: StreamActions, Subjects: []string{"actions.>"}, Storage: jetstream.FileStorage,
				Replicas: o.Replicas, MaxAge: o.EventsMaxAge, Duplicates: o.Duplicates},
			{Name: StreamAudit, Subjects: []string{"audit.>"}, Storage: jetstream.FileStorage,
				Replicas: o.Replicas, MaxAge: o.AuditMaxAge, Duplicates: o.Duplicates},
			// Pointers to messages that exhausted MaxDeliver or were terminated:
			// the advisories are kept while nobody listens, the originals stay in
			// their stream (LimitsPolicy) to be fetched by sequence.
			{Name: StreamDLQ, Storage: jetstream.FileStorage, Replicas: o.Replicas, MaxAge: o.EventsMaxAge,
				Subjects: []string{
					"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.*.*",
					"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.*.*",
				}},
		},
		Consumers: map[string][]jetstream.ConsumerConfig{
			StreamEvents: {
				{Durable: ConsumerEvaluator, FilterSubject: "events.>",
					AckPolicy: jetstream.AckExplicitPolicy, AckWait: evaluatorAckWait, MaxDeliver: MaxDeliver, MaxAckPending: MaxParked},
				// Acked on receipt: a trigger's only content is "run a delta
				// round", and a new lease holder always starts with one. A
				// new consumer starts at new messages for the same reason.
				{Durable: ConsumerGraphWatch, FilterSubjects: []string{"events.graph.notification", "events.graph.lifecycle"},
					AckPolicy: jetstream.AckExplicitPolicy, AckWait: evaluatorAckWait, MaxDeliver: MaxDeliver,
					MaxAckPending: 1024, DeliverPolicy: jetstream.DeliverNewPolicy},
			},
			StreamActions: {{Durable: ConsumerActuator, FilterSubject: "actions.>",
				AckPolicy: jetstream.AckExplicitPolicy, AckWait: actuatorAckWait, MaxDeliver: MaxDeliver, MaxAckPending: MaxParked}},
		},
		Buckets: []jetstream.KeyValueConfig{
			{Bucket: BucketUsers, History: 1, Storage: jetstream.FileStorage, Replicas: o.Replicas},
			{Bucket: BucketCursors, History: 5, Storage: jetstream.FileStorage, Replicas: o.Replicas},
			{Bucket: BucketIdentity, History: 1, Storage: jetstream.FileStorage, Replicas: o.Replicas},
			{Bucket: BucketDone, History: 1, Storage: jetstream.FileStorage, Replicas: o.Replicas, TTL: o.DoneTTL},
			{Bucket: BucketLeases, History: 1, Storage: jetstream.FileStorage, Replicas: o.Replicas, TTL: LeaseTTL},
			{Bucket: BucketSubscriptions, History: 1, Storage: jetstream.FileStorage, Replicas: o.Replicas},
			{Bucket: BucketCampaigns, History: 1, Storage: jetstream.FileStorage, Replicas: o.Replicas},
			{Bucket: BucketBackfill, History: 1, Storage: jetstream.FileStorage, Replicas: o.Replicas},
		},
	}
}

// ADWriterConsumer is the AD writer's consumer on StreamActions, ensured
// when risk is enabled: its kinds are events.ActionADRequireChange,
// events.ActionDismissRisk and events.ActionCheckRisk. The checks wait
// (delayed NAKs) until their time, hence MaxParked.
func ADWriterConsumer() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: ConsumerADWriter, FilterSubjects: []string{"actions." + string(events.ActionADRequireChange),
			"actions." + string(events.ActionDismissRisk), "actions." + string(events.ActionCheckRisk)},
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: actuatorAckWait, MaxDeliver: MaxDeliver, MaxAckPending: MaxParked,
	}
}

// NotifierConsumer is the notifier's consumer on StreamActions. Deferrals
// (quiet hours, pacing) are redeliveries too, hence no MaxDeliver: the
// ledger counts real failures and dead-letters after max_attempts.
func NotifierConsumer(ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: ConsumerNotifier, FilterSubjects: []string{"actions." + string(events.ActionNotify), "actions." + string(events.ActionAlert)},
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait, MaxDeliver: -1, MaxAckPending: MaxParked,
	}
}

// DeadLetterConsumer is the notifier's consumer on StreamDLQ; held letters
// wait up to a summary window (ackWait covers it) and maxHeld bounds them.
func DeadLetterConsumer(ackWait time.Duration, maxHeld int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: ConsumerDeadLetters, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: ackWait, MaxDeliver: -1, MaxAckPending: 2 * maxHeld,
	}
}

// AuditSinkConsumer is a SIEM sink's consumer on StreamAudit. Kinds
// filter the records (empty = all). MaxAckPending is one batch: nothing
// is delivered past a batch the sink has not accepted, so a redelivery
// comes before anything newer and order holds. No MaxDeliver: a sink that
// is down keeps its backlog (bounded by the stream's MaxAge). Acks are
// cumulative: acking a batch's last record acks the batch.
func AuditSinkConsumer(sink string, kinds []string, batch int, ackWait time.Duration) jetstream.ConsumerConfig {
	cc := jetstream.ConsumerConfig{Durable: ConsumerAuditSinkPrefix + sink, AckPolicy: jetstream.AckAllPolicy,
		AckWait: ackWait, MaxDeliver: -1, MaxAckPending: max(batch, 1), DeliverPolicy: jetstream.DeliverAllPolicy}
	for _, k := range kinds {
		cc.FilterSubjects = append(cc.FilterSubjects, "audit."+k)
	}
	if len(cc.FilterSubjects) == 0 {
		cc.FilterSubject = "audit.>"
	}
	return cc
}

// NotifierBucket is BucketNotices or BucketPacing with its TTL.
func NotifierBucket(name string, replicas int, ttl time.Duration) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: name, History: 1, Storage: jetstream.FileStorage,
		Replicas: max(replicas, 1), TTL: ttl}
}

// Ensure creates or updates every stream, consumer and bucket. Safe on every start.
func (t Topology) Ensure(ctx context.Context, js jetstream.JetStream) error {
	for _, sc := range t.Streams {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("ensuring stream %s: %w", sc.Name, err)
		}
	}
	for stream, ccs := range t.Consumers {
		for _, cc := range ccs {
			if _, err := js.CreateOrUpdateConsumer(ctx, stream, cc); err != nil {
				return fmt.Errorf("ensuring consumer %s on %s: %w", cc.Durable, stream, err)
			}
		}
	}
	for _, kc := range t.Buckets {
		if _, err := js.CreateOrUpdateKeyValue(ctx, kc); err != nil {
			return fmt.Errorf("ensuring bucket %s: %w", kc.Bucket, err)
		}
	}
	return nil
}

// Buckets opens the named KV buckets.
func Bucket(ctx context.Context, js jetstream.JetStream, name string) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", name, err)
	}
	return kv, nil
}

// IsNotFound reports whether err means a missing KV key.
func IsNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted)
}
