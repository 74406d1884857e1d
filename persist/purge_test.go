package persist

import (
	"context"
	"testing"

	"github.com/ganglionhq/ganglion/persist/projtest"
	"github.com/ganglionhq/ganglion/schemas"
)

// A purged batch in the middle of a projection deletes its room's rows after the
// batches before it are written, and leaves the other rooms, before and after it,
// alone; projected again (a replay, a catch-up) it changes nothing; the writer's
// position covers it.
func TestProjectPurge(t *testing.T) {
	ctx := context.Background()
	db := openTestDB(t)
	doomed, other := projtest.NewRoom(t, "!doomed:test", "test"), projtest.NewRoom(t, "!other:test", "test")
	alice := "@alice:test"
	create := func(r *projtest.Room) *schemas.LogBatch {
		return r.Batch(projtest.State("create", "m.room.create", alice, map[string]string{"room_version": "11"}),
			projtest.Member("join", alice, alice, "join"))
	}
	purge := &schemas.LogBatch{V: schemas.LogVersion, RoomID: doomed.ID, RoomVersion: "11", Writer: projtest.Writer, Purged: true}
	batches := []BatchAt{
		{Seq: 1, Batch: create(doomed)},
		{Seq: 2, Batch: create(other)},
		{Seq: 3, Batch: doomed.Batch(projtest.Message("m1", alice))},
		{Seq: 4, Batch: purge},
		{Seq: 5, Batch: other.Batch(projtest.Message("m2", alice))},
	}
	for range 2 {
		if err := db.Project(ctx, projtest.Writer, batches); err != nil {
			t.Fatal(err)
		}
		var doomedRows, otherRows, purged int
		if err := db.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM events WHERE room_id = $1) + (SELECT count(*) FROM current_state WHERE room_id = $1)
				+ (SELECT count(*) FROM rooms WHERE room_id = $1),
			(SELECT count(*) FROM events WHERE room_id = $2), (SELECT count(*) FROM purged_rooms WHERE room_id = $1 AND seq = 4)`,
			doomed.ID, other.ID).Scan(&doomedRows, &otherRows, &purged); err != nil {
			t.Fatal(err)
		}
		if doomedRows != 0 || otherRows != 3 || purged != 1 {
			t.Errorf("after the purge: %d rows of the purged room, %d events of the other, purged row %d", doomedRows, otherRows, purged)
		}
	}
	positions, err := db.StreamPositions(ctx, EventsStream)
	if err != nil || positions[projtest.Writer] != 5 {
		t.Errorf("the writer's position: %v %v, want 5", positions, err)
	}
}
