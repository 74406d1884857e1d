package persister

import (
	"context"

	"github.com/ganglionhq/ganglion/persist"
)

// A send is answered once its log append is acknowledged (invariant 1: the log is the
// truth), and its projection into Postgres follows behind, batched over loops, on
// streams.Behind's goroutine. Three things keep that safe:
//   - the intents of a loop are acknowledged once appended; a crash before their
//     projection leaves them in the log, and recoverUnprojected projects them at start;
//   - a retry of an intent appended but not projected yet is answered from recent,
//     which holds the result of every intent appended since its projection began;
//   - whatever reads Postgres for the loop itself (a room loaded, a catch-up, the
//     position recorded) first waits for the projections in flight (flushProjections).
// Sync feeds move on projected positions only, so /sync never shows a gap; a gateway
// holds a device's reads until its own writes are visible.

// projection is one loop's appends, projected on writer's behalf ("" for nobody's).
type projection struct {
	writer string
	done   []persist.BatchAt
}

// maxQueuedProjections bounds the loops appended and not projected yet: past it, the
// next loop waits for Postgres (backpressure instead of a growing queue).
const maxQueuedProjections = 8

// projectBehind queues a loop's appends for projectQueued.
func (p *Persister) projectBehind(ctx context.Context, writer string, done []persist.BatchAt) error {
	if len(done) == 0 {
		return nil
	}
	return p.behind.Queue(ctx, projection{writer: writer, done: done})
}

// flushProjections waits until every queued projection is done, or ctx ends.
func (p *Persister) flushProjections(ctx context.Context) error { return p.behind.Flush(ctx) }

// projectQueued projects loops in order, consecutive ones on the same behalf in one
// transaction, then hands their rows to the Redis emitter. project retries until it
// succeeds or ctx ends; what ctx cut short stays in the log for the next start.
func (p *Persister) projectQueued(ctx context.Context, queue []projection) {
	for len(queue) > 0 {
		n := 1
		done := queue[0].done
		for n < len(queue) && queue[n].writer == queue[0].writer {
			done = append(done, queue[n].done...)
			n++
		}
		if err := p.project(ctx, queue[0].writer, done, true); err == nil {
			p.emitReplication(done)
		}
		queue = queue[n:]
	}
}
