package e2e

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/tidwall/gjson"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestRoomReads covers the read endpoints of a room (state, members, joined members,
// joined rooms, one event, redaction) and what a user may still read after leaving:
// history up to the leave, nothing after it.
func TestRoomReads(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	eve := newUser(ctx, t, base, "eve")

	caps, err := alice.Capabilities(ctx)
	if err != nil || caps.RoomVersions == nil || caps.RoomVersions.Default != "11" ||
		caps.RoomVersions.Available["10"] == "" || caps.RoomVersions.Available["11"] == "" || caps.RoomVersions.Available["12"] != "" {
		t.Errorf("capabilities: %+v (%v); want default 11, 10 and 11 available, not 12", caps, err)
	}

	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "reads", Topic: "t"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	before, err := sendText(ctx, alice, room, "r1", "before bob leaves")
	if err != nil {
		t.Fatal(err)
	}
	// Read-your-writes: the sender's very next /sync on this process has the event.
	own, err := alice.SyncRequest(ctx, 0, "", `{"room":{"timeline":{"limit":5}}}`, false, "")
	if err != nil {
		t.Fatal(err)
	}
	if tl := own.Rooms.Join[room].Timeline.Events; len(tl) == 0 || tl[len(tl)-1].ID != before {
		t.Errorf("alice's /sync right after her send does not end with it: %v", tl)
	}

	state, err := bob.State(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []event.Type{event.StateCreate, event.StatePowerLevels, event.StateJoinRules, event.StateRoomName, event.StateTopic} {
		if _, ok := state[want][""]; !ok {
			t.Errorf("room state lacks %s", want.Type)
		}
	}
	if len(state[event.StateMember]) != 2 {
		t.Errorf("room state has %d members, want 2", len(state[event.StateMember]))
	}
	joined, err := alice.JoinedMembers(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := joined.Joined[bob.UserID]; !ok || len(joined.Joined) != 2 {
		t.Errorf("joined members %v, want alice and bob", joined.Joined)
	}
	rooms, err := bob.JoinedRooms(ctx)
	if err != nil || !slices.Contains(rooms.JoinedRooms, room) {
		t.Errorf("bob's joined rooms %v (%v) lack %s", rooms, err, room)
	}
	ev, err := bob.GetEvent(ctx, room, before)
	if err != nil || ev.Content.Raw["body"] != "before bob leaves" {
		t.Errorf("GET event: %v, %v", ev, err)
	}
	_, err = eve.GetEvent(ctx, room, before)
	// An event the user may not see is not found, as for Synapse.
	wantError(t, "a non-member reads an event", err, http.StatusNotFound, "M_NOT_FOUND")
	_, err = eve.Members(ctx, room)
	wantError(t, "a non-member lists members", err, http.StatusForbidden, "M_FORBIDDEN")

	// Redaction: the event stays, its content goes.
	if _, err := alice.RedactEvent(ctx, room, before, mautrix.ReqRedact{Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	ev, err = bob.GetEvent(ctx, room, before)
	if err != nil || len(ev.Content.Raw) != 0 {
		t.Errorf("redacted event: content %v (%v), want empty", ev.Content.Raw, err)
	}

	if _, err := bob.LeaveRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	after, err := sendText(ctx, alice, room, "r2", "after bob left")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.GetEvent(ctx, room, after); err == nil {
		t.Error("bob reads an event sent after he left")
	}
	if _, err := bob.GetEvent(ctx, room, before); err != nil {
		t.Errorf("bob cannot read an event from before he left: %v", err)
	}
	msgs, err := bob.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	var ids []id.EventID
	for _, e := range msgs.Chunk {
		ids = append(ids, e.ID)
	}
	if slices.Contains(ids, after) || !slices.Contains(ids, before) {
		t.Errorf("bob's /messages after leaving: %v; want %s and not %s", ids, before, after)
	}
	rooms, err = bob.JoinedRooms(ctx)
	if err != nil || slices.Contains(rooms.JoinedRooms, room) {
		t.Errorf("bob's joined rooms %v (%v) still list %s", rooms, err, room)
	}

	// Forgetting: the room leaves bob's syncs and its history closes to him, until he
	// joins again.
	_, err = alice.ForgetRoom(ctx, room)
	wantError(t, "a joined member forgets the room", err, http.StatusBadRequest, "M_UNKNOWN")
	withLeave := `{"room":{"include_leave":true,"timeline":{"limit":5}}}`
	resp, err := bob.SyncRequest(ctx, 0, "", withLeave, false, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := resp.Rooms.Leave[room]; !ok {
		t.Errorf("before forgetting, bob's sync with include_leave lacks the room")
	}
	if _, err := bob.ForgetRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	resp, err = bob.SyncRequest(ctx, 0, "", withLeave, false, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := resp.Rooms.Leave[room]; ok {
		t.Errorf("after forgetting, bob's sync still lists the room")
	}
	_, err = bob.GetEvent(ctx, room, before)
	wantError(t, "bob reads a forgotten room's event", err, http.StatusNotFound, "M_NOT_FOUND")
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.GetEvent(ctx, room, after); err != nil {
		t.Errorf("bob cannot read the room he joined again: %v", err)
	}
}

// TestForgottenLeaveInIncrementalSync: a room forgotten right after leaving still shows
// its leave to an incremental sync from before the leave (another device learns of it,
// as Synapse), and no longer to an initial sync.
func TestForgottenLeaveInIncrementalSync(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	room := createRoomWith(ctx, t, alice, "public_chat", bob)
	withLeave := `{"room":{"include_leave":true}}`
	before, err := bob.SyncRequest(ctx, 0, "", withLeave, false, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.LeaveRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.ForgetRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	inc, err := bob.SyncRequest(ctx, 0, before.NextBatch, withLeave, false, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := inc.Rooms.Leave[room]; !ok {
		t.Errorf("an incremental sync from before the leave lacks the forgotten room's leave")
	}
	initial, err := bob.SyncRequest(ctx, 0, "", withLeave, false, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := initial.Rooms.Leave[room]; ok {
		t.Errorf("an initial sync lists the forgotten room")
	}
}

// TestArchivedRoomInitialSync: an initial sync of a left room, filtered to messages and
// one state type, shows the room's events up to the leave, and in state only what
// came before the timeline.
func TestArchivedRoomInitialSync(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	room := createRoomWith(ctx, t, alice, "public_chat", bob)
	if _, err := alice.SendText(ctx, room, "before"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendStateEvent(ctx, room, event.NewEventType("a.madeup.test.state"), "", map[string]string{"my_key": "before"}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.LeaveRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendText(ctx, room, "after"); err != nil {
		t.Fatal(err)
	}
	filter := `{"room":{"include_leave":true,"timeline":{"types":["m.room.message","a.madeup.test.state"]},"state":{"types":["a.madeup.test.state"]}}}`
	res := getJSON(ctx, t, bob, "v3/sync?filter="+url.QueryEscape(filter), http.StatusOK)
	left := res.Get("rooms.leave." + gjson.Escape(room.String()))
	tl := left.Get("timeline.events").Array()
	if len(tl) != 2 || tl[0].Get("content.body").Str != "before" || len(left.Get("state.events").Array()) != 0 {
		t.Errorf("the left room: %s", left.Raw)
	}
}
