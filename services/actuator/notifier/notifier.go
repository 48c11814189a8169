// Package notifier delivers notify actions to users (Teams activity feed,
// email through Graph sendMail) and alert actions to the admins (a Teams
// Workflows webhook): templates per language, the user's time zone and
// quiet hours, pacing under the mailbox and Teams limits, and a KV ledger
// that sends each notice once.
//
// It consumes actions.notify and actions.alert through its own durable
// consumer, on one replica at a time (a lease): two replicas sending at
// once would each use the whole per-mailbox budget. The senders' pacing is
// written through to KV, so the replica that takes the lease over goes on
// from the windows and day count its predecessor left (pacestore.go). The
// actuator leaves these kinds to it.
package notifier

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/lease"
	"github.com/pwsync/pwsync/shared/natsx"
)

// Names in NATS.
const (
	Consumer     = natsx.ConsumerNotifier
	BucketLedger = natsx.BucketNotices
	LeaseName    = natsx.LeaseNotifier
	// LedgerTTL outlives any password's lifetime: a notice of an old
	// password is never due again, so its key may then go.
	LedgerTTL = 400 * 24 * time.Hour
	// ackWait covers the messages a paced consumer holds while waiting
	// for a send slot (KeepAlive covers the one being handled).
	ackWait = 2 * time.Minute
)

// OutcomeDeferred: a notice waits for the end of quiet hours.
const OutcomeDeferred = "deferred"

// Deps is what the notifier needs from the process.
type Deps struct {
	JS        jetstream.JetStream
	Graph     graph.Client // user look-up: preferredLanguage, mail, id
	Messenger graph.Messenger
	Settings  config.Notify
	Replicas  int    // of the ledger bucket; default 1
	Holder    string // this replica in the lease; default hostname-pid
	Log       zerolog.Logger
	Now       func() time.Time // nil = time.Now; quiet hours and dates
	// HTTP posts alert cards; nil = a client with a 10 s timeout.
	HTTP *http.Client
	// MaxWait bounds a wait for a send slot inside one delivery; longer
	// waits hand the message back to JetStream. 0 = 60 s.
	MaxWait time.Duration
	// SendTimeout bounds one Graph send; a successor counts a send its
	// predecessor never saw answered as in flight that long. 0 = 30 s.
	SendTimeout time.Duration
	// AckWait of the notifier's consumer; 0 = 2 min. Tests shorten it to
	// see a killed holder's unacknowledged messages come back sooner.
	AckWait time.Duration
	// MailboxConcurrency bounds sends in flight per sender mailbox; 0 =
	// Outlook's 4 (MailboxConcurrency). Tests raise it to show the bound
	// is what keeps the simulator's concurrency limit.
	MailboxConcurrency int
}

// Service delivers notices and alerts.
type Service struct {
	js      jetstream.JetStream
	graph   graph.Client
	msg     graph.Messenger
	set     config.Notify
	tpl     *Templates
	clock   *clock
	ledger  *ledger
	leases  jetstream.KeyValue
	audit   *audit.Writer
	senders *pool
	teams   *pool
	hooks   *pool
	hc      *http.Client
	log     zerolog.Logger
	now     func() time.Time
	holder  string
	maxWait time.Duration
	// pacing writes the senders' pacing through to KV while this replica
	// holds the lease.
	pacing      *paceStore
	sendTimeout time.Duration
	// deadLetters: alert the admins about new dead letters (deadletters.go).
	deadLetters bool
}

