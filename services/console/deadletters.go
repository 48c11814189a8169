package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/shared/adminapi"
	"github.com/pwsync/pwsync/shared/deadletter"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
)

// DeadLetter is a message that exhausted its deliveries or was refused
// (terminated) by its consumer.
type DeadLetter = deadletter.Letter

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
	return deadletter.Get(ctx, a.JS, dlq, seq)
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
