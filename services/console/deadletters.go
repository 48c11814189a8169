package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/shared/adminapi"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
)

// DeadLetter is a message that exhausted its deliveries or was refused
// (terminated) by its consumer. The DLQ stream holds JetStream's advisory;
// the original stays in its own stream.
type DeadLetter struct {
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
	Available  bool            `json:"available"` // the original is still in its stream
	Message    json.RawMessage `json:"message,omitempty"`
}

// advisory is the part of JetStream's MAX_DELIVERIES / MSG_TERMINATED
// advisories used here.
type advisory struct {
	Type       string    `json:"type"`
	Time       time.Time `json:"timestamp"`
	Stream     string    `json:"stream"`
	Consumer   string    `json:"consumer"`
	StreamSeq  uint64    `json:"stream_seq"`
	Deliveries uint64    `json:"deliveries"`
	Reason     string    `json:"reason"`
}

const deadLetterPage = 200

func (a *api) deadLetters(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := a.ctx(r, 30*time.Second)
	defer cancel()
	dlq, err := a.JS.Stream(ctx, natsx.StreamDLQ)
	if err != nil {
		a.fail(w, r, fmt.Errorf("opening DLQ: %w", err))
		return
	}
	info, err := dlq.Info(ctx)
	if err != nil {
		a.fail(w, r, fmt.Errorf("reading DLQ: %w", err))
		return
	}
	out := []DeadLetter{}
	if info.State.Msgs > 0 {
		first := info.State.FirstSeq
		if info.State.LastSeq >= deadLetterPage && info.State.LastSeq-deadLetterPage+1 > first {
			first = info.State.LastSeq - deadLetterPage + 1
		}
		for seq := info.State.LastSeq; seq >= first && seq > 0; seq-- { // newest first
			d, err := a.deadLetter(ctx, dlq, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				a.fail(w, r, err)
				return
			}
			out = append(out, d)
		}
	}
	adminapi.WriteJSON(w, http.StatusOK, map[string]any{"dead_letters": out, "total": info.State.Msgs})
}

func (a *api) deadLetter(ctx context.Context, dlq jetstream.Stream, seq uint64) (DeadLetter, error) {
	m, err := dlq.GetMsg(ctx, seq)
	if err != nil {
		return DeadLetter{}, err
	}
	var adv advisory
	if err := json.Unmarshal(m.Data, &adv); err != nil {
		return DeadLetter{}, fmt.Errorf("decoding DLQ advisory %d: %w", seq, err)
	}
	d := DeadLetter{Seq: seq, Time: adv.Time, Stream: adv.Stream, Consumer: adv.Consumer, StreamSeq: adv.StreamSeq,
		Deliveries: adv.Deliveries, Reason: adv.Reason, Why: "terminated"}
	if strings.Contains(m.Subject, "MAX_DELIVERIES") {
		d.Why = "max_deliveries"
		d.Reason = fmt.Sprintf("not acknowledged after %d deliveries", adv.Deliveries)
	}
	if d.Time.IsZero() {
		d.Time = m.Time
	}
	src, err := a.JS.Stream(ctx, adv.Stream)
	if err != nil {
		return d, nil // the stream is gone: listed, not retriable
	}
	orig, err := src.GetMsg(ctx, adv.StreamSeq)
	if err != nil {
		return d, nil // aged out
	}
	d.Available, d.Subject = true, orig.Subject
	if json.Valid(orig.Data) {
		d.Message = orig.Data
	}
	d.UPN = upnOf(orig.Data)
	return d, nil
}

// upnOf finds the user in an action ({"user":{"upn"}}) or an AD event
// envelope ({"data":{"upn"}}).
func upnOf(data []byte) string {
	var m struct {
		User events.UserRef `json:"user"`
		Data struct {
			UPN string `json:"upn"`
		} `json:"data"`
	}
	if json.Unmarshal(data, &m) != nil {
		return ""
	}
	if m.User.UPN != "" {
		return m.User.UPN
	}
	return m.Data.UPN
}

// retryDeadLetter republishes the original message to its subject under a
// new message ID derived from the dead letter, so a double click within the
// duplicate window retries once. Consumers are idempotent (the actuator's
// done-steps, the evaluator's state), so what already happened is not redone.
func (a *api) retryDeadLetter(w http.ResponseWriter, r *http.Request) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		adminapi.Error(w, http.StatusBadRequest, "seq: a positive integer")
		return
	}
	ctx, cancel := a.ctx(r, 30*time.Second)
	defer cancel()
	dlq, err := a.JS.Stream(ctx, natsx.StreamDLQ)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	d, err := a.deadLetter(ctx, dlq, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		adminapi.Error(w, http.StatusNotFound, "no such dead letter")
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if !d.Available {
		adminapi.Error(w, http.StatusConflict, "the original message is no longer in "+d.Stream)
		return
	}
	src, err := a.JS.Stream(ctx, d.Stream)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	orig, err := src.GetMsg(ctx, d.StreamSeq)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	msgID := fmt.Sprintf("retry.%s.%d.dlq%d", d.Stream, d.StreamSeq, seq)
	dup, err := natsx.NewPublisher(a.JS).Publish(ctx, orig.Subject, msgID, orig.Data)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	p, _ := adminapi.PrincipalFrom(r.Context())
	rec := events.AuditRecord{Kind: events.KindAdmin, EventID: msgID, Action: "retry_dead_letter", Outcome: events.OutcomeOK,
		User: events.UserRef{UPN: d.UPN}, Detail: fmt.Sprintf("%s republished %s seq %d to %s (%s: %s)", p.Name, d.Stream, d.StreamSeq, orig.Subject, d.Why, d.Reason)}
	if dup {
		rec.Outcome, rec.Detail = events.OutcomeSkipped, "already retried: "+rec.Detail
	}
	if err := a.audit.Write(ctx, rec); err != nil {
		a.fail(w, r, err)
		return
	}
	adminapi.WriteJSON(w, http.StatusOK, map[string]any{"retried": !dup, "duplicate": dup, "subject": orig.Subject, "msg_id": msgID})
}
