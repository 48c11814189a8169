package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/metrics"
)

// EventSink publishes AD user states to the EVENTS stream. Publish returns
// only when JetStream stored every event (or reported it a duplicate), so the
// watcher may then save its DirSync cookie.
type EventSink struct {
	js  jetstream.JetStream
	now func() time.Time
}

// NewEventSink returns a sink over js.
func NewEventSink(js jetstream.JetStream) *EventSink { return &EventSink{js: js, now: time.Now} }

// Publish publishes one event per user, pipelined, and waits for all acks.
func (s *EventSink) Publish(ctx context.Context, users []events.ADUser) error {
	// Bounded: during a NATS outage the watcher retries the batch (same IDs)
	// instead of hanging on acks that never come.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	at := s.now().UTC()
	futures := make([]jetstream.PubAckFuture, 0, len(users))
	for _, u := range users {
		ev, err := events.NewEnvelope(u.EventID(), events.SourceAD, events.TypeADUser, at, u)
		if err != nil {
			return err
		}
		data, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("encoding event %s: %w", ev.ID, err)
		}
		f, err := s.js.PublishAsync(ev.Subject(), data, jetstream.WithMsgID(ev.ID))
		if err != nil {
			return fmt.Errorf("publishing event %s: %w", ev.ID, err)
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			if !ack.Duplicate {
				metrics.Ingested(events.SourceAD, 1)
			}
		case err := <-f.Err():
			return fmt.Errorf("publishing event %s: %w", users[i].EventID(), err)
		case <-ctx.Done():
			return fmt.Errorf("publishing AD events: %w", ctx.Err())
		}
	}
	return nil
}

// PublishPolicy publishes a domain's changed password policy (adwatch.PolicySink).
func (s *EventSink) PublishPolicy(ctx context.Context, p events.ADPolicy) error {
	return s.publishOne(ctx, p.EventID(), events.TypeADPolicy, p)
}

// publishOne publishes one AD event and waits for JetStream's ack.
func (s *EventSink) publishOne(ctx context.Context, id, typ string, data any) error {
	ev, err := events.NewEnvelope(id, events.SourceAD, typ, s.now().UTC(), data)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encoding event %s: %w", ev.ID, err)
	}
	if _, err := s.js.Publish(ctx, ev.Subject(), raw, jetstream.WithMsgID(ev.ID)); err != nil {
		return fmt.Errorf("publishing event %s: %w", ev.ID, err)
	}
	return nil
}
