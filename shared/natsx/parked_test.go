package natsx

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestParkedMessagesDoNotHoldNewOnes: on the consumers whose handlers park
// messages with a delayed NAK (the evaluator's timers, the actuator's undos
// waiting for the cloud, the notifier's deferrals), more parked messages
// than the old MaxAckPending (256) must not hold a new message: a helpdesk
// reset published after 300 users' undo timers is handled at once, not
// when the first timer comes due.
func TestParkedMessagesDoNotHoldNewOnes(t *testing.T) {
	emb, err := StartEmbedded(EmbeddedConfig{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	conn, err := Connect(ConnectConfig{Embedded: emb, Name: t.Name()}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.NC.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := NewTopology(DefaultOptions()).Ensure(ctx, conn.JS); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.JS.CreateOrUpdateConsumer(ctx, StreamActions, NotifierConsumer(time.Minute)); err != nil {
		t.Fatal(err)
	}
	const parked = 300
	for _, tc := range []struct {
		name, stream, durable string
		park, live            string // subjects
	}{
		{"evaluator timers", StreamEvents, ConsumerEvaluator, "events.timer", "events.ad.user"},
		{"actuator undos", StreamActions, ConsumerActuator, "actions.clear_password_change", "actions.require_password_change"},
		{"notifier deferrals", StreamActions, ConsumerNotifier, "actions.notify", "actions.alert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub := NewPublisher(conn.JS)
			for i := range parked {
				if _, err := pub.PublishJSON(ctx, tc.park, fmt.Sprintf("%s.park.%d", tc.durable, i), map[string]int{"i": i}); err != nil {
					t.Fatal(err)
				}
			}
			var seen atomic.Int64
			live := make(chan time.Time, 1)
			h := Process(ctx, zerolog.Nop(), 10*time.Second, nil, func(_ context.Context, _ map[string]int, m Meta) error {
				if m.Subject == tc.live {
					live <- time.Now()
					return nil
				}
				seen.Add(1)
				return &RetryLater{After: 10 * time.Minute, Err: fmt.Errorf("not due")}
			})
			cctx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- Consume(cctx, conn.JS, tc.stream, tc.durable, 16, h) }()
			defer func() { stop(); <-done }()
			deadline := time.Now().Add(30 * time.Second)
			for seen.Load() < parked && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if n := seen.Load(); n < parked {
				t.Fatalf("only %d of %d messages delivered before the live one was sent: the consumer stalls on parked messages", n, parked)
			}
			sent := time.Now()
			if _, err := pub.PublishJSON(ctx, tc.live, tc.durable+".live", map[string]int{"i": -1}); err != nil {
				t.Fatal(err)
			}
			select {
			case at := <-live:
				t.Logf("%d parked; the live message handled %v after it was sent", parked, at.Sub(sent).Round(time.Millisecond))
			case <-time.After(5 * time.Second):
				info, _ := conn.JS.Consumer(ctx, tc.stream, tc.durable)
				var pending int
				if info != nil {
					if ci, err := info.Info(ctx); err == nil {
						pending = ci.NumAckPending
					}
				}
				t.Fatalf("the live message was not handled within 5 s of being sent (%d messages ack-pending): parked messages hold it", pending)
			}
		})
	}
}

// TestParkingIsPerProcess: what one Parking holds does not count in
// another. Tests run several pwsync stacks in one process; a package-wide
// record made one stack's parked undos count as another's handled actions
// (CI: TestCatchUpReadiness ready with its backlog unprocessed).
func TestParkingIsPerProcess(t *testing.T) {
	a, b := NewParking(), NewParking()
	for seq := range uint64(3) {
		a.park(ConsumerActuator, seq+1, time.Hour)
	}
	if got := a.Count(ConsumerActuator); got != 3 {
		t.Fatalf("a holds %d parked, want 3", got)
	}
	if got := b.Count(ConsumerActuator); got != 0 {
		t.Fatalf("b holds %d parked, want 0: parkings share their record", got)
	}
	a.unpark(ConsumerActuator, 2)
	if got := a.Count(ConsumerActuator); got != 2 {
		t.Fatalf("a holds %d parked after one came back, want 2", got)
	}
	var none *Parking // a service without one records nothing
	none.park(ConsumerActuator, 1, time.Hour)
	if got := none.Count(ConsumerActuator); got != 0 {
		t.Fatalf("nil parking counts %d", got)
	}
}
