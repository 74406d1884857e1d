package streams

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// SimulateSlowServer makes ReadLog's fetches come back empty unless they wait, and
// their first wait a millisecond, as on a server too busy to answer at once, until
// the returned function restores them.
func SimulateSlowServer() (restore func()) {
	oldFetch, oldWait := fetch, fetchWait
	fetch = func(c jetstream.Consumer, n int, wait time.Duration) (jetstream.MessageBatch, error) {
		return oldFetch(c, n, max(wait, time.Microsecond))
	}
	fetchWait = time.Millisecond
	return func() { fetch, fetchWait = oldFetch, oldWait }
}

// SimulateLostConsumer makes the first consumer ReadLog fetches from answer nothing
// from then on, as one whose stream leader moved away with it, and the first wait a
// millisecond, until the returned function restores them. empty is a consumer that
// has nothing to deliver.
func SimulateLostConsumer(empty jetstream.Consumer) (restore func()) {
	oldFetch, oldWait := fetch, fetchWait
	var lost jetstream.Consumer
	fetch = func(c jetstream.Consumer, n int, wait time.Duration) (jetstream.MessageBatch, error) {
		if lost == nil {
			lost = c
		}
		if c == lost {
			return empty.FetchNoWait(n)
		}
		return oldFetch(c, n, wait)
	}
	fetchWait = time.Millisecond
	return func() { fetch, fetchWait = oldFetch, oldWait }
}
