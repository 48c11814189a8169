package campaign

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/retry"
)

// batchReads sends GETs in one $batch, resending throttled and failed items
// a few times (reads are safe to repeat): 200 ms apart, doubling, at least
// Graph's Retry-After, six tries in all; after those the items' answers
// stand as they are.
func batchReads(ctx context.Context, b graph.Batcher, reqs []graph.BatchRequest) ([]graph.BatchResponse, error) {
	out := make([]graph.BatchResponse, len(reqs))
	todo := make([]int, len(reqs))
	for i := range todo {
		todo[i] = i
	}
	var wait time.Duration // the longest Retry-After of the last try
	err := retry.Until(ctx, readBackoff(), func(ctx context.Context) error {
		sub := make([]graph.BatchRequest, len(todo))
		for j, i := range todo {
			sub[j] = reqs[i]
		}
		resps, err := b.Batch(ctx, sub)
		if err != nil {
			var ge *graph.Error
			if !errors.As(err, &ge) || !ge.Retryable() {
				return retry.Permanent(err)
			}
			wait = ge.RetryAfter
			return err
		}
		var again []int
		wait = 0
		for j, resp := range resps {
			out[todo[j]] = resp
			if resp.Err != nil && resp.Err.Retryable() {
				again = append(again, todo[j])
				wait = max(wait, resp.RetryAfter)
			}
		}
		if len(again) > 0 {
			todo = again
			return errItemsLeft
		}
		return nil
	}, retry.AtLeast(func(error) time.Duration { return wait }))
	var gaveUp *retry.GaveUpError
	if errors.As(err, &gaveUp) {
		err = gaveUp.Err
	}
	if err != nil && !errors.Is(err, errItemsLeft) {
		return nil, err
	}
	return out, nil
}

// errItemsLeft: some items of a $batch of reads are to be sent again.
var errItemsLeft = errors.New("$batch items to resend")

// readBackoff paces batchReads: 200 ms, doubling, no jitter, 5 retries.
func readBackoff() backoff.BackOff {
	return backoff.WithMaxRetries(backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(200*time.Millisecond), backoff.WithMultiplier(2),
		backoff.WithRandomizationFactor(0), backoff.WithMaxInterval(time.Minute), backoff.WithMaxElapsedTime(0)), 5)
}
