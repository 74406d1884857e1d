package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Knocking: a knock is a member event the room's moderators see, the knocker's /sync
// lists the room under rooms.knock with its stripped state, and an invite lets them in
// while a kick turns them away. Rooms whose join rule does not allow knocking refuse it.
func TestKnocking(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	carol := newUser(ctx, t, base, "carol")
	room := createWithJoinRule(ctx, t, alice, event.JoinRulesEventContent{JoinRule: event.JoinRuleKnock})
	public := createRoomWith(ctx, t, alice, "public_chat")

	if _, err := carol.KnockRoom(ctx, public.String(), nil); err == nil {
		t.Error("a knock on a public room was accepted")
	} else {
		wantError(t, "a knock on a public room", err, http.StatusForbidden, "M_FORBIDDEN")
	}
	_, err := carol.KnockRoom(ctx, "!nowhere:"+carol.UserID.Homeserver(), nil)
	wantError(t, "a knock on an unknown room", err, http.StatusNotFound, "M_NOT_FOUND")
	_, err = bob.JoinRoomByID(ctx, room)
	wantError(t, "a join of a knock room without an invite", err, http.StatusForbidden, "M_FORBIDDEN")

	for _, c := range []*mautrix.Client{bob, carol} {
		res, err := c.KnockRoom(ctx, room.String(), &mautrix.ReqKnockRoom{Reason: "let me in"})
		if err != nil || res.RoomID != room {
			t.Fatalf("%s knocks: %v %+v", c.UserID, err, res)
		}
	}
	eventually(t, "bob's knock as the room's members see it", func() error {
		var knock event.MemberEventContent
		if err := alice.StateEvent(ctx, room, event.StateMember, bob.UserID.String(), &knock); err != nil {
			return err
		}
		if knock.Membership != event.MembershipKnock || knock.Reason != "let me in" {
			return fmt.Errorf("%+v", knock)
		}
		return nil
	})

	sync, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	knocked := sync.Rooms.Knock[room]
	if knocked == nil {
		t.Fatalf("bob's sync lists no knocked room: %+v", sync.Rooms)
	}
	var sawRule, sawOwn bool
	for _, ev := range knocked.State.Events {
		sawRule = sawRule || ev.Type == event.StateJoinRules
		sawOwn = sawOwn || ev.Type == event.StateMember && ev.GetStateKey() == bob.UserID.String()
	}
	if !sawRule || !sawOwn {
		t.Errorf("knock_state: join rules %v, own knock %v in %d events", sawRule, sawOwn, len(knocked.State.Events))
	}
	if _, ok := sync.Rooms.Join[room]; ok {
		t.Error("the knocked room is also listed as joined")
	}

	// An invite admits bob; a kick turns carol away, and her next sync says so.
	carolSync, err := carol.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil || carolSync.Rooms.Knock[room] == nil {
		t.Fatalf("carol's knock in her sync: %v", err)
	}
	if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatalf("bob joins after the invite: %v", err)
	}
	if _, err := alice.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: carol.UserID, Reason: "not today"}); err != nil {
		t.Fatalf("a kick of a knocking user: %v", err)
	}
	eventually(t, "carol's sync after the kick", func() error {
		later, err := carol.SyncRequest(ctx, 0, carolSync.NextBatch, "", false, event.PresenceOnline)
		if err != nil {
			return err
		}
		if _, ok := later.Rooms.Leave[room]; !ok || later.Rooms.Knock[room] != nil {
			return fmt.Errorf("leave %v, knock %v", ok, later.Rooms.Knock[room] != nil)
		}
		return nil
	})
	joined, err := bob.JoinedRooms(ctx)
	if err != nil || !slices.Contains(joined.JoinedRooms, room) {
		t.Errorf("bob's rooms after the invite: %v %v", joined, err)
	}
}

// Restricted rooms: members of an allowed room join without an invite, their join names
// a local member who may invite, others are refused; knock_restricted rooms also take
// knocks; and a room left with no local member who may invite cannot grant a join.
func TestRestrictedJoins(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	dave := newUser(ctx, t, base, "dave")
	erin := newUser(ctx, t, base, "erin")
	space := createRoomWith(ctx, t, alice, "public_chat")
	allow := []event.JoinRuleAllow{{Type: event.JoinRuleAllowRoomMembership, RoomID: space}}
	restricted := createWithJoinRule(ctx, t, alice, event.JoinRulesEventContent{JoinRule: event.JoinRuleRestricted, Allow: allow})
	knockable := createWithJoinRule(ctx, t, alice, event.JoinRulesEventContent{JoinRule: event.JoinRuleKnockRestricted, Allow: allow})
	orphan := createWithJoinRule(ctx, t, alice, event.JoinRulesEventContent{JoinRule: event.JoinRuleRestricted, Allow: allow})
	if _, err := alice.LeaveRoom(ctx, orphan); err != nil {
		t.Fatal(err)
	}

	_, err := dave.JoinRoomByID(ctx, restricted)
	wantError(t, "a join of a restricted room by a non-member of the allowed room", err, http.StatusForbidden, "M_FORBIDDEN")
	if _, err := erin.KnockRoom(ctx, knockable.String(), nil); err != nil {
		t.Errorf("a knock on a knock_restricted room: %v", err)
	}
	if _, err := dave.JoinRoomByID(ctx, space); err != nil {
		t.Fatal(err)
	}
	for _, room := range []id.RoomID{restricted, knockable} {
		if _, err := dave.JoinRoomByID(ctx, room); err != nil {
			t.Fatalf("a join by a member of the allowed room: %v", err)
		}
		var m event.MemberEventContent
		if err := dave.StateEvent(ctx, room, event.StateMember, dave.UserID.String(), &m); err != nil ||
			m.Membership != event.MembershipJoin || m.JoinAuthorisedViaUsersServer != alice.UserID {
			t.Errorf("dave's join of %s: %+v %v", room, m, err)
		}
	}
	_, err = dave.JoinRoomByID(ctx, orphan)
	wantError(t, "a join no local member may authorise", err, http.StatusBadRequest, "M_UNABLE_TO_GRANT_JOIN")
}

// createWithJoinRule creates a private room of version 10 (the first with every join
// rule) whose join rules are rules.
func createWithJoinRule(ctx context.Context, t *testing.T, creator *mautrix.Client, rules event.JoinRulesEventContent) id.RoomID {
	t.Helper()
	res, err := creator.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "10",
		InitialState: []*event.Event{{Type: event.StateJoinRules, StateKey: new(string), Content: event.Content{Parsed: &rules}}}})
	if err != nil {
		t.Fatal(err)
	}
	return res.RoomID
}
