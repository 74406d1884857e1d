package streams_test

import (
	"context"
	"testing"
	"time"

	"github.com/ganglionhq/ganglion/streams"
	"github.com/ganglionhq/ganglion/streams/natstest"
)

// TestFollowAnnouncedPositions: a follower starts from the known positions, learns an
// instance's moves from its announcements, and a wait for a key waits for the instance
// the key is sharded to alone.
func TestFollowAnnouncedPositions(t *testing.T) {
	c := natstest.Connect(t)
	topo := streams.Topology{Namespace: natstest.Namespace()}
	instances := []string{"p1", "p2"}
	f, stop, err := streams.Follow(c.NC, topo, "pusher", instances, map[string]uint64{"p1": 10, "p2": 20})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	var keyOf = map[string]string{}
	for i := 0; len(keyOf) < 2; i++ {
		k := "@u" + string(rune('a'+i)) + ":hs"
		keyOf[streams.ShardOwner(k, instances)] = k
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.Wait(ctx, keyOf["p2"], 20); err != nil {
		t.Fatalf("a known position: %v", err)
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if err := f.Wait(short, keyOf["p1"], 11); err == nil {
		t.Fatal("a position nobody announced was reached")
	}

	var p1 streams.Position
	actx, stopAnnounce := context.WithCancel(ctx)
	defer stopAnnounce()
	go streams.Announce(actx, c.NC, topo.PositionSubject("pusher", "p1"), &p1)
	p1.Set(15)
	if err := f.Wait(ctx, keyOf["p1"], 15); err != nil {
		t.Fatalf("an announced position: %v", err)
	}
	short2, cancelShort2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort2()
	if err := f.Wait(short2, keyOf["p2"], 21); err == nil {
		t.Fatal("p1's announcement moved p2")
	}
}
