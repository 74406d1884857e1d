package streams

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// SimulateSlowServer makes ReadLog's fetches come back empty unless they wait, and
// their first wait a millisecond, as on a server too busy to answer at once, until
// the returned function restores them.
func SimulateSlowServer() (restore func()) {
	oldNow, oldWait := fetchNow, fetchWait
	fetchNow = func(c jetstream.Consumer, n int) (jetstream.MessageBatch, error) {
		return c.Fetch(n, jetstream.FetchMaxWait(time.Microsecond))
	}
	fetchWait = time.Millisecond
	return func() { fetchNow, fetchWait = oldNow, oldWait }
}
