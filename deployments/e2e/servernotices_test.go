package e2e

import (
	"fmt"
	"net/http"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Server notices: an admin sends a user a notice; the system user (with its configured
// profile) invites them to a named room tagged m.server_notice where they cannot speak
// and cannot reject the invite; once joined they may leave, and the next notice invites
// them back to the same room. A notice with a transaction ID is sent once.
func TestServerNotices(t *testing.T) {
	ctx, d, hs, root := withAdmin(t, deploymentOptions{}, map[string]any{"server_notices": map[string]any{
		"system_mxid_localpart": "notices", "system_mxid_display_name": "Notices", "room_name": "From the operators"}})
	alice := newUser(ctx, t, hs.url(), "alice")
	system := id.UserID("@notices:" + d.serverName)
	notice := map[string]any{"user_id": alice.UserID, "content": map[string]any{"msgtype": "m.text", "body": "maintenance tonight"}}

	adminCall(ctx, t, hs, alice, "POST", "v1/send_server_notice", notice, http.StatusForbidden)
	adminCall(ctx, t, hs, root, "POST", "v1/send_server_notice", map[string]any{"user_id": "@alice:elsewhere", "content": map[string]any{}}, http.StatusBadRequest)
	adminCall(ctx, t, hs, root, "POST", "v1/send_server_notice", map[string]any{"user_id": "@nobody:" + d.serverName, "content": map[string]any{}}, http.StatusNotFound)
	adminCall(ctx, t, hs, root, "POST", "v1/send_server_notice", map[string]any{"user_id": alice.UserID, "content": "text"}, http.StatusBadRequest)
	first := adminCall(ctx, t, hs, root, "POST", "v1/send_server_notice", notice, http.StatusOK).Get("event_id").Str

	var room id.RoomID
	eventually(t, "the invite in alice's sync", func() error {
		sync, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
		if err != nil {
			return err
		}
		for r, inv := range sync.Rooms.Invite {
			for _, ev := range inv.State.Events {
				if ev.Type == event.StateMember && ev.GetStateKey() == alice.UserID.String() && ev.Sender == system {
					room = r
				}
			}
		}
		if room == "" {
			return fmt.Errorf("no invite from %s: %+v", system, sync.Rooms.Invite)
		}
		return nil
	})
	if room == "" {
		t.FailNow()
	}
	_, err := alice.LeaveRoom(ctx, room)
	wantError(t, "rejecting the notices room's invite", err, http.StatusForbidden, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM")
	if _, err := alice.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	ev, err := alice.GetEvent(ctx, room, id.EventID(first))
	if err != nil || ev.Sender != system || ev.Content.Raw["body"] != "maintenance tonight" {
		t.Errorf("the notice: %+v %v", ev, err)
	}
	var name event.RoomNameEventContent
	if err := alice.StateEvent(ctx, room, event.StateRoomName, "", &name); err != nil || name.Name != "From the operators" {
		t.Errorf("the room's name: %q %v", name.Name, err)
	}
	var tags event.TagEventContent
	if err := alice.GetTagsWithCustomData(ctx, room, &tags); err != nil || !hasTag(tags, "m.server_notice") {
		t.Errorf("alice's tags of the room: %+v %v", tags, err)
	}
	if p, err := alice.GetProfile(ctx, system); err != nil || p.DisplayName != "Notices" {
		t.Errorf("the system user's profile: %+v %v", p, err)
	}
	_, err = sendText(ctx, alice, room, "n1", "can I answer?")
	wantError(t, "alice speaking in her notices room", err, http.StatusForbidden, "M_FORBIDDEN")

	if _, err := alice.LeaveRoom(ctx, room); err != nil {
		t.Fatalf("leaving the notices room once joined: %v", err)
	}
	adminCall(ctx, t, hs, root, "POST", "v1/send_server_notice", notice, http.StatusOK)
	var member event.MemberEventContent
	if err := root.StateEvent(ctx, room, event.StateMember, alice.UserID.String(), &member); err == nil {
		t.Error("root reads the notices room's state, it is not a member")
	}
	joined, err := alice.JoinRoomByID(ctx, room)
	if err != nil || joined.RoomID != room {
		t.Errorf("joining again after the next notice's invite: %v", err)
	}

	again := func() string {
		return adminCall(ctx, t, hs, root, "PUT", "v1/send_server_notice/txn1", notice, http.StatusOK).Get("event_id").Str
	}
	if a, b := again(), again(); a == "" || a != b {
		t.Errorf("a notice sent twice with one transaction ID: %q and %q", a, b)
	}
}

func hasTag(tags event.TagEventContent, tag event.RoomTag) bool {
	_, ok := tags.Tags[tag]
	return ok
}
