package actuator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/shared/retry"
)

// retry runs op with short in-process retries (backoff/v4). Graph's
// Retry-After is honoured when short; a long one, or retries used up, hands
// the message back to JetStream (natsx.RetryLater / a transient error), so
// nothing sleeps for minutes while holding a message. 4xx other than 429 are
// permanent. The SDK's own retry middleware is off, so retries never multiply.
func (s *Service) retry(ctx context.Context, name string, op func(context.Context) error) error {
	r := s.set.Retry
	attempts := 0
	wrapped := func(ctx context.Context) error {
		attempts++
		err := op(ctx)
		if err == nil {
			return nil
		}
		var ge *graph.Error
		switch {
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			return retry.Permanent(err)
		case !errors.As(err, &ge):
			return retry.Permanent(err) // not from Graph: already classified by the caller
		case !ge.Retryable():
			return retry.Permanent(natsx.Permanent(err))
		case ge.RetryAfter > r.LongWait:
			return retry.Permanent(&natsx.RetryLater{After: ge.RetryAfter, Err: err})
		case attempts >= r.MaxAttempts:
			if ge.RetryAfter > 0 {
				return retry.Permanent(&natsx.RetryLater{After: ge.RetryAfter, Err: err})
			}
			return retry.Permanent(err)
		case ge.RetryAfter > 0:
			// Wait what Graph asked for, then let backoff add its own pause.
			select {
			case <-time.After(ge.RetryAfter):
			case <-ctx.Done():
				return retry.Permanent(ctx.Err())
			}
		}
		return err
	}
	err := retry.Until(ctx, retry.Exponential(r.InitialInterval, r.MaxInterval, 0), wrapped, retry.Notify(func(err error, next time.Duration) {
		zerolog.Ctx(ctx).Warn().Err(err).Str("step", name).Dur("retry_in", next).Int("attempt", attempts).Msg("graph retry")
	}))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
