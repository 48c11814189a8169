package auditship

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/lease"
	"github.com/pwsync/pwsync/shared/metrics"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/shared/retry"
)

// Target is one configured sink and its delivery settings.
type Target struct {
	Name      string
	Kinds     []string // empty = all
	Start     string   // all | new: where a new consumer starts
	BatchSize int
	LagAlert  int // backlog that alerts the admins; 0 = log only
	Sink      Sink
}

// Publisher publishes the lag alert (natsx.Publisher).
type Publisher interface {
	PublishJSON(ctx context.Context, subject, msgID string, v any) (bool, error)
}

// Deps is what the shipper needs.
type Deps struct {
	JS      jetstream.JetStream
	Pub     Publisher
	Targets []Target
	Holder  string // this replica's lease holder name
	Log     zerolog.Logger
	// Tunables (zero = defaults): FetchWait bounds how long an idle fetch
	// waits; RetryMin/RetryMax bound the wait between failed sends; AckWait
	// is how long a batch stays ours without progress news.
	FetchWait, RetryMin, RetryMax, AckWait time.Duration
	Now                                    func() time.Time
}

// Service ships the audit trail to every target.
type Service struct {
	d      Deps
	leases jetstream.KeyValue
}

// New ensures each target's durable consumer (a new one starts where
// Start says; an existing one keeps its position).
func New(ctx context.Context, d Deps) (*Service, error) {
	if d.FetchWait == 0 {
		d.FetchWait = 2 * time.Second
	}
	if d.RetryMin == 0 {
		d.RetryMin = time.Second
	}
	if d.RetryMax == 0 {
		d.RetryMax = time.Minute
	}
	if d.AckWait == 0 {
		d.AckWait = time.Minute
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	for _, t := range d.Targets {
		if err := ensureConsumer(ctx, d.JS, t, d.AckWait); err != nil {
			return nil, err
		}
	}
	kv, err := natsx.Bucket(ctx, d.JS, natsx.BucketLeases)
	if err != nil {
		return nil, err
	}
	return &Service{d: d, leases: kv}, nil
}

func ensureConsumer(ctx context.Context, js jetstream.JetStream, t Target, ackWait time.Duration) error {
	cc := natsx.AuditSinkConsumer(t.Name, t.Kinds, t.BatchSize, ackWait)
	if c, err := js.Consumer(ctx, natsx.StreamAudit, cc.Durable); err == nil {
		// JetStream cannot move an existing consumer's start.
		old := c.CachedInfo().Config
		cc.DeliverPolicy, cc.OptStartSeq, cc.OptStartTime = old.DeliverPolicy, old.OptStartSeq, old.OptStartTime
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("audit sink %s: reading consumer: %w", t.Name, err)
	} else if t.Start == "new" {
		cc.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, natsx.StreamAudit, cc); err != nil {
		return fmt.Errorf("audit sink %s: ensuring consumer: %w", t.Name, err)
	}
	return nil
}

// Run ships to every target, each under its own lease, until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(s.d.Targets))
	for _, t := range s.d.Targets {
		log := s.d.Log.With().Str("sink", t.Name).Logger()
		l := lease.New(s.leases, natsx.LeaseAuditSinkPrefix+t.Name, s.d.Holder, natsx.LeaseRenew, log)
		wg.Go(func() {
			defer t.Sink.Close()
			if err := l.Run(ctx, func(ctx context.Context) error { return s.ship(ctx, t, log) }); err != nil {
				errs <- fmt.Errorf("audit sink %s: %w", t.Name, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	return errors.Join(func() (all []error) {
		for e := range errs {
			all = append(all, e)
		}
		return all
	}()...)
}

// shipper is one target's delivery loop state.
type shipper struct {
	s       *Service
	t       Target
	log     zerolog.Logger
	cons    jetstream.Consumer
	alerted bool // the current lag episode was alerted
}

func (s *Service) ship(ctx context.Context, t Target, log zerolog.Logger) error {
	cons, err := s.d.JS.Consumer(ctx, natsx.StreamAudit, natsx.ConsumerAuditSinkPrefix+t.Name)
	if err != nil {
		return fmt.Errorf("opening consumer: %w", err)
	}
	sh := &shipper{s: s, t: t, log: log, cons: cons}
	log.Info().Strs("kinds", t.Kinds).Int("batch_size", t.BatchSize).Msg("audit sink shipping")
	for ctx.Err() == nil {
		batch, err := cons.Fetch(t.BatchSize, jetstream.FetchMaxWait(s.d.FetchWait))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Warn().Err(err).Msg("fetching audit records")
			retry.Sleep(ctx, s.d.RetryMin)
			continue
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if len(msgs) == 0 {
			sh.lagFromInfo(ctx)
			continue
		}
		if err := sh.deliver(ctx, msgs); err != nil {
			return err
		}
	}
	return nil
}

// deliver sends one batch until the sink accepts it, then acks it (one
// cumulative ack). The batch is all that is in flight (MaxAckPending), so
// nothing newer is sent before it: order holds across failures.
func (sh *shipper) deliver(ctx context.Context, msgs []jetstream.Msg) error {
	recs := make([]events.AuditRecord, 0, len(msgs))
	idx := make([]int, 0, len(msgs)) // recs[i] came from msgs[idx[i]]
	for i, m := range msgs {
		var r events.AuditRecord
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			// Not a record pwsync wrote: nothing a SIEM could read.
			sh.log.Error().Err(err).Str("subject", m.Subject()).Msg("skipping an undecodable audit message")
			continue
		}
		recs, idx = append(recs, r), append(idx, i)
	}
	wait, from, lastTouch := sh.s.d.RetryMin, 0, sh.s.d.Now()
	for failures := 0; from < len(recs); failures++ {
		err := sh.t.Sink.Send(ctx, recs[from:])
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil // the lease's successor gets the batch after AckWait
		}
		var pe *partialError
		if errors.As(err, &pe) && pe.Accepted > 0 {
			if aerr := msgs[idx[from+pe.Accepted-1]].DoubleAck(ctx); aerr == nil {
				metrics.AuditShipped(sh.t.Name, pe.Accepted)
				from += pe.Accepted
			}
		}
		metrics.AuditSinkFailed(sh.t.Name)
		after := wait
		var ra *retryAfterError
		if errors.As(err, &ra) {
			after = max(ra.After, sh.s.d.RetryMin)
		} else {
			wait = min(wait*2, sh.s.d.RetryMax)
		}
		lag := sh.lag(msgs[len(msgs)-1]) + uint64(len(msgs))
		ev := sh.log.Warn()
		if failures > 0 && failures%10 != 0 {
			ev = sh.log.Debug() // the first failure and every tenth are worth a warning
		}
		ev.Err(err).Int("failures", failures+1).Dur("retry_in", after).Uint64("lag", lag).Msg("audit sink refused a batch; keeping it")
		sh.checkLag(ctx, lag)
		if !retry.Sleep(ctx, after) {
			return nil
		}
		if sh.s.d.Now().Sub(lastTouch) > sh.s.d.AckWait/3 {
			for _, m := range msgs {
				_ = m.InProgress() // still ours: no redelivery while we retry
			}
			lastTouch = sh.s.d.Now()
		}
	}
	last := msgs[len(msgs)-1]
	if err := last.DoubleAck(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		// Redelivered after AckWait and sent again: at least once.
		sh.log.Warn().Err(err).Msg("acknowledging a delivered batch failed")
		return nil
	}
	metrics.AuditShipped(sh.t.Name, len(recs)-from)
	sh.checkLag(ctx, sh.lag(last))
	return nil
}

// lag is what the consumer still holds after m (free: in m's metadata).
func (sh *shipper) lag(m jetstream.Msg) uint64 {
	md, err := m.Metadata()
	if err != nil {
		return 0
	}
	return md.NumPending
}

func (sh *shipper) lagFromInfo(ctx context.Context) {
	info, err := sh.cons.Info(ctx)
	if err != nil {
		return
	}
	sh.checkLag(ctx, info.NumPending+uint64(info.NumAckPending))
}

// checkLag sets the metric, and alerts once when the backlog passes the
// limit (again only after it fell below half of it).
func (sh *shipper) checkLag(ctx context.Context, lag uint64) {
	metrics.AuditLag(sh.t.Name, lag)
	limit := uint64(sh.t.LagAlert)
	switch {
	case limit == 0:
	case lag > limit && !sh.alerted:
		sh.alerted = true
		reason := fmt.Sprintf("audit sink %s is %d records behind (limit %d): the SIEM is not receiving the audit trail", sh.t.Name, lag, limit)
		sh.log.Error().Uint64("lag", lag).Int("lag_alert", sh.t.LagAlert).Msg("audit sink backlog over its limit")
		now := sh.s.d.Now().UTC()
		a := events.Action{ID: events.KeySafe("auditship." + sh.t.Name + ".lag." + now.Format("20060102T150405")),
			Kind: events.ActionAlert, Rule: "audit-sink", Reason: reason, EventID: "auditship." + sh.t.Name, EventTime: now}
		if sh.s.d.Pub != nil {
			if _, err := sh.s.d.Pub.PublishJSON(ctx, a.Subject(), a.ID, a); err != nil {
				sh.log.Error().Err(err).Msg("publishing the audit sink alert failed")
			}
		}
	case lag <= limit/2 && sh.alerted:
		sh.alerted = false
		sh.log.Info().Uint64("lag", lag).Msg("audit sink caught up")
	}
}
