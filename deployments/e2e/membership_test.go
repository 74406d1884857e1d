package e2e

import (
	"errors"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestMembershipAsSynapse: what issue 10 found answering differently from Synapse. A
// kick of a user who left, or was never in the room, is refused with 403; a kick of an
// invited user is not. The same state set again by its sender, and a join by a joined
// user, answer with the existing event and create none. A join's body keys go into
// its member event; a ban can still be lifted.
func TestMembershipAsSynapse(t *testing.T) {
	ctx, _, hs := singleProcess(t)
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")
	carol := newUser(ctx, t, hs.url(), "carol")
	dave := newUser(ctx, t, hs.url(), "dave")
	room := createRoomWith(ctx, t, alice, "public_chat", bob)

	if _, err := bob.LeaveRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	for _, target := range []id.UserID{bob.UserID, carol.UserID} {
		_, err := alice.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: target})
		if !errors.Is(err, mautrix.MForbidden) {
			t.Errorf("kicking %s, not in the room: %v, want 403 M_FORBIDDEN", target, err)
		}
	}
	if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: carol.UserID, Reason: "not now"}); err != nil {
		t.Errorf("kicking an invited user: %v", err)
	}
	if _, err := alice.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: dave.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: dave.UserID}); !errors.Is(err, mautrix.MForbidden) {
		t.Errorf("kicking a banned user: %v, want 403 M_FORBIDDEN", err)
	}
	if _, err := alice.UnbanUser(ctx, room, &mautrix.ReqUnbanUser{UserID: dave.UserID}); err != nil {
		t.Errorf("unbanning: %v", err)
	}

	topic := map[string]any{"topic": "the same"}
	first, err := alice.SendStateEvent(ctx, room, event.StateTopic, "", topic)
	if err != nil {
		t.Fatal(err)
	}
	again, err := alice.SendStateEvent(ctx, room, event.StateTopic, "", topic)
	if err != nil || again.EventID != first.EventID {
		t.Errorf("the same topic again: %v (%v), want the existing %s", again, err, first.EventID)
	}
	changed, err := alice.SendStateEvent(ctx, room, event.StateTopic, "", map[string]any{"topic": "another"})
	if err != nil || changed.EventID == first.EventID {
		t.Errorf("another topic: %v (%v), want a new event", changed, err)
	}

	// A join's own keys, and a joined user joining again.
	var joined struct {
		RoomID string `json:"room_id"`
	}
	body := map[string]any{"reason": "hello", "foo": "bar", "displayname": "Bobby"}
	if _, err := bob.MakeRequest(ctx, http.MethodPost, bob.BuildClientURL("v3", "rooms", room, "join"), body, &joined); err != nil {
		t.Fatal(err)
	}
	member, err := bob.FullStateEvent(ctx, room, event.StateMember, bob.UserID.String())
	if err != nil {
		t.Fatal(err)
	}
	c := member.Content.Raw
	if c["foo"] != "bar" || c["reason"] != "hello" || c["displayname"] != "Bobby" || c["membership"] != "join" {
		t.Errorf("the member event of a join with keys: %v", c)
	}
	if _, err := bob.MakeRequest(ctx, http.MethodPost, bob.BuildClientURL("v3", "rooms", room, "join"), body, &joined); err != nil {
		t.Fatal(err)
	}
	if again, err := bob.FullStateEvent(ctx, room, event.StateMember, bob.UserID.String()); err != nil || again.ID != member.ID {
		t.Errorf("joining again made %v (%v), want the existing %s", again.ID, err, member.ID)
	}
}
