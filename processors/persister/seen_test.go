package persister

import (
	"context"
	"fmt"
	"testing"

	"go.uber.org/zap/zaptest"
)

// TestSeenFilter: the filter holds every stored intent id and the pending ones it is
// built with, answers most new ids without Postgres, and is built anew once it holds
// more than its size, keeping what it held.
func TestSeenFilter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t)
	for i := range 200 {
		if _, err := c.db.Pool.Exec(ctx, `INSERT INTO intent_results (intent_id, room_id, seq, event_ids) VALUES ($1, '!r:test', $2, '{}')`,
			fmt.Sprint("stored-", i), i+1); err != nil {
			t.Fatal(err)
		}
	}
	s := &seen{db: c.db, log: zaptest.NewLogger(t), floor: 1000}
	if !s.maybe("anything") {
		t.Fatal("a filter not built yet must send every intent to Postgres")
	}
	s.build(ctx, []string{"pending"})
	s.wait()
	for i := range 200 {
		if !s.maybe(fmt.Sprint("stored-", i)) {
			t.Fatalf("stored-%d is missing", i)
		}
	}
	if !s.maybe("pending") {
		t.Fatal("a pending id is missing")
	}
	hits := 0
	for i := range 10000 {
		if s.maybe(fmt.Sprint("new-", i)) {
			hits++
		}
	}
	if hits > 300 {
		t.Errorf("%d of 10,000 new ids sent to Postgres", hits)
	}
	for i := range 1000 {
		s.add(fmt.Sprint("appended-", i))
	}
	if !s.full() {
		t.Fatal("a filter holding more than its size does not ask to be built again")
	}
	s.build(ctx, []string{"appended-999"})
	s.wait()
	if s.full() || !s.maybe("stored-0") || !s.maybe("appended-999") {
		t.Errorf("after the rebuild: full %v, stored %v, pending %v", s.full(), s.maybe("stored-0"), s.maybe("appended-999"))
	}
}

// TestRetryAfterTheRoomMovedWriters: a room's intents were handled by another writer
// after this writer's filter of stored ids was built. Once this writer holds the room,
// a retry of one of them gets its first event, not a second one.
func TestRetryAfterTheRoomMovedWriters(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	w1 := c.writer("w1", 0)
	p1 := c.writers["w1"]
	eventually(t, "w1's intent id filter", func() bool { return !p1.seen.maybe("never sent") })
	w2 := c.writer("w2", 0)
	c.createRoom(w2)
	first := submit(t, w2, textMessage("moved-x", roomID, "sent through w2"))
	c.settled()
	// The room is now w1's: another intent makes w1 load it, then the retry comes.
	if res := submit(t, w1, textMessage("moved-y", roomID, "sent through w1")); res.Error != nil {
		t.Fatal(res.Error)
	}
	again := submit(t, w1, textMessage("moved-x", roomID, "sent through w2"))
	if again.Error != nil || len(again.EventIDs) != 1 || again.EventIDs[0] != first.EventIDs[0] {
		t.Fatalf("retry through w1: %+v, first answered %v", again, first.EventIDs)
	}
	if n := c.countInLog(t, "sent through w2"); n != 1 {
		t.Fatalf("the retried send is %d times in the log", n)
	}
}
