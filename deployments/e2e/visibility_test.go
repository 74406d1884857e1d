package e2e

import (
	"net/http"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestHistoryVisibility: in a room whose history is visible to joined members only, a
// newcomer sees nothing from before their join, in /sync, /messages or /event, and a
// profile change does not move that point; in a room with shared history they see it.
func TestHistoryVisibility(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")

	for _, vis := range []event.HistoryVisibility{event.HistoryVisibilityJoined, event.HistoryVisibilityShared} {
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
			Type: event.StateHistoryVisibility, StateKey: new(string),
			Content: event.Content{Raw: map[string]any{"history_visibility": string(vis)}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		before, err := sendText(ctx, alice, room, "v1"+string(vis), "before bob")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		// A profile change is a join after a join: it must not move bob's start.
		if _, err := bob.SendStateEvent(ctx, room, event.StateMember, bob.UserID.String(),
			map[string]any{"membership": "join", "displayname": "Bob"}); err != nil {
			t.Fatal(err)
		}
		after, err := sendText(ctx, alice, room, "v2"+string(vis), "after bob")
		if err != nil {
			t.Fatal(err)
		}
		hidden := vis == event.HistoryVisibilityJoined

		// Alice's last message may reach bob's sync feed a moment after her send
		// returned: follow bob's sync until it arrives.
		filter := `{"room":{"timeline":{"limit":50}}}`
		resp, err := bob.SyncRequest(ctx, 0, "", filter, false, "")
		var synced []id.EventID
		for err == nil {
			for _, e := range resp.Rooms.Join[room].Timeline.Events {
				synced = append(synced, e.ID)
			}
			if slices.Contains(synced, after) {
				break
			}
			resp, err = bob.SyncRequest(ctx, 5000, resp.NextBatch, filter, false, "")
		}
		if err != nil {
			t.Fatal(err)
		}
		msgs, err := bob.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		var paged []id.EventID
		for _, e := range msgs.Chunk {
			paged = append(paged, e.ID)
		}
		_, getErr := bob.GetEvent(ctx, room, before)
		for what, ids := range map[string][]id.EventID{"/sync": synced, "/messages": paged} {
			if !slices.Contains(ids, after) {
				t.Errorf("%s room: bob's %s lacks the message after his join", vis, what)
			}
			if slices.Contains(ids, before) == hidden {
				t.Errorf("%s room: bob's %s shows the message before his join: %v", vis, what, slices.Contains(ids, before))
			}
		}
		if hidden {
			wantError(t, "bob reads an event from before his join", getErr, http.StatusNotFound, "M_NOT_FOUND")
		} else if getErr != nil {
			t.Errorf("shared room: bob cannot read an event from before his join: %v", getErr)
		}
	}
}
