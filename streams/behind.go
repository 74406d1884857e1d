package streams

import (
	"context"
	"sync"
	"time"
)

// Behind runs the projections of a writer that answers its writes once their records
// are in the log (invariant 1: the log is the truth) and projects them into Postgres
// after the answers: in order, on one goroutine, those waiting together at once. At
// most depth items wait; past that Queue waits too (backpressure instead of a growing
// queue). Whatever the writer itself reads from Postgres first waits for the items in
// flight (Flush). Both the event writer and the per-user stream writers use it.
type Behind[T any] struct {
	queue    chan T
	inflight inflight
}

// BehindStopTimeout bounds how long a stopping writer projects what it answered: a
// writer stopped for good (moved elsewhere by configuration) would otherwise leave its
// last appends to whoever next reads them from the log.
const BehindStopTimeout = 10 * time.Second

// NewBehind returns a Behind holding at most depth items waiting.
func NewBehind[T any](depth int) *Behind[T] {
	return &Behind[T]{queue: make(chan T, depth)}
}

// Depth is how many items can wait; Run hands project at most that many at once, so
// items queued or being projected number at most twice it.
func (b *Behind[T]) Depth() int { return cap(b.queue) }

// Queue hands item to Run, waiting while the queue is full.
func (b *Behind[T]) Queue(ctx context.Context, item T) error {
	if err := ctx.Err(); err != nil {
		return err // stopping: the item stays in the log for recovery
	}
	b.inflight.add()
	select {
	case b.queue <- item:
		return nil
	case <-ctx.Done():
		b.inflight.done(1)
		return ctx.Err()
	}
}

// Flush waits until every queued item is projected, or ctx ends (its error then).
func (b *Behind[T]) Flush(ctx context.Context) error { return b.inflight.wait(ctx) }

// Run projects queued items until ctx ends, then, for at most BehindStopTimeout, what
// is still queued. project gets items in order, several at once, and retries by itself
// until it succeeds or its context ends; items whose projection ctx cut short are
// projected again at the stop, before the rest, so no later item is projected past
// them. What the stop could not project stays in the log for the writer's recovery.
func (b *Behind[T]) Run(ctx context.Context, project func(context.Context, []T)) {
	var unfinished []T
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case it := <-b.queue:
			items := b.drain([]T{it})
			if ctx.Err() == nil {
				project(ctx, items)
			}
			if ctx.Err() != nil {
				unfinished = items // maybe not projected: again at the stop
				break
			}
			b.inflight.done(len(items))
		}
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), BehindStopTimeout)
	defer cancel()
	for items := b.drain(unfinished); len(items) > 0; items = b.drain(nil) {
		project(sctx, items)
		b.inflight.done(len(items))
	}
}

// drain returns items and those waiting behind them, Depth at most in all.
func (b *Behind[T]) drain(items []T) []T {
	for len(items) < cap(b.queue) {
		select {
		case it := <-b.queue:
			items = append(items, it)
		default:
			return items
		}
	}
	return items
}

// inflight counts the items queued or being projected; wait returns when none is.
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

func (f *inflight) done(k int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n -= k; f.n == 0 {
		close(f.idle)
	}
}

func (f *inflight) wait(ctx context.Context) error {
	f.mu.Lock()
	if f.n == 0 {
		f.mu.Unlock()
		return nil
	}
	idle := f.idle
	f.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Recent remembers what a writer answered lately, the oldest forgotten first once it
// holds its capacity. Sized past the writes that can be answered and not projected
// (twice a Behind's Depth, plus the loop being appended, in writes), it holds every
// one of those, and Postgres holds the rest. Not for concurrent use.
type Recent[K comparable, V any] struct {
	capacity int
	byKey    map[K]V
	order    []K
	next     int
}

// NewRecent returns a Recent holding at most capacity entries.
func NewRecent[K comparable, V any](capacity int) *Recent[K, V] {
	return &Recent[K, V]{capacity: capacity, byKey: map[K]V{}}
}

// Add remembers v for k, forgetting the oldest entry when full.
func (r *Recent[K, V]) Add(k K, v V) {
	if _, ok := r.byKey[k]; ok {
		r.byKey[k] = v
		return
	}
	if len(r.order) < r.capacity {
		r.order = append(r.order, k)
	} else {
		delete(r.byKey, r.order[r.next])
		r.order[r.next] = k
		r.next = (r.next + 1) % r.capacity
	}
	r.byKey[k] = v
}

// Cap is the most entries r holds.
func (r *Recent[K, V]) Cap() int { return r.capacity }

// Keys are the keys held, oldest first.
func (r *Recent[K, V]) Keys() []K {
	return append(append([]K(nil), r.order[r.next:]...), r.order[:r.next]...)
}

// Get is what was remembered for k.
func (r *Recent[K, V]) Get(k K) (V, bool) {
	v, ok := r.byKey[k]
	return v, ok
}
