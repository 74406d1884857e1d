package streams

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// Sleep waits for d, or returns ctx's error when ctx ends first.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Start-up backoff of Retry.
const (
	retryFirst = 100 * time.Millisecond
	retryMax   = 5 * time.Second
)

// Retry calls f until it succeeds, ctx ends (nil is returned then), or it fails with
// an error that retryable does not accept (returned). Between tries it waits, from
// 100 ms doubling to 5 s, and logs each failure as what. A process starting while
// Postgres or the bus is briefly out of reach (a NATS node restarting, a stream
// electing its leader: "no responders") waits for it rather than exit.
func Retry(ctx context.Context, log *zap.Logger, what string, retryable func(error) bool, f func(context.Context) error) error {
	wait := retryFirst
	for {
		err := f(ctx)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		if !retryable(err) {
			return err
		}
		log.Warn(what+" failed; retrying", zap.Error(err), zap.Duration("in", wait))
		if Sleep(ctx, wait) != nil {
			return nil
		}
		wait = min(2*wait, retryMax)
	}
}
