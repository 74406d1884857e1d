package streams

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestBehind: items are projected in order, several at once but never more than the
// depth; Flush returns once everything queued is projected; a stop projects what is
// still queued.
func TestBehind(t *testing.T) {
	b := NewBehind[int](4)
	release := make(chan struct{})
	var mu sync.Mutex
	var got []int
	largest := 0
	project := func(ctx context.Context, items []int) {
		<-release
		mu.Lock()
		defer mu.Unlock()
		got = append(got, items...)
		largest = max(largest, len(items))
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); b.Run(ctx, project) }()
	// While the projection is held up, Run may hold one item and the queue Depth: more
	// would wait for the release below.
	for i := range b.Depth() + 1 {
		if err := b.Queue(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	flushed := make(chan struct{})
	go func() { b.Flush(context.Background()); close(flushed) }()
	select {
	case <-flushed:
		t.Fatal("Flush returned with projections held up")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-flushed
	mu.Lock()
	if !slices.Equal(got, []int{0, 1, 2, 3, 4}) || largest > b.Depth() {
		t.Errorf("projected %v, at most %d at once", got, largest)
	}
	mu.Unlock()

	// Queued as the writer stops: projected before Run returns.
	for i := 5; i < 8; i++ {
		if err := b.Queue(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	<-stopped
	b.Flush(context.Background())
	if !slices.Equal(got, []int{0, 1, 2, 3, 4, 5, 6, 7}) {
		t.Errorf("projected %v after the stop", got)
	}
}

// TestRecent: the oldest entry goes first once full.
func TestRecent(t *testing.T) {
	r := NewRecent[string, int](2)
	r.Add("a", 1)
	r.Add("b", 2)
	r.Add("a", 3) // an update, not a new entry
	r.Add("c", 4)
	if _, ok := r.Get("a"); ok {
		t.Error("the oldest entry is still held")
	}
	if v, ok := r.Get("b"); !ok || v != 2 {
		t.Errorf("b = %d, %v", v, ok)
	}
	if v, ok := r.Get("c"); !ok || v != 4 {
		t.Errorf("c = %d, %v", v, ok)
	}
}

// TestBehindProjectsCutShortItemsAtTheStop: items whose projection the stop cut short
// are projected again when it drains, ahead of those queued behind them, so nothing
// later is projected past them.
func TestBehindProjectsCutShortItemsAtTheStop(t *testing.T) {
	b := NewBehind[int](2)
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{}, 1)
	var got []int
	project := func(pctx context.Context, items []int) {
		if pctx == ctx {
			select {
			case started <- struct{}{}:
			default:
			}
			<-pctx.Done() // held up until the stop cuts it short: nothing stored
			return
		}
		got = append(got, items...)
	}
	stopped := make(chan struct{})
	go func() { defer close(stopped); b.Run(ctx, project) }()
	if err := b.Queue(ctx, 0); err != nil {
		t.Fatal(err)
	}
	<-started
	for i := 1; i <= 2; i++ {
		if err := b.Queue(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	<-stopped
	if !slices.Equal(got, []int{0, 1, 2}) {
		t.Errorf("projected %v at the stop, want [0 1 2]", got)
	}
	if err := b.Queue(ctx, 3); err == nil {
		t.Error("an item was queued after the stop")
	}
	b.Flush(context.Background())
}
