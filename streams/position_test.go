package streams

import (
	"context"
	"testing"
	"time"
)

// TestPosition: waits return once the position reaches them, never before, and a
// wait whose context ends returns its error and is forgotten.
func TestPosition(t *testing.T) {
	var p Position
	done := make(chan uint64, 3)
	for _, seq := range []uint64{5, 7} {
		go func() {
			if err := p.Wait(context.Background(), seq); err != nil {
				t.Error(err)
			}
			done <- seq
		}()
	}
	ctx, cancel := context.WithCancel(context.Background())
	waited := make(chan error, 1)
	go func() { waited <- p.Wait(ctx, 9) }()
	time.Sleep(20 * time.Millisecond)
	p.Set(6)
	if got := <-done; got != 5 {
		t.Fatalf("position 6 released the wait for %d", got)
	}
	p.Set(4) // never back
	if p.Get() != 6 {
		t.Fatalf("position %d after moving back", p.Get())
	}
	select {
	case got := <-done:
		t.Fatalf("position 6 released the wait for %d", got)
	case <-time.After(20 * time.Millisecond):
	}
	cancel()
	if err := <-waited; err == nil {
		t.Fatal("a cancelled wait returned nil")
	}
	p.Set(7)
	if got := <-done; got != 7 {
		t.Fatalf("position 7 released the wait for %d", got)
	}
	p.mu.Lock()
	left := len(p.waiting)
	p.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d waits left", left)
	}
	if err := p.Wait(context.Background(), 3); err != nil {
		t.Fatal(err)
	}
}
