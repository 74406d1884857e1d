package notifications_test

import (
	"context"
	"encoding/json"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/notifications"
	"github.com/ganglionhq/ganglion/persist/pgtest"
)

// TestPruneRead: old notifications a read receipt covers go, a few at a time; unread
// ones, recent ones and those after the receipt stay, and the counts do not move.
func TestPruneRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := persist.Open(ctx, pgtest.DSN(t), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := notifications.Store{Pool: db.Pool}
	const old, recent, cut = 1_000, 9_000, 5_000
	note := func(user, room string, seq uint64, ts int64) notifications.Notification {
		return notifications.Notification{User: user, EventID: "$e" + string(rune('a'+seq)), RoomID: room,
			Thread: notifications.MainThread, Pos: persist.Pos{Seq: seq}, Actions: json.RawMessage(`["notify"]`), TS: ts}
	}
	ns := []notifications.Notification{
		note("@a:t", "!r", 1, old), note("@a:t", "!r", 2, old), note("@a:t", "!r", 3, old), // read (receipt at 3)
		note("@a:t", "!r", 4, old),    // old, after the receipt: unread
		note("@a:t", "!r", 5, recent), // recent
		note("@a:t", "!s", 6, old),    // another room, no receipt there
		note("@b:t", "!r", 7, old),    // another user, no receipt
	}
	if err := s.Record(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, event_seq, event_idx, ts, stream_id)
		VALUES ('!r', 'm.read', '@a:t', '', '$ed', 3, 0, 1, 1)`); err != nil {
		t.Fatal(err)
	}
	counts := func() map[string]map[string]notifications.Count {
		c, err := s.Counts(ctx, "@a:t", []string{"!r", "!s"})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// Stored after the receipt: only the notification after it counts.
	main := counts()["!r"][notifications.MainThread].Notifications
	late := []notifications.Notification{note("@a:t", "!r", 2, old), note("@a:t", "!r", 3, old)}
	late[0].Pos.Idx, late[1].Pos.Idx = 1, 1 // (2,1) is before the receipt's (3,0); (3,1) after it
	if err := s.Record(ctx, late, nil); err != nil {
		t.Fatal(err)
	}
	if got := counts()["!r"][notifications.MainThread].Notifications; got != main+1 {
		t.Errorf("two notifications stored around a receipt moved the count from %d to %d, want %d", main, got, main+1)
	}
	before, _ := json.Marshal(counts())

	n, err := s.PruneRead(ctx, cut, 3)
	if err != nil || n != 3 {
		t.Fatalf("the first prune deleted %d (%v), want 3 (its limit)", n, err)
	}
	if n, err = s.PruneRead(ctx, cut, 3); err != nil || n != 1 {
		t.Fatalf("the second prune deleted %d (%v), want the last read one", n, err)
	}
	if n, err = s.PruneRead(ctx, cut, 3); err != nil || n != 0 {
		t.Fatalf("a third prune deleted %d (%v)", n, err)
	}
	var left []int64
	rows, err := db.Pool.Query(ctx, `SELECT seq FROM event_push_actions ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			t.Fatal(err)
		}
		left = append(left, seq)
	}
	if want := []int64{3, 4, 5, 6, 7}; len(left) != len(want) || left[0] != 3 || left[4] != 7 {
		t.Errorf("left %v, want %v", left, want)
	}
	if after, _ := json.Marshal(counts()); string(after) != string(before) {
		t.Errorf("counts moved: %s, then %s", before, after)
	}
}
