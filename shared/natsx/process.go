package natsx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// ErrPermanent marks an error that no retry can fix: the message is terminated.
var ErrPermanent = errors.New("permanent")

// Permanent wraps err so that the adapter terminates the message.
func Permanent(err error) error { return fmt.Errorf("%w: %w", ErrPermanent, err) }

// RetryLater asks for redelivery after a given delay (e.g. Graph's Retry-After).
type RetryLater struct {
	After time.Duration
	Err   error
}

func (r *RetryLater) Error() string { return fmt.Sprintf("retry in %s: %v", r.After, r.Err) }
func (r *RetryLater) Unwrap() error { return r.Err }

// Msg is the part of jetstream.Msg the adapter needs; tests feed fakes.
type Msg interface {
	Data() []byte
	Subject() string
	Headers() nats.Header
	Metadata() (*jetstream.MsgMetadata, error)
	Ack() error
	NakWithDelay(time.Duration) error
	TermWithReason(string) error
	InProgress() error
}

// Handler handles one decoded message. Returning nil acks it; ErrPermanent
// terminates it; *RetryLater redelivers after its delay; anything else
// redelivers with exponential delay.
type Handler[T any] func(ctx context.Context, v T, meta Meta) error

// Meta is what a handler may want to know about the delivery.
type Meta struct {
	Subject      string
	StreamSeq    uint64
	NumDelivered uint64
	MsgID        string
}

// Outcome is what the adapter did with a message.
type Outcome int

const (
	Acked Outcome = iota
	Naked
	Terminated
)

// Process turns a Handler into a jetstream message handler. It is the one
// place where an error's meaning for the message is decided and logged.
// Messages parked on purpose (RetryLater) are recorded in parking (nil: not
// recorded).
func Process[T any](base context.Context, log zerolog.Logger, budget time.Duration, parking *Parking, h Handler[T]) func(Msg) Outcome {
	return func(m Msg) Outcome {
		meta, err := m.Metadata()
		if err != nil {
			log.Error().Err(err).Str("subject", m.Subject()).Msg("message without metadata; terminating")
			_ = m.TermWithReason("no metadata")
			return Terminated
		}
		var v T
		if err := json.Unmarshal(m.Data(), &v); err != nil {
			log.Error().Err(err).Str("subject", m.Subject()).Uint64("stream_seq", meta.Sequence.Stream).Msg("undecodable; terminating")
			_ = m.TermWithReason("decode: " + err.Error())
			return Terminated
		}
		parking.unpark(meta.Consumer, meta.Sequence.Stream) // back, if it was parked
		md := Meta{Subject: m.Subject(), StreamSeq: meta.Sequence.Stream, NumDelivered: meta.NumDelivered}
		if hd := m.Headers(); hd != nil {
			md.MsgID = hd.Get(nats.MsgIdHdr)
		}
		l := log.With().Str("subject", md.Subject).Str("msg_id", md.MsgID).
			Uint64("stream_seq", md.StreamSeq).Uint64("num_delivered", md.NumDelivered).Logger()
		ctx, cancel := context.WithTimeout(l.WithContext(base), budget)
		defer cancel()
		stop := KeepAlive(ctx, m, 5*time.Second)
		err = h(ctx, v, md)
		stop()
		var later *RetryLater
		switch {
		case err == nil:
			if aerr := m.Ack(); aerr != nil {
				l.Warn().Err(aerr).Msg("ack failed; the message will be redelivered")
			}
			return Acked
		case errors.Is(err, ErrPermanent):
			l.Error().Err(err).Msg("permanent failure; terminating")
			_ = m.TermWithReason(truncate(err.Error(), 256))
			return Terminated
		case errors.As(err, &later):
			l.Warn().Err(err).Dur("retry_in", later.After).Msg("retrying later")
			if m.NakWithDelay(later.After) == nil {
				parking.park(meta.Consumer, meta.Sequence.Stream, later.After)
			}
			return Naked
		default:
			delay := RedeliveryDelay(md.NumDelivered)
			l.Warn().Err(err).Dur("retry_in", delay).Msg("transient failure; redelivering")
			_ = m.NakWithDelay(delay)
			return Naked
		}
	}
}

// RedeliveryDelay is the delay before the n-th redelivery: 1s, 2s, 4s ... 5m.
func RedeliveryDelay(numDelivered uint64) time.Duration {
	n := min(numDelivered, 9)
	return min(time.Second<<n/2, 5*time.Minute)
}

// KeepAlive tells the server the message is being worked on until stop is
// called, so that long work (Retry-After waits) does not hit AckWait.
func KeepAlive(ctx context.Context, m Msg, every time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_ = m.InProgress()
			}
		}
	}()
	return func() { cancel(); <-done }
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Consume runs fn for every message of the durable consumer, up to
// concurrency at a time, until ctx ends; then it stops taking messages and
// waits for the in-flight ones to finish.
func Consume(ctx context.Context, js jetstream.JetStream, stream, durable string, concurrency int, fn func(Msg) Outcome) error {
	cons, err := js.Consumer(ctx, stream, durable)
	if err != nil {
		return fmt.Errorf("opening consumer %s on %s: %w", durable, stream, err)
	}
	concurrency = max(concurrency, 1)
	slots := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	cc, err := cons.Consume(func(m jetstream.Msg) {
		slots <- struct{}{} // back-pressure: the next message waits for a free slot
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			fn(m)
		}()
	}, jetstream.PullMaxMessages(max(2*concurrency, 16)),
		jetstream.ConsumeErrHandler(func(jetstream.ConsumeContext, error) {}))
	if err != nil {
		return fmt.Errorf("consuming %s on %s: %w", durable, stream, err)
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	wg.Wait()
	return nil
}
