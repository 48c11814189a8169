package adwatch

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/shared/events"
)

// JetStreamSink publishes each user as an events.Envelope (events.ad.user) with
// the user's EventID as Nats-Msg-Id, so a replay is dropped as a duplicate.
type JetStreamSink struct {
	js  jetstream.JetStream
	now func() time.Time
}

// NewJetStreamSink returns a Sink over js; the EVENTS stream must exist.
func NewJetStreamSink(js jetstream.JetStream) *JetStreamSink {
	return &JetStreamSink{js: js, now: time.Now}
}

var _ Sink = (*JetStreamSink)(nil)

// Publish sends the whole batch asynchronously, then waits for every ack:
// one round trip per batch instead of one per user.
func (s *JetStreamSink) Publish(ctx context.Context, users []events.ADUser) error {
	at := s.now()
	acks := make([]jetstream.PubAckFuture, 0, len(users))
	for _, u := range users {
		env, err := events.NewEnvelope(u.EventID(), events.SourceAD, events.TypeADUser, at, u)
		if err != nil {
			return err
		}
		data, err := json.Marshal(env)
		if err != nil {
			return fmt.Errorf("encoding event %s: %w", env.ID, err)
		}
		f, err := s.js.PublishAsync(env.Subject(), data, jetstream.WithMsgID(env.ID))
		if err != nil {
			return fmt.Errorf("publishing event %s: %w", env.ID, err)
		}
		acks = append(acks, f)
	}
	for _, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publishing event %s: %w", f.Msg().Header.Get("Nats-Msg-Id"), err)
		case <-ctx.Done():
			return fmt.Errorf("waiting for JetStream acks: %w", ctx.Err())
		}
	}
	return nil
}
