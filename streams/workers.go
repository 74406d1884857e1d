package streams

import (
	"context"
	"sync"
)

// Workers runs one worker per destination (a pusher, an application service, a remote
// server) that has something to send: Kick starts the destination's worker, or tells a
// running one to look again. A worker calls pass, which sends what is waiting until
// nothing is, and stops when no kick came during its pass. So a destination's sends are
// in order, and a slow destination holds up only its own worker.
type Workers[K comparable] struct {
	pass func(ctx context.Context, k K)

	mu      sync.Mutex
	running map[K]chan struct{}
	wg      sync.WaitGroup
}

// NewWorkers returns workers that call pass; pass returns when nothing is left to send
// to k, or when ctx ends.
func NewWorkers[K comparable](pass func(ctx context.Context, k K)) *Workers[K] {
	return &Workers[K]{pass: pass, running: map[K]chan struct{}{}}
}

// Kick has k's worker make a pass that begins after this call, starting the worker,
// which runs until ctx ends at the latest, when it does not run.
func (w *Workers[K]) Kick(ctx context.Context, k K) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := w.running[k]
	if ch == nil {
		ch = make(chan struct{}, 1)
		w.running[k] = ch
		w.wg.Go(func() { w.work(ctx, k, ch) })
	}
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Wait waits for every worker to stop (after the context of their kicks ended).
func (w *Workers[K]) Wait() { w.wg.Wait() }

func (w *Workers[K]) work(ctx context.Context, k K, ch chan struct{}) {
	for ctx.Err() == nil {
		// A kick from before this pass is answered by it; one during it stays in ch.
		select {
		case <-ch:
		default:
		}
		w.pass(ctx, k)
		if w.done(k, ch) {
			return
		}
	}
	w.mu.Lock()
	delete(w.running, k)
	w.mu.Unlock()
}

// done reports, under the lock Kick takes, whether k's worker may stop: nothing kicked
// it during its pass. A kick after that starts a new worker.
func (w *Workers[K]) done(k K, ch chan struct{}) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case <-ch:
		return false
	default:
		delete(w.running, k)
		return true
	}
}
