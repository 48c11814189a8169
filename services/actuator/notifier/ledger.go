package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/shared/natsx"
)

// The ledger makes each notice go out once per (user, password, template,
// lead day): events.Notice.LedgerKey. A send is bracketed by two writes:
//
//	claim:   absent|failed -> sending   (KV Create / Update on the revision:
//	         one claimant wins, whatever redeliveries or replicas race)
//	send:    Graph sendMail / sendActivityNotification
//	settle:  sending -> sent, or -> failed when Graph refused it (a 4xx,
//	         429 or 5xx answer means the message was not accepted)
//
// A crash (or a lost KV write) between the send and the settle leaves
// "sending": Graph may or may not have accepted the message, and there is
// no cheap way to ask. We choose AT MOST ONCE there: a notice found in
// "sending" is not sent again but audited as in doubt. Reasons: the window
// is one HTTP round trip; the next lead day's notice follows anyway; and a
// duplicate (or a resend loop) is what makes users distrust and ignore
// these mails. The pacing wait happens before the claim, so a crash while
// waiting leaves nothing in doubt.

const (
	stateSending = "sending"
	stateSent    = "sent"
	stateFailed  = "failed"
)

type ledgerEntry struct {
	State    string    `json:"state"`
	At       time.Time `json:"at"`
	Channel  string    `json:"channel,omitempty"` // email | teams | webhook
	Via      string    `json:"via,omitempty"`     // sender mailbox
	Attempts int       `json:"attempts"`          // failed sends so far
	ActionID string    `json:"action_id,omitempty"`
}

type ledger struct {
	kv  jetstream.KeyValue
	now func() time.Time
}

// claimResult says what a claim found.
type claimResult int

const (
	claimed     claimResult = iota // ours to send
	alreadySent                    // sent before: skip
	inDoubt                        // "sending" left by a crash or a concurrent claimant: skip
)

// claim takes key for sending; rev is the revision to settle on.
func (l *ledger) claim(ctx context.Context, key, actionID, channel, via string) (claimResult, uint64, ledgerEntry, error) {
	e := ledgerEntry{State: stateSending, At: l.now().UTC(), Channel: channel, Via: via, ActionID: actionID}
	for range 3 { // a lost race on a failed entry: look again
		rev, err := l.kv.Create(ctx, key, mustJSON(e))
		if err == nil {
			return claimed, rev, e, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, 0, e, fmt.Errorf("claiming ledger %s: %w", key, err)
		}
		cur, rev, err := l.get(ctx, key)
		switch {
		case natsx.IsNotFound(err):
			continue // expired or deleted meanwhile: Create again
		case err != nil:
			return 0, 0, e, err
		}
		switch cur.State {
		case stateSent:
			return alreadySent, rev, cur, nil
		case stateFailed:
			e.Attempts = cur.Attempts
			next, err := l.kv.Update(ctx, key, mustJSON(e), rev)
			if err == nil {
				return claimed, next, e, nil
			}
		default:
			return inDoubt, rev, cur, nil
		}
	}
	return inDoubt, 0, e, nil
}

func (l *ledger) get(ctx context.Context, key string) (ledgerEntry, uint64, error) {
	kve, err := l.kv.Get(ctx, key)
	if err != nil {
		if natsx.IsNotFound(err) {
			return ledgerEntry{}, 0, err
		}
		return ledgerEntry{}, 0, fmt.Errorf("reading ledger %s: %w", key, err)
	}
	var e ledgerEntry
	if err := json.Unmarshal(kve.Value(), &e); err != nil {
		return ledgerEntry{}, 0, fmt.Errorf("decoding ledger %s: %w", key, err)
	}
	return e, kve.Revision(), nil
}

// sent settles a claim as sent. The message is out: a KV blip must not
// leave it "sending", so the write is retried a few times.
func (l *ledger) sent(ctx context.Context, key string, rev uint64, e ledgerEntry) error {
	e.State, e.At = stateSent, l.now().UTC()
	var err error
	for i := range 5 {
		if _, err = l.kv.Update(ctx, key, mustJSON(e), rev); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("recording sent %s: %w", key, err)
		case <-time.After(time.Duration(50<<i) * time.Millisecond):
		}
	}
	return fmt.Errorf("recording sent %s: %w", key, err)
}

// failed settles a claim as not sent; counts says whether it is an attempt
// (a fallback to another channel is not). It returns the attempts so far.
func (l *ledger) failed(ctx context.Context, key string, rev uint64, e ledgerEntry, counts bool) (int, error) {
	e.State, e.At = stateFailed, l.now().UTC()
	if counts {
		e.Attempts++
	}
	if _, err := l.kv.Update(ctx, key, mustJSON(e), rev); err != nil {
		return e.Attempts, fmt.Errorf("recording failed send %s: %w", key, err)
	}
	return e.Attempts, nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // plain structs of strings, ints and times always encode
	}
	return b
}
