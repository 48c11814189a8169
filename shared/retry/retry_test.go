package retry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/pwsync/pwsync/shared/retry"
)

var errBusy = errors.New("busy")

// constant is a BackOff of fixed interval d; gives up after tries intervals
// (never when tries is 0).
func constant(d time.Duration, tries uint64) backoff.BackOff {
	var b backoff.BackOff = backoff.NewConstantBackOff(d)
	if tries > 0 {
		b = backoff.WithMaxRetries(b, tries)
	}
	return b
}

func TestUntil(t *testing.T) {
	errBad := errors.New("bad request")
	tests := []struct {
		name      string
		bo        backoff.BackOff
		fails     int   // op fails this many times first
		failWith  error // with this error (errBusy when nil)
		permanent bool
		atLeast   time.Duration
		cancelAt  time.Duration // ctx ends after this, when set
		wantCalls int
		wantErr   error // errors.Is target; nil: success
		gaveUp    bool
		minTime   time.Duration
	}{
		{name: "first_try", bo: constant(time.Millisecond, 0), wantCalls: 1},
		{name: "after_failures", bo: constant(time.Millisecond, 0), fails: 3, wantCalls: 4},
		{name: "permanent_at_once", bo: constant(time.Millisecond, 0), fails: 3, failWith: errBad, permanent: true,
			wantCalls: 1, wantErr: errBad},
		{name: "gives_up", bo: constant(time.Millisecond, 2), fails: 10, wantCalls: 3, wantErr: errBusy, gaveUp: true},
		{name: "waits_at_least_retry_after", bo: constant(time.Millisecond, 0), fails: 2, atLeast: 60 * time.Millisecond,
			wantCalls: 3, minTime: 120 * time.Millisecond},
		{name: "context_ends_in_wait", bo: constant(time.Hour, 0), fails: 10, cancelAt: 50 * time.Millisecond,
			wantCalls: 1, wantErr: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancelAt > 0 {
				time.AfterFunc(tt.cancelAt, cancel)
			}
			calls, notified := 0, 0
			start := time.Now()
			err := retry.Until(ctx, tt.bo, func(context.Context) error {
				calls++
				if calls > tt.fails {
					return nil
				}
				e := errBusy
				if tt.failWith != nil {
					e = tt.failWith
				}
				if tt.permanent {
					return retry.Permanent(e)
				}
				return e
			}, retry.Notify(func(error, time.Duration) { notified++ }),
				retry.AtLeast(func(error) time.Duration { return tt.atLeast }))
			if calls != tt.wantCalls {
				t.Errorf("op ran %d times, want %d", calls, tt.wantCalls)
			}
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("err = %v, want success", err)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got := retry.IsGaveUp(err); got != tt.gaveUp {
				t.Errorf("IsGaveUp(%v) = %v, want %v", err, got, tt.gaveUp)
			}
			if tt.permanent {
				var p *backoff.PermanentError
				if errors.As(err, &p) {
					t.Errorf("err %v still wrapped as permanent", err)
				}
			}
			if el := time.Since(start); el < tt.minTime {
				t.Errorf("took %v, want at least %v (Retry-After)", el, tt.minTime)
			}
			if want := min(tt.fails, tt.wantCalls-1); !tt.permanent && tt.wantErr == nil && notified != want {
				t.Errorf("notified %d times, want %d", notified, want)
			}
		})
	}
}

// TestUntilFailureAfterCancel: an op that fails because ctx ended is not
// tried again and is not "gave up": Until returns ctx's error (as backoff's
// RetryNotify does).
func TestUntilFailureAfterCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := retry.Until(ctx, constant(time.Millisecond, 0), func(context.Context) error {
		calls++
		cancel()
		return errBusy
	})
	if calls != 1 || !errors.Is(err, context.Canceled) || retry.IsGaveUp(err) {
		t.Fatalf("calls %d err %v, want 1 call and context.Canceled", calls, err)
	}
}

func TestForever(t *testing.T) {
	t.Run("restarts_until_context_ends", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		runs := 0
		done := make(chan struct{})
		go func() {
			defer close(done)
			// gives up after one interval: Forever still goes on
			retry.Forever(ctx, constant(time.Millisecond, 1), func(context.Context) (bool, error) {
				runs++
				if runs == 5 {
					cancel()
				}
				return false, errBusy
			})
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Forever did not end with its context")
		}
		if runs != 5 {
			t.Fatalf("ran %d times, want 5", runs)
		}
	})
	t.Run("healthy_run_starts_the_intervals_over", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		bo := &recording{}
		runs := 0
		retry.Forever(ctx, bo, func(context.Context) (bool, error) {
			runs++
			if runs == 4 {
				cancel()
			}
			return runs == 2, errBusy
		}, retry.Notify(func(err error, d time.Duration) {
			if !errors.Is(err, errBusy) {
				t.Errorf("notified of %v, want busy", err)
			}
		}))
		// Reset at the start, after the healthy second run; not otherwise.
		if bo.resets != 2 || bo.nexts != 3 {
			t.Fatalf("resets %d nexts %d, want 2 and 3", bo.resets, bo.nexts)
		}
	})
}

type recording struct{ resets, nexts int }

func (r *recording) Reset()                     { r.resets++ }
func (r *recording) NextBackOff() time.Duration { r.nexts++; return time.Millisecond }

func TestSleep(t *testing.T) {
	if !retry.Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep with a live context reported it ended")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if retry.Sleep(ctx, time.Hour) || time.Since(start) > time.Second {
		t.Fatal("Sleep did not end with its context")
	}
}
