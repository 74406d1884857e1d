package e2e

import (
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestAccountData: global and room account data and tags are stored, read back,
// private to their owner, and reach /sync, initial and incremental.
func TestAccountData(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	room := createRoomWith(ctx, t, alice, "private_chat")

	first, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.SetAccountData(ctx, "org.example.settings", map[string]any{"theme": "dark"}); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetRoomAccountData(ctx, room, "org.example.room", map[string]any{"pinned": true}); err != nil {
		t.Fatal(err)
	}
	if err := alice.AddTag(ctx, room, "m.favourite", 0.25); err != nil {
		t.Fatal(err)
	}
	if err := alice.AddTag(ctx, room, "u.work", 0.5); err != nil {
		t.Fatal(err)
	}
	if err := alice.RemoveTag(ctx, room, "u.work"); err != nil {
		t.Fatal(err)
	}

	var settings map[string]any
	if err := alice.GetAccountData(ctx, "org.example.settings", &settings); err != nil || settings["theme"] != "dark" {
		t.Errorf("global account data read back: %v, %v", settings, err)
	}
	var pinned map[string]any
	if err := alice.GetRoomAccountData(ctx, room, "org.example.room", &pinned); err != nil || pinned["pinned"] != true {
		t.Errorf("room account data read back: %v, %v", pinned, err)
	}
	tags, err := alice.GetTags(ctx, room)
	if err != nil || len(tags.Tags) != 1 || tags.Tags["m.favourite"].Order != "0.25" {
		t.Errorf("tags: %+v, %v", tags, err)
	}

	// Incremental: exactly what changed since the first sync.
	next, err := alice.SyncRequest(ctx, 0, first.NextBatch, "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	checkSyncAccountData(t, "incremental", next, room)
	// Initial: everything.
	all, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	checkSyncAccountData(t, "initial", all, room)
	// Nothing new after that: a long-poll with a short timeout comes back empty (and,
	// on a server of the test's own, where nobody else moves a stream, at the same token).
	empty, err := alice.SyncRequest(ctx, 100, all.NextBatch, "", false, event.PresenceOnline)
	if err != nil || len(empty.AccountData.Events) != 0 || (externalURL == "" && empty.NextBatch != all.NextBatch) {
		t.Errorf("sync with nothing new: %d account data, next %q (was %q), %v", len(empty.AccountData.Events), empty.NextBatch, all.NextBatch, err)
	}

	// A long-poll wakes for a change of account data alone.
	done := longPoll(ctx, t, alice, 30000, all.NextBatch, noPresence, false, event.PresenceOnline)
	if err := alice.SetAccountData(ctx, "org.example.late", map[string]any{"n": 1}); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r == nil || len(r.AccountData.Events) != 1 || r.AccountData.Events[0].Type.Type != "org.example.late" {
		t.Errorf("long-poll woken by account data: %+v", r)
	}

	// Someone else's: forbidden, both ways; unknown: 404; server-controlled: 405.
	var out map[string]any
	_, err = bob.MakeRequest(ctx, http.MethodGet, bob.BuildClientURL("v3", "user", alice.UserID, "account_data", "org.example.settings"), nil, &out)
	wantError(t, "bob reads alice's account data", err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = bob.MakeRequest(ctx, http.MethodPut, bob.BuildClientURL("v3", "user", alice.UserID, "account_data", "x"), map[string]any{}, nil)
	wantError(t, "bob writes alice's account data", err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = bob.MakeRequest(ctx, http.MethodPut, bob.BuildClientURL("v3", "user", alice.UserID, "rooms", room, "tags", "m.lowpriority"), map[string]any{}, nil)
	wantError(t, "bob tags alice's room", err, http.StatusForbidden, "M_FORBIDDEN")
	err = alice.GetAccountData(ctx, "org.example.never", &out)
	wantError(t, "unknown account data", err, http.StatusNotFound, "M_NOT_FOUND")
	_, err = alice.MakeRequest(ctx, http.MethodPut, alice.BuildClientURL("v3", "user", alice.UserID, "rooms", room, "account_data", "m.fully_read"), map[string]any{"event_id": "$x"}, nil)
	wantError(t, "m.fully_read through account data", err, http.StatusMethodNotAllowed, "M_BAD_JSON")
	_, err = alice.MakeRequest(ctx, http.MethodPut, alice.BuildClientURL("v3", "user", alice.UserID, "account_data", "org.example.list"), []int{1}, nil)
	wantError(t, "account data that is not an object", err, http.StatusBadRequest, "M_BAD_JSON")
	_, err = alice.MakeRequest(ctx, http.MethodPut, alice.BuildClientURL("v3", "user", alice.UserID, "rooms", "not-a-room", "account_data", "x"), map[string]any{}, nil)
	wantError(t, "room account data of a bad room id", err, http.StatusBadRequest, "M_INVALID_PARAM")
}

func checkSyncAccountData(t *testing.T, what string, r *mautrix.RespSync, room id.RoomID) {
	t.Helper()
	global := map[string]bool{}
	for _, ev := range r.AccountData.Events {
		global[ev.Type.Type] = true
	}
	if !global["org.example.settings"] {
		t.Errorf("%s sync: global account data %v", what, global)
	}
	jr := r.Rooms.Join[room]
	if jr == nil {
		t.Fatalf("%s sync: room %s missing", what, room)
	}
	perRoom := map[string]map[string]any{}
	for _, ev := range jr.AccountData.Events {
		perRoom[ev.Type.Type] = ev.Content.Raw
	}
	tags, _ := perRoom["m.tag"]["tags"].(map[string]any)
	if perRoom["org.example.room"]["pinned"] != true || len(tags) != 1 || tags["m.favourite"] == nil {
		t.Errorf("%s sync: room account data %v", what, perRoom)
	}
}
