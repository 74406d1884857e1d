package persister

import (
	"context"
	"sync"
	"time"

	"github.com/ganglionhq/ganglion/persist"
)

// A send is answered once its log append is acknowledged (invariant 1: the log is the
// truth), and its projection into Postgres follows behind, batched over loops, on
// projectLoop's goroutine. Three things keep that safe:
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

// projectBehind queues a loop's appends for projectLoop.
func (p *Persister) projectBehind(ctx context.Context, writer string, done []persist.BatchAt) error {
	if len(done) == 0 {
		return nil
	}
	p.unprojected.add()
	select {
	case p.projections <- projection{writer: writer, done: done}:
		return nil
	case <-ctx.Done():
		p.unprojected.done()
		return ctx.Err()
	}
}

// flushProjections waits until every queued projection is done, or ctx ends.
func (p *Persister) flushProjections(ctx context.Context) { p.unprojected.wait(ctx) }

// inflight counts projections queued or running; wait returns when none is.
type inflight struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0
}

func (f *inflight) add() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		f.idle = make(chan struct{})
	}
	f.n++
}

func (f *inflight) done() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n--; f.n == 0 {
		close(f.idle)
	}
}

func (f *inflight) wait(ctx context.Context) {
	f.mu.Lock()
	if f.n == 0 {
		f.mu.Unlock()
		return
	}
	idle := f.idle
	f.mu.Unlock()
	select {
	case <-idle:
	case <-ctx.Done():
	}
}

// projectLoop projects queued loops in order, those waiting together in one
// transaction, then hands their rows to the Redis emitter. project retries until it
// succeeds or ctx ends; what ctx cut short stays in the log for the next start.
func (p *Persister) projectLoop(ctx context.Context) {
	for {
		var queue []projection
		select {
		case <-ctx.Done():
			p.projectQueued(ctx)
			return
		case pr := <-p.projections:
			queue = append(queue, pr)
		}
	drain:
		for len(queue) < maxQueuedProjections {
			select {
			case pr := <-p.projections:
				queue = append(queue, pr)
			default:
				break drain
			}
		}
		for len(queue) > 0 {
			// Consecutive loops on the same behalf share a transaction.
			n := 1
			done := queue[0].done
			for n < len(queue) && queue[n].writer == queue[0].writer {
				done = append(done, queue[n].done...)
				n++
			}
			if err := p.project(ctx, queue[0].writer, done, true); err == nil {
				p.emitReplication(done)
			}
			for range n {
				p.unprojected.done()
			}
			queue = queue[n:]
		}
	}
}

// stopProjectionTimeout bounds how long a stopping writer projects what it answered.
const stopProjectionTimeout = 10 * time.Second

// projectQueued projects, as the writer stops, what it answered and queued: a writer
// stopped for good (moved elsewhere by configuration) would otherwise leave its last
// appends to whoever next reads its rooms from the log. What does not make it in time
// stays in the log for recovery.
func (p *Persister) projectQueued(ctx context.Context) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopProjectionTimeout)
	defer cancel()
	for {
		select {
		case pr := <-p.projections:
			if err := p.project(sctx, pr.writer, pr.done, true); err == nil {
				p.emitReplication(pr.done)
			}
			p.unprojected.done()
		default:
			return
		}
	}
}

// recentResults are the results of the intents this writer appended lately, by intent
// id, oldest evicted first past cap. cap exceeds the intents that can be appended and
// not projected (maxQueuedProjections+1 loops of MaxBatch), so any of those is found
// here and the others in Postgres. Only the loop touches it.
type recentResults struct {
	cap   int
	byID  map[string]persist.IntentResult
	order []string
	next  int
}

func newRecentResults(capacity int) recentResults {
	return recentResults{cap: capacity, byID: make(map[string]persist.IntentResult, capacity)}
}

func (r *recentResults) add(id string, res persist.IntentResult) {
	if _, ok := r.byID[id]; ok {
		r.byID[id] = res
		return
	}
	if len(r.order) < r.cap {
		r.order = append(r.order, id)
	} else {
		delete(r.byID, r.order[r.next])
		r.order[r.next] = id
		r.next = (r.next + 1) % r.cap
	}
	r.byID[id] = res
}

func (r *recentResults) get(id string) (persist.IntentResult, bool) {
	res, ok := r.byID[id]
	return res, ok
}
