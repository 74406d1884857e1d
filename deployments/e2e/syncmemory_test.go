package e2e

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/ganglionhq/ganglion/persist/pgtest"
)

// TestIncrementalSyncFromMemory: an incremental /sync with nothing new for a user in
// many rooms is answered from memory. The test proves it by freezing the process's
// Postgres (SIGSTOP): a sync that asked it anything would hang until its deadline.
func TestIncrementalSyncFromMemory(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	pg := pgtest.StartServer(t)
	d := newDeployment(t, deploymentOptions{dsn: pg.DSN()})
	hs := d.startMain()
	alice := newUser(ctx, t, hs.url(), "alice")
	var rooms []id.RoomID
	for range 30 {
		rooms = append(rooms, createRoomWith(ctx, t, alice, "private_chat"))
	}
	if err := alice.SetAccountData(ctx, "org.example.x", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	first, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil || len(first.Rooms.Join) != len(rooms) {
		t.Fatalf("initial sync: %v", err)
	}
	// Syncing as Element does, with an uploaded filter: one incremental sync reads the
	// filter and the memberships once; from then on memory has them.
	filter, err := alice.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{
		State: &mautrix.FilterPart{LazyLoadMembers: true}, Timeline: &mautrix.FilterPart{Limit: 20, LazyLoadMembers: true}}})
	if err != nil {
		t.Fatal(err)
	}
	warm, err := alice.SyncRequest(ctx, 0, first.NextBatch, filter.FilterID, false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}

	pg.Pause(t)
	frozen := true
	defer func() {
		if frozen {
			pg.Resume(t)
		}
	}()
	for _, timeout := range []int{0, 300} {
		sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := alice.SyncRequest(sctx, timeout, warm.NextBatch, filter.FilterID, false, event.PresenceOnline)
		scancel()
		if err != nil {
			t.Fatalf("incremental sync (timeout %d ms) with the database frozen: %v", timeout, err)
		}
		if resp.NextBatch != warm.NextBatch || len(resp.Rooms.Join) != 0 || len(resp.AccountData.Events) != 0 {
			t.Errorf("incremental sync with nothing new: next %s (was %s), %d rooms", resp.NextBatch, warm.NextBatch, len(resp.Rooms.Join))
		}
	}
	pg.Resume(t)
	frozen = false

	// And it still sees what comes next.
	if _, err := sendText(ctx, alice, rooms[7], "after", "after the freeze"); err != nil {
		t.Fatal(err)
	}
	resp, err := alice.SyncRequest(ctx, 10000, warm.NextBatch, "", false, event.PresenceOnline)
	if err != nil || resp.Rooms.Join[rooms[7]] == nil {
		t.Fatalf("sync after a message: %v", err)
	}
}
