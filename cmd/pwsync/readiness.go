package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/health"
	"github.com/pwsync/pwsync/shared/natsx"
)

// catchUp is the readiness of this process's consumers: ready once each
// has processed what its stream held when the stages before it were done
// (the first: the other targets ready, i.e. ingest's first AD sync and
// Graph delta round stored). A first start on a large directory stores
// tens of thousands of events before it is "ready"; a reset made then
// would wait behind them (issue 21: 2.4 s instead of 0.47 s). Latched
// once reached: a later burst (a campaign, a policy change) must not take
// the replica out of service.
type catchUp struct {
	js      jetstream.JetStream
	parking *natsx.Parking
	before  func() bool
	stages  []catchUpStage
	log     zerolog.Logger

	mu    sync.Mutex // one check at a time; guards marks and next
	marks []uint64   // per stage: the stream's last sequence when the stage began
	next  int        // the first stage not done
	done  atomic.Bool
	start time.Time
}

// catchUpStage is one consumer that must catch up, in order.
type catchUpStage struct{ stream, consumer string }

// catchUpTarget returns the readiness target of the consumers this process
// runs (evaluator, then actuator); before is the rest of the targets;
// parking is what those consumers parked on purpose.
func catchUpTarget(js jetstream.JetStream, parking *natsx.Parking, t config.Targets, before []health.Target, log zerolog.Logger) health.Target {
	c := &catchUp{js: js, parking: parking, log: log, start: time.Now(), before: func() bool {
		for _, b := range before {
			if !b.Ready() {
				return false
			}
		}
		return true
	}}
	if t.Evaluator {
		c.stages = append(c.stages, catchUpStage{natsx.StreamEvents, natsx.ConsumerEvaluator})
	}
	if t.Actuator {
		c.stages = append(c.stages, catchUpStage{natsx.StreamActions, natsx.ConsumerActuator})
	}
	return health.Target{Name: "caught up", Ready: c.Ready}
}

// Ready checks the stages from the first not done; each call costs one
// stream and one consumer info per stage checked, until latched.
func (c *catchUp) Ready() bool {
	if c.done.Load() {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.before() {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for c.next < len(c.stages) {
		st := c.stages[c.next]
		if len(c.marks) == c.next {
			s, err := c.js.Stream(ctx, st.stream)
			if err != nil {
				c.log.Debug().Err(err).Str("stream", st.stream).Msg("readiness: stream info")
				return false
			}
			c.marks = append(c.marks, s.CachedInfo().State.LastSeq)
		}
		ok, err := c.caughtUp(ctx, st, c.marks[c.next])
		if err != nil {
			c.log.Debug().Err(err).Str("consumer", st.consumer).Msg("readiness: consumer info")
			return false
		}
		if !ok {
			return false
		}
		c.next++
	}
	c.done.Store(true)
	c.log.Info().Dur("since_start", time.Since(c.start)).Msg("consumers caught up with the start's backlog: ready")
	return true
}

// caughtUp: everything up to mark acked, or nothing left at all (a
// filtered consumer's ack floor stops at the last message it matches), or
// everything up to mark delivered and all that is not acked parked on
// purpose by this process (an undo waiting for Entra can wait for hours;
// it must not keep a restarted pwsync unready).
func (c *catchUp) caughtUp(ctx context.Context, st catchUpStage, mark uint64) (bool, error) {
	cons, err := c.js.Consumer(ctx, st.stream, st.consumer)
	if err != nil {
		return false, fmt.Errorf("consumer %s on %s: %w", st.consumer, st.stream, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("consumer %s on %s: %w", st.consumer, st.stream, err)
	}
	return info.AckFloor.Stream >= mark || info.NumPending == 0 && info.NumAckPending == 0 ||
		info.Delivered.Stream >= mark && info.NumAckPending <= c.parking.Count(st.consumer), nil
}
