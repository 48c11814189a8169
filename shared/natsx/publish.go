package natsx

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Publisher publishes JSON messages with a stable message ID and waits for
// JetStream's acknowledgement: a nil error means the message is stored.
type Publisher struct {
	js jetstream.JetStream
}

// NewPublisher returns a Publisher over js.
func NewPublisher(js jetstream.JetStream) *Publisher { return &Publisher{js: js} }

// PublishJSON encodes v and publishes it on subject with msgID as Nats-Msg-Id.
// It reports whether JetStream dropped it as a duplicate.
func (p *Publisher) PublishJSON(ctx context.Context, subject, msgID string, v any) (duplicate bool, err error) {
	data, err := json.Marshal(v)
	if err != nil {
		return false, fmt.Errorf("encoding %s for %s: %w", msgID, subject, err)
	}
	return p.Publish(ctx, subject, msgID, data)
}

// Publish publishes raw data with msgID as Nats-Msg-Id.
func (p *Publisher) Publish(ctx context.Context, subject, msgID string, data []byte) (duplicate bool, err error) {
	ack, err := p.js.Publish(ctx, subject, data, jetstream.WithMsgID(msgID))
	if err != nil {
		return false, fmt.Errorf("publishing %s on %s: %w", msgID, subject, err)
	}
	return ack.Duplicate, nil
}
