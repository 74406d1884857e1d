package e2e

import (
	"net/http"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestRoomUpgrade: an upgrade makes a room of the new version whose create event names
// its predecessor, with the old room's name, topic, rules, power levels, bans and
// aliases; the old room gets a tombstone and raised power levels, and its directory
// listing moves; a member without the power level, or an unknown version, is refused.
func TestRoomUpgrade(t *testing.T) {
	ctx, d, hs := singleProcess(t)
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")
	mallory := newUser(ctx, t, hs.url(), "mallory")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Old Hall", Topic: "all about it",
		RoomAliasName: "hall", Visibility: "public", RoomVersion: "10"})
	if err != nil {
		t.Fatal(err)
	}
	old := created.RoomID
	for _, c := range []*mautrix.Client{bob, mallory} {
		if _, err := c.JoinRoomByID(ctx, old); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.BanUser(ctx, old, &mautrix.ReqBanUser{UserID: mallory.UserID, Reason: "spam"}); err != nil {
		t.Fatal(err)
	}
	upgradeURL := hs.url() + "/_matrix/client/v3/rooms/" + old.String() + "/upgrade"
	if status, code, _ := rawRequest(ctx, t, http.MethodPost, upgradeURL, bob.AccessToken, []byte(`{"new_version":"11"}`)); status != http.StatusForbidden || code != "M_FORBIDDEN" {
		t.Errorf("an upgrade by a member without the power level: %d %s", status, code)
	}
	if status, code, _ := rawRequest(ctx, t, http.MethodPost, upgradeURL, alice.AccessToken, []byte(`{"new_version":"999"}`)); status != http.StatusBadRequest || code != "M_UNSUPPORTED_ROOM_VERSION" {
		t.Errorf("an upgrade to an unknown version: %d %s", status, code)
	}
	var res struct {
		ReplacementRoom id.RoomID `json:"replacement_room"`
	}
	if _, err := alice.MakeRequest(ctx, http.MethodPost, upgradeURL, map[string]string{"new_version": "11"}, &res); err != nil || res.ReplacementRoom == "" {
		t.Fatalf("upgrade: %v %+v", err, res)
	}
	fresh := res.ReplacementRoom

	var create struct {
		RoomVersion string `json:"room_version"`
		Predecessor struct {
			RoomID id.RoomID `json:"room_id"`
		} `json:"predecessor"`
	}
	if err := alice.StateEvent(ctx, fresh, event.StateCreate, "", &create); err != nil || create.RoomVersion != "11" || create.Predecessor.RoomID != old {
		t.Errorf("the new room's create: %+v %v", create, err)
	}
	var name event.RoomNameEventContent
	var topic event.TopicEventContent
	var rules event.JoinRulesEventContent
	var levels event.PowerLevelsEventContent
	var banned event.MemberEventContent
	for _, c := range []struct {
		typ event.Type
		key string
		out any
	}{{event.StateRoomName, "", &name}, {event.StateTopic, "", &topic}, {event.StateJoinRules, "", &rules},
		{event.StatePowerLevels, "", &levels}, {event.StateMember, mallory.UserID.String(), &banned}} {
		if err := alice.StateEvent(ctx, fresh, c.typ, c.key, c.out); err != nil {
			t.Errorf("%s in the new room: %v", c.typ.Type, err)
		}
	}
	if name.Name != "Old Hall" || topic.Topic != "all about it" || rules.JoinRule != event.JoinRulePublic ||
		levels.GetUserLevel(alice.UserID) != 100 || banned.Membership != event.MembershipBan {
		t.Errorf("copied state: %q %q %q %d %q", name.Name, topic.Topic, rules.JoinRule, levels.GetUserLevel(alice.UserID), banned.Membership)
	}
	var tomb event.TombstoneEventContent
	if err := bob.StateEvent(ctx, old, event.StateTombstone, "", &tomb); err != nil || tomb.ReplacementRoom != fresh {
		t.Errorf("the tombstone: %+v %v", tomb, err)
	}
	var oldLevels event.PowerLevelsEventContent
	if err := bob.StateEvent(ctx, old, event.StatePowerLevels, "", &oldLevels); err != nil || oldLevels.EventsDefault < 50 || oldLevels.Invite() < 50 {
		t.Errorf("the old room's power levels: events_default %d, invite %d, %v", oldLevels.EventsDefault, oldLevels.Invite(), err)
	}
	if resolved, err := bob.ResolveAlias(ctx, id.RoomAlias("#hall:"+d.serverName)); err != nil || resolved.RoomID != fresh {
		t.Errorf("the alias after the upgrade: %+v %v", resolved, err)
	}
	if got := publicRoomsOf(ctx, t, bob, nil).ids(); !slices.Contains(got, fresh.String()) || slices.Contains(got, old.String()) {
		t.Errorf("the directory after the upgrade: %v", got)
	}
	if _, err := bob.JoinRoomByID(ctx, fresh); err != nil {
		t.Errorf("joining the new room: %v", err)
	}
	if _, err := mallory.JoinRoomByID(ctx, fresh); err == nil {
		t.Error("a banned user joined the new room")
	}
}
