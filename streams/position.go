package streams

import (
	"context"
	"slices"
	"sync"
)

// Position is a position that only moves forward, such as how far a consumer has
// handled a log, with waiting until it reaches a value. The zero value is at 0.
type Position struct {
	mu      sync.Mutex
	pos     uint64
	waiting []reach
}

// reach is a Wait call: ch is closed once the position is seq.
type reach struct {
	seq uint64
	ch  chan struct{}
}

// Get returns the position.
func (p *Position) Get() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pos
}

// Set moves the position to v, never back, and releases the waits it reaches.
func (p *Position) Set(v uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if v <= p.pos {
		return
	}
	p.pos = v
	kept := p.waiting[:0]
	for _, r := range p.waiting {
		if r.seq <= v {
			close(r.ch)
		} else {
			kept = append(kept, r)
		}
	}
	clear(p.waiting[len(kept):])
	p.waiting = kept
}

// Wait returns once the position is at least seq, or when ctx ends (its error then).
func (p *Position) Wait(ctx context.Context, seq uint64) error {
	p.mu.Lock()
	if p.pos >= seq {
		p.mu.Unlock()
		return nil
	}
	r := reach{seq: seq, ch: make(chan struct{})}
	p.waiting = append(p.waiting, r)
	p.mu.Unlock()
	select {
	case <-r.ch:
		return nil
	case <-ctx.Done():
		p.mu.Lock()
		defer p.mu.Unlock()
		p.waiting = slices.DeleteFunc(p.waiting, func(x reach) bool { return x.ch == r.ch })
		return ctx.Err()
	}
}