// New loads and checks the templates (an unknown field refuses the start),
// and ensures the ledger bucket and the consumer.
func New(ctx context.Context, d Deps) (*Service, error) {
	set := d.Settings
	tpl, err := LoadTemplates(set.TemplatesDir, set.DefaultLanguage)
	if err != nil {
		return nil, fmt.Errorf("notify templates: %w", err)
	}
	clk, err := newClock(set)
	if err != nil {
		return nil, err
	}
	replicas := max(d.Replicas, 1)
	aw := d.AckWait
	if aw <= 0 {
		aw = ackWait
	}
	kv, err := d.JS.CreateOrUpdateKeyValue(ctx, natsx.NotifierBucket(BucketLedger, replicas, LedgerTTL))
	if err != nil {
		return nil, fmt.Errorf("ensuring bucket %s: %w", BucketLedger, err)
	}
	if _, err := d.JS.CreateOrUpdateConsumer(ctx, natsx.StreamActions, natsx.NotifierConsumer(aw)); err != nil {
		return nil, fmt.Errorf("ensuring consumer %s: %w", Consumer, err)
	}
	pkv, err := d.JS.CreateOrUpdateKeyValue(ctx, natsx.NotifierBucket(BucketPacing, replicas,
		max(pacingTTL, set.Pacing.MailDayWindow+time.Hour)))
	if err != nil {
		return nil, fmt.Errorf("ensuring bucket %s: %w", BucketPacing, err)
	}
	deadLetters := set.DeadLetters.Enabled && set.WorkflowsWebhookURL.Value() != ""
	leases, err := natsx.Bucket(ctx, d.JS, natsx.BucketLeases)
	if err != nil {
		return nil, err
	}
	now := d.Now
	if now == nil {
		now = time.Now
	}
	holder := d.Holder
	if holder == "" {
		holder = lease.DefaultHolder()
	}
	hc := d.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	p := set.Pacing
	conc := d.MailboxConcurrency
	if conc <= 0 {
		conc = MailboxConcurrency
	}
	day := p.MailDayWindow
	if day <= 0 {
		day = 24 * time.Hour
	}
	sendTimeout := d.SendTimeout
	if sendTimeout <= 0 {
		sendTimeout = 30 * time.Second
	}
	s := &Service{js: d.JS, graph: d.Graph, msg: d.Messenger, set: set, tpl: tpl, clock: clk,
		ledger: &ledger{kv: kv, now: now}, leases: leases, audit: audit.NewWriter(natsx.NewPublisher(d.JS), now),
		// Pacing is real time whatever the injected clock says.
		senders: newPool(set.Senders, time.Now, conc, Limit{p.MailPerWindow, p.MailWindow}, Limit{p.MailPerDay, day}),
		teams:   newPool([]string{"teams"}, time.Now, 0, Limit{p.TeamsPerWindow, p.TeamsWindow}),
		// Workflows publish no limit; the retired connectors' documented
		// ones are a safe bet for a channel that humans read.
		hooks: newPool([]string{"webhook"}, time.Now, 0, Limit{4, time.Second}, Limit{60, 30 * time.Second}),
		hc:    hc, log: d.Log, now: now, holder: holder, maxWait: d.MaxWait, deadLetters: deadLetters,
		pacing:      &paceStore{kv: pkv, holder: holder, sendTimeout: sendTimeout, log: d.Log, revs: map[string]uint64{}},
		sendTimeout: sendTimeout}
	if s.maxWait <= 0 {
		s.maxWait = 60 * time.Second
	}
	if deadLetters {
		if err := s.ensureDeadLetterConsumer(ctx); err != nil {
			return nil, err
		}
	}
	s.log.Info().Strs("languages", tpl.Languages()).Int("senders", len(set.Senders)).Bool("teams", set.Teams.Enabled).
		Bool("alerts_webhook", set.WorkflowsWebhookURL.IsSet()).Msg("notifier ready")
	return s, nil
}

// Run delivers while this replica holds the notifier lease, until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	l := lease.New(s.leases, LeaseName, s.holder, natsx.LeaseRenew, s.log)
	return l.Run(ctx, func(ctx context.Context) error {
		if err := s.takeOver(ctx); err != nil {
			return err
		}
		s.log.Info().Str("holder", s.holder).Bool("dead_letter_alerts", s.deadLetters).Msg("notifier delivering")
		dlq := make(chan error, 1)
		if s.deadLetters {
			go func() { dlq <- s.runDeadLetters(ctx) }()
		} else {
			dlq <- nil
		}
		h := natsx.Process(context.WithoutCancel(ctx), s.log, s.maxWait+time.Minute, nil, s.Handle)
		err := natsx.Consume(ctx, s.js, natsx.StreamActions, Consumer, s.set.Concurrency, h)
		return errors.Join(err, <-dlq)
	})
}

// takeOver starts this lease term from the pacing its predecessor left:
// the senders' windows and day counts from KV (written through from now
// on), and a pause of one Teams window, which is shorter than any handover
// after a crash but not necessarily after a release.
func (s *Service) takeOver(ctx context.Context) error {
	if err := s.senders.attach(ctx, s.pacing); err != nil {
		return fmt.Errorf("notifier pacing: %w", err)
	}
	s.teams.blockAll(s.set.Pacing.TeamsWindow)
	return nil
}

// Handle delivers one action.
func (s *Service) Handle(ctx context.Context, a events.Action, meta natsx.Meta) error {
	log := zerolog.Ctx(ctx).With().Str("action_id", a.ID).Str("action", string(a.Kind)).Str("upn", a.User.UPN).Logger()
	ctx = log.WithContext(ctx)
	x := &delivery{s: s, a: a}
	switch a.Kind {
	case events.ActionAlert:
		return x.alert(ctx)
	case events.ActionNotify:
		return x.notify(ctx)
	}
	return nil // not ours (the filter makes this unreachable)
}

// delivery is one action being delivered.
type delivery struct {
	s     *Service
	a     events.Action
	cloud string // cloud user id, once known
}
