package client

import (
	"fmt"
	"testing"
)

// TestOwnWritesStayBounded: the own-writes map forgets writes the feed already shows,
// so a gateway whose devices sync elsewhere does not grow it forever, and it never holds
// more than ownWritesMax devices even while the feed stands still.
func TestOwnWritesStayBounded(t *testing.T) {
	t.Parallel()
	var o ownWrites
	dev := func(i int) Device { return Device{UserID: fmt.Sprintf("@u%d:x", i), DeviceID: "D"} }
	// 50,000 devices write once and never sync here; the feed follows one write behind.
	for i := range 50_000 {
		o.record(dev(i), "!r:x", uint64(i+1), uint64(i))
	}
	if n := len(o.latest); n > 2*ownWritesSweepMin {
		t.Fatalf("%d entries for writes the feed already shows", n)
	}
	// What the feed does not show yet is kept: the last device's /sync still waits.
	if w, ok := o.take(dev(49_999), 49_999); !ok || w.seq != 50_000 {
		t.Fatalf("latest write not kept: %+v %v", w, ok)
	}
	// A feed that stands still: the map stops at ownWritesMax.
	for i := range ownWritesMax + 10 {
		o.record(dev(i), "!r:x", uint64(100_000+i), 0)
	}
	if n := len(o.latest); n > ownWritesMax {
		t.Fatalf("%d entries, more than ownWritesMax %d", n, ownWritesMax)
	}
}
