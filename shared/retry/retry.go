// Package retry is pwsync's one way to try again: Until retries an operation
// until it succeeds (a Graph call, a delta round), Forever keeps long-running
// work running (a watch, a consumer). Both take their intervals from a
// backoff/v4 BackOff, stop when their context ends and never sleep past it.
package retry

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Option changes how Until and Forever retry.
type Option func(*options)

type options struct {
	notify  func(err error, wait time.Duration)
	atLeast func(err error) time.Duration
}

// Notify has fn told of every failure with the wait before the next try
// (for the log).
func Notify(fn func(err error, wait time.Duration)) Option {
	return func(o *options) { o.notify = fn }
}

// AtLeast makes the wait after a failure at least fn(err): the Retry-After a
// server asked for. The backoff's own interval still applies when longer.
func AtLeast(fn func(err error) time.Duration) Option {
	return func(o *options) { o.atLeast = fn }
}

// Permanent marks err as not worth retrying: Until returns it (unwrapped) at
// once.
func Permanent(err error) error { return backoff.Permanent(err) }

// GaveUpError is what Until returns when the BackOff gave up (its elapsed
// time or its tries were used up): Err is the last failure.
type GaveUpError struct{ Err error }

func (e *GaveUpError) Error() string { return "retries used up: " + e.Err.Error() }
func (e *GaveUpError) Unwrap() error { return e.Err }

// Until runs op until it returns nil, then returns nil. It returns op's
// error unwrapped when op marked it Permanent, ctx's error when ctx ended
// (during a wait, or before the next try), and a *GaveUpError when bo gave
// up. bo is reset first.
func Until(ctx context.Context, bo backoff.BackOff, op func(context.Context) error, opts ...Option) error {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	h := &hinted{BackOff: bo}
	err := backoff.RetryNotify(func() error {
		err := op(ctx)
		if err == nil {
			return nil
		}
		if o.atLeast != nil {
			h.min = o.atLeast(err)
		}
		return err
	}, backoff.WithContext(h, ctx), o.notify)
	if h.gaveUp && err != nil && ctx.Err() == nil {
		return &GaveUpError{Err: err}
	}
	return err
}

// hinted is a BackOff whose interval is at least min, and which remembers
// that it gave up.
type hinted struct {
	backoff.BackOff
	min    time.Duration
	gaveUp bool
}

func (h *hinted) NextBackOff() time.Duration {
	d := h.BackOff.NextBackOff()
	if d == backoff.Stop {
		h.gaveUp = true
		return d
	}
	return max(d, h.min)
}

// Forever runs run again and again until ctx ends: run is work that should
// not stop (a watch, a consumer), so whatever it returns, it runs again after
// bo's next interval. run reports whether the run was healthy (it got going
// before it ended), which starts the intervals over. A BackOff that gives up
// is asked again after a Reset: Forever never stops while ctx lasts.
func Forever(ctx context.Context, bo backoff.BackOff, run func(context.Context) (healthy bool, err error), opts ...Option) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	bo.Reset()
	for {
		healthy, err := run(ctx)
		if ctx.Err() != nil {
			return
		}
		if healthy {
			bo.Reset()
		}
		d := bo.NextBackOff()
		if d == backoff.Stop {
			bo.Reset()
			d = bo.NextBackOff()
		}
		if o.atLeast != nil && err != nil {
			d = max(d, o.atLeast(err))
		}
		if o.notify != nil {
			o.notify(err, d)
		}
		if !Sleep(ctx, d) {
			return
		}
	}
}

// Exponential is an exponential BackOff from initial to at most maxInterval
// apart, with backoff's default jitter and growth; maxElapsed 0 never gives
// up.
func Exponential(initial, maxInterval, maxElapsed time.Duration) *backoff.ExponentialBackOff {
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(initial),
		backoff.WithMaxInterval(maxInterval),
		backoff.WithMaxElapsedTime(maxElapsed))
}

// Constant is a BackOff of d between tries, forever.
func Constant(d time.Duration) backoff.BackOff { return backoff.NewConstantBackOff(d) }

// Sleep waits d or until ctx ends; false when ctx ended.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// IsGaveUp reports whether err says the retries were used up.
func IsGaveUp(err error) bool {
	var g *GaveUpError
	return errors.As(err, &g)
}
