package e2e

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestReadsSeeTheirWrites: a send is answered at its append to the log and projected
// into Postgres behind the answer, yet whatever the client reads right after shows it.
// 1,000 times, a client changes the room's topic or its own display name and at once
// reads the change back through /messages, /rooms/{id}/event/{id}, /state,
// /state/{type}/{key}, /members or /joined_members, and /sync; and another user
// sends a read receipt for the new event (an event ID handed over, as clients do).
func TestReadsSeeTheirWrites(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	room := createRoomWith(ctx, t, alice, "public_chat", bob)
	since := ""
	if resp, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOffline); err != nil {
		t.Fatal(err)
	} else {
		since = resp.NextBatch
	}
	for i := range 1000 {
		value := fmt.Sprintf("value %d", i)
		var sent id.EventID
		var typ event.Type
		var key string
		if i%2 == 0 {
			typ, key = event.StateTopic, ""
			resp, err := alice.SendStateEvent(ctx, room, typ, key, map[string]any{"topic": value})
			if err != nil {
				t.Fatalf("%d: topic: %v", i, err)
			}
			sent = resp.EventID
		} else {
			typ, key = event.StateMember, alice.UserID.String()
			resp, err := alice.SendStateEvent(ctx, room, typ, key, map[string]any{"membership": "join", "displayname": value})
			if err != nil {
				t.Fatalf("%d: display name: %v", i, err)
			}
			sent = resp.EventID
		}
		missed := func(where string, err error) {
			t.Helper()
			t.Fatalf("%d: %s does not show %s (%s): %v", i, where, sent, value, err)
		}
		switch i % 6 {
		case 0, 1:
			msgs, err := alice.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 1)
			if err != nil || len(msgs.Chunk) != 1 || msgs.Chunk[0].ID != sent {
				missed("/messages", err)
			}
		case 2, 3:
			ev, err := alice.GetEvent(ctx, room, sent)
			if err != nil || ev.ID != sent {
				missed("/event", err)
			}
		case 4:
			var content map[string]any
			if err := alice.StateEvent(ctx, room, typ, key, &content); err != nil || (content["topic"] != value && content["displayname"] != value) {
				missed("/state/{type}/{key}", err)
			}
			state, err := alice.State(ctx, room)
			if err != nil || state[typ][key] == nil || state[typ][key].ID != sent {
				missed("/state", err)
			}
		case 5:
			members, err := alice.JoinedMembers(ctx, room)
			if err != nil || members.Joined[alice.UserID].DisplayName != value {
				missed("/joined_members", err)
			}
			all, err := alice.Members(ctx, room)
			found := false
			for _, m := range all.Chunk {
				found = found || m.ID == sent
			}
			if err != nil || !found {
				missed("/members", err)
			}
		}
		if err := bob.SendReceipt(ctx, room, sent, event.ReceiptTypeRead, nil); err != nil {
			missed("bob's receipt", err)
		}
		resp, err := alice.SyncRequest(ctx, 0, since, "", false, event.PresenceOffline)
		if err != nil {
			missed("/sync", err)
		}
		found := false
		if jr := resp.Rooms.Join[room]; jr != nil {
			for _, e := range jr.Timeline.Events {
				found = found || e.ID == sent
			}
		}
		if !found {
			missed("/sync", nil)
		}
		since = resp.NextBatch
	}
}

// TestAliasResolvesRightAfterCreate: a room created with an alias is answered at its
// append, and resolving the alias at once, without authentication (the directory
// needs none), finds the room, 50 times.
func TestAliasResolvesRightAfterCreate(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	server := alice.UserID.Homeserver()
	for i := range 50 {
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: fmt.Sprint("fresh", runTag, i)})
		if err != nil {
			t.Fatalf("%d: create: %v", i, err)
		}
		alias := fmt.Sprintf("#fresh%s%d:%s", runTag, i, server)
		status, _, body := rawRequest(ctx, t, "GET", base+"/_matrix/client/v3/directory/room/"+url.PathEscape(alias), "", nil)
		if status != 200 || !strings.Contains(body, created.RoomID.String()) {
			t.Fatalf("%d: %s right after the create: %d %s", i, alias, status, body)
		}
	}
}
