package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/health"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/natstest"
)

// TestCatchUpReadiness: the consumers' readiness waits for the other
// targets, then for the evaluator to ack what EVENTS held at that moment
// (not what came after), then for the actuator likewise on ACTIONS; once
// reached it stays, whatever arrives later.
func TestCatchUpReadiness(t *testing.T) {
	_, conn := natstest.Run(t)
	natstest.EnsureTopology(t, conn.JS, 1)
	ctx := context.Background()
	publish := func(subject string, n int) {
		t.Helper()
		for i := range n {
			if _, err := conn.JS.Publish(ctx, subject, fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	ack := func(stream, consumer string, n int) {
		t.Helper()
		cons, err := conn.JS.Consumer(ctx, stream, consumer)
		if err != nil {
			t.Fatal(err)
		}
		batch, err := cons.Fetch(n, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
			got++
		}
		if got != n {
			t.Fatalf("fetched %d from %s, want %d", got, consumer, n)
		}
	}

	var othersReady atomic.Bool
	target := catchUpTarget(conn.JS, natsx.NewParking(), config.Targets{Evaluator: true, Actuator: true},
		[]health.Target{{Name: "ingest", Ready: othersReady.Load}}, zerolog.Nop())

	publish("events.ad.user", 5) // the full sync's backlog
	if target.Ready() {
		t.Fatal("ready before the other targets")
	}
	othersReady.Store(true)
	if target.Ready() {
		t.Fatal("ready with 5 events unprocessed")
	}
	publish("events.ad.user", 2) // after the mark: not waited for
	ack(natsx.StreamEvents, natsx.ConsumerEvaluator, 4)
	if target.Ready() {
		t.Fatal("ready with 1 event of the backlog unprocessed")
	}
	publish("actions.graph.require_change", 3) // what the backlog decided
	ack(natsx.StreamEvents, natsx.ConsumerEvaluator, 1)
	if target.Ready() {
		t.Fatal("ready with the backlog's 3 actions unprocessed")
	}
	ack(natsx.StreamActions, natsx.ConsumerActuator, 3)
	if !target.Ready() {
		t.Fatal("not ready with both backlogs processed (2 later events pending do not count)")
	}
	publish("events.ad.user", 50) // a later burst
	if !target.Ready() {
		t.Fatal("a burst after ready took readiness away")
	}
}

// TestCatchUpReadinessCountsParkedAsHandled: an action of the backlog that
// its handler parked on purpose (an undo waiting for Entra: RetryLater)
// does not keep a restarted pwsync unready; one that failed does.
func TestCatchUpReadinessCountsParkedAsHandled(t *testing.T) {
	for _, tc := range []struct {
		name      string
		err       error
		wantReady bool
	}{
		{"parked", &natsx.RetryLater{After: time.Hour, Err: errors.New("waiting for Entra")}, true},
		{"failed", errors.New("graph 500"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, conn := natstest.Run(t)
			natstest.EnsureTopology(t, conn.JS, 1)
			ctx := context.Background()
			for i := range 3 {
				if _, err := conn.JS.Publish(ctx, "actions.graph.require_change", fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
					t.Fatal(err)
				}
			}
			parking := natsx.NewParking()
			target := catchUpTarget(conn.JS, parking, config.Targets{Actuator: true}, nil, zerolog.Nop())
			if target.Ready() {
				t.Fatal("ready with 3 actions unprocessed")
			}
			cons, err := conn.JS.Consumer(ctx, natsx.StreamActions, natsx.ConsumerActuator)
			if err != nil {
				t.Fatal(err)
			}
			batch, err := cons.Fetch(3, jetstream.FetchMaxWait(2*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			handle := natsx.Process(ctx, zerolog.Nop(), time.Second, parking, func(context.Context, json.RawMessage, natsx.Meta) error {
				n++
				if n == 2 {
					return tc.err // the middle one waits or fails
				}
				return nil
			})
			for m := range batch.Messages() {
				handle(m)
			}
			if n != 3 {
				t.Fatalf("handled %d, want 3", n)
			}
			if got := target.Ready(); got != tc.wantReady {
				t.Fatalf("ready = %v with the middle action %s, want %v", got, tc.name, tc.wantReady)
			}
		})
	}
}
