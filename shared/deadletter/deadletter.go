// Package deadletter reads dead letters: messages that exhausted their
// deliveries or that their consumer refused (terminated). The DLQ stream
// holds JetStream's MAX_DELIVERIES / MSG_TERMINATED advisories; the
// original message stays in its own stream, fetched by sequence. The admin
// API lists and retries them; the notifier alerts the admins about them.
package deadletter

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/shared/events"
)

// Letter is one dead letter.
type Letter struct {
	Seq        uint64          `json:"seq"` // in the DLQ stream; the retry handle
	Time       time.Time       `json:"time"`
	Why        string          `json:"why"` // max_deliveries | terminated
	Reason     string          `json:"reason"`
	Stream     string          `json:"stream"`
	Consumer   string          `json:"consumer"`
	StreamSeq  uint64          `json:"stream_seq"`
	Deliveries uint64          `json:"deliveries"`
	Subject    string          `json:"subject,omitempty"`
	UPN        string          `json:"upn,omitempty"`
	ActionID   string          `json:"action_id,omitempty"` // when the original is an action
	EventID    string          `json:"event_id,omitempty"`  // the action's event, or the event itself
	Available  bool            `json:"available"`           // the original is still in its stream
	Message    json.RawMessage `json:"message,omitempty"`
}

// Why values.
const (
	WhyMaxDeliveries = "max_deliveries"
	WhyTerminated    = "terminated"
)

// advisory is the part of JetStream's MAX_DELIVERIES / MSG_TERMINATED
// advisories used here.
type advisory struct {
	Time       time.Time `json:"timestamp"`
	Stream     string    `json:"stream"`
	Consumer   string    `json:"consumer"`
	StreamSeq  uint64    `json:"stream_seq"`
	Deliveries uint64    `json:"deliveries"`
	Reason     string    `json:"reason"`
}

// Decode reads an advisory stored at seq of the DLQ stream (its subject,
// data and storage time); the original is not looked up (see Resolve).
func Decode(seq uint64, subject string, data []byte, stored time.Time) (Letter, error) {
	var adv advisory
	if err := json.Unmarshal(data, &adv); err != nil {
		return Letter{}, fmt.Errorf("decoding DLQ advisory %d: %w", seq, err)
	}
	d := Letter{Seq: seq, Time: adv.Time, Stream: adv.Stream, Consumer: adv.Consumer, StreamSeq: adv.StreamSeq,
		Deliveries: adv.Deliveries, Reason: adv.Reason, Why: WhyTerminated}
	if strings.Contains(subject, "MAX_DELIVERIES") {
		d.Why = WhyMaxDeliveries
		d.Reason = fmt.Sprintf("not acknowledged after %d deliveries", adv.Deliveries)
	}
	if d.Time.IsZero() {
		d.Time = stored
	}
	return d, nil
}

// Get reads the dead letter at seq of the DLQ stream and its original.
// A missing seq is jetstream.ErrMsgNotFound.
func Get(ctx context.Context, js jetstream.JetStream, dlq jetstream.Stream, seq uint64) (Letter, error) {
	m, err := dlq.GetMsg(ctx, seq)
	if err != nil {
		return Letter{}, err
	}
	d, err := Decode(seq, m.Subject, m.Data, m.Time)
	if err != nil {
		return Letter{}, err
	}
	Resolve(ctx, js, &d)
	return d, nil
}

// Resolve fills in what the original message says, if it is still in its
// stream (a gone stream or an aged-out message leaves d not Available).
func Resolve(ctx context.Context, js jetstream.JetStream, d *Letter) {
	src, err := js.Stream(ctx, d.Stream)
	if err != nil {
		return
	}
	orig, err := src.GetMsg(ctx, d.StreamSeq)
	if err != nil {
		return
	}
	d.Available, d.Subject = true, orig.Subject
	if json.Valid(orig.Data) {
		d.Message = orig.Data
	}
	d.UPN, d.ActionID, d.EventID = identify(orig.Data)
}

// identify finds the user and IDs in an action ({"id","event_id","user":
// {"upn"}}) or an event envelope ({"id","data":{"upn"}}).
func identify(data []byte) (upn, actionID, eventID string) {
	var m struct {
		ID      string         `json:"id"`
		EventID string         `json:"event_id"`
		User    events.UserRef `json:"user"`
		Data    struct {
			UPN string `json:"upn"`
		} `json:"data"`
	}
	if json.Unmarshal(data, &m) != nil {
		return "", "", ""
	}
	if m.EventID != "" || m.User.UPN != "" { // an action
		return m.User.UPN, m.ID, m.EventID
	}
	return m.Data.UPN, "", m.ID
}
