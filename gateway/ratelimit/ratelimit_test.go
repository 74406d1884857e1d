package ratelimit

import (
	"testing"
	"time"
)

// clockLimiter is a limiter on a clock the test moves.
func clockLimiter(s Setting) (*Limiter, *time.Time) {
	now := time.Unix(1_000_000, 0)
	l := New(s)
	l.now = func() time.Time { return now }
	return l, &now
}

func TestLimiterBurstThenRate(t *testing.T) {
	l, now := clockLimiter(Setting{PerSecond: 0.5, BurstCount: 3})
	for i := range 3 {
		if _, ok := l.Take("a"); !ok {
			t.Fatalf("action %d of the burst refused", i)
		}
	}
	retry, ok := l.Take("a")
	if ok || retry != 2*time.Second {
		t.Fatalf("past the burst: ok %v, retry after %s; want refused, 2s", ok, retry)
	}
	if _, ok := l.Take("b"); !ok {
		t.Fatal("another key shares a's bucket")
	}
	*now = now.Add(2 * time.Second)
	if _, ok := l.Take("a"); !ok {
		t.Fatal("refused once the bucket refilled one action")
	}
}

// Check looks without counting (Synapse's update=False).
func TestLimiterCheckDoesNotCount(t *testing.T) {
	l, _ := clockLimiter(Setting{PerSecond: 0.001, BurstCount: 1})
	for range 3 {
		if _, ok := l.Check("a"); !ok {
			t.Fatal("check counted an action")
		}
	}
	l.Take("a")
	if _, ok := l.Check("a"); ok {
		t.Fatal("check allowed past the burst")
	}
}

// Idle keys are forgotten, so a flood of one-off keys does not grow the map forever.
func TestLimiterForgetsFullBuckets(t *testing.T) {
	l, now := clockLimiter(Setting{PerSecond: 1, BurstCount: 2})
	l.Take("a")
	l.Take("b")
	l.Take("b")
	*now = now.Add(sweepEvery)
	l.Take("c")
	if len(l.keys) != 1 {
		t.Fatalf("%d keys kept after a sweep, want only c", len(l.keys))
	}
}

func TestZeroSettingAllowsEverything(t *testing.T) {
	l := New(Setting{})
	for range 100 {
		if _, ok := l.Take("a"); !ok {
			t.Fatal("the zero setting refused an action")
		}
	}
}
