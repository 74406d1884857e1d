package streams_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ganglionhq/ganglion/streams"
)

// TestWorkersAnswerAKickDuringAPass: a kick while the destination's pass runs gets a
// pass of its own that begins after it, whether the worker was about to stop or not;
// other destinations run meanwhile.
func TestWorkersAnswerAKickDuringAPass(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	passes := map[string]int{}
	entered := make(chan string, 16)
	release := make(chan struct{})
	w := streams.NewWorkers(func(ctx context.Context, k string) {
		mu.Lock()
		passes[k]++
		n := passes[k]
		mu.Unlock()
		entered <- k
		if k == "slow" && n == 1 {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
	})
	next := func() string {
		select {
		case k := <-entered:
			return k
		case <-time.After(10 * time.Second):
			t.Fatal("no pass began")
			return ""
		}
	}
	w.Kick(ctx, "slow")
	if k := next(); k != "slow" {
		t.Fatalf("pass of %q, want slow", k)
	}
	// The slow destination's first pass holds on; another still gets its passes.
	w.Kick(ctx, "quick")
	if k := next(); k != "quick" {
		t.Fatalf("pass of %q, want quick", k)
	}
	// Kicked during its pass, the slow worker goes round again once it returns.
	w.Kick(ctx, "slow")
	w.Kick(ctx, "slow")
	close(release)
	if k := next(); k != "slow" {
		t.Fatalf("pass of %q, want slow's second", k)
	}
	// A kick after a worker stopped starts it again.
	for range 3 {
		time.Sleep(10 * time.Millisecond)
		w.Kick(ctx, "quick")
		if k := next(); k != "quick" {
			t.Fatalf("pass of %q, want quick", k)
		}
	}
	cancel()
	w.Wait()
	select {
	case k := <-entered:
		t.Fatalf("an extra pass of %q", k)
	default:
	}
}
