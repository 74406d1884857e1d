package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

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
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	carol := newUser(ctx, t, base, "carol")
	dave := newUser(ctx, t, base, "dave")
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

// TestRoomCreationAsSynapse: the creator's join carries their display name; a topic
// given to createRoom has its m.topic block; GET /rooms/{id}/aliases lists the room's
// aliases to members, and to anyone when its history is world readable.
func TestRoomCreationAsSynapse(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	if err := alice.SetDisplayName(ctx, "Alice A."); err != nil {
		t.Fatal(err)
	}
	topic := "what we talk about"
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Topic: topic, RoomAliasName: "talk" + runTag})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	member, err := alice.FullStateEvent(ctx, room, event.StateMember, alice.UserID.String())
	if err != nil || member.Content.Raw["displayname"] != "Alice A." {
		t.Errorf("the creator's join: %v (%v)", member, err)
	}
	var tc struct {
		Topic  string `json:"topic"`
		MTopic struct {
			Text []struct {
				Mimetype string `json:"mimetype"`
				Body     string `json:"body"`
			} `json:"m.text"`
		} `json:"m.topic"`
	}
	if err := alice.StateEvent(ctx, room, event.StateTopic, "", &tc); err != nil || tc.Topic != topic ||
		len(tc.MTopic.Text) != 1 || tc.MTopic.Text[0].Body != topic || tc.MTopic.Text[0].Mimetype != "text/plain" {
		t.Errorf("the topic: %+v (%v)", tc, err)
	}

	var aliases struct {
		Aliases []string `json:"aliases"`
	}
	url := alice.BuildClientURL("v3", "rooms", room, "aliases")
	want := "#talk" + runTag + ":" + alice.UserID.Homeserver()
	if _, err := alice.MakeRequest(ctx, http.MethodGet, url, nil, &aliases); err != nil || len(aliases.Aliases) != 1 || aliases.Aliases[0] != want {
		t.Errorf("a member's aliases: %v (%v), want [%s]", aliases.Aliases, err, want)
	}
	if _, err := bob.MakeRequest(ctx, http.MethodGet, url, nil, &aliases); !errors.Is(err, mautrix.MForbidden) {
		t.Errorf("a non-member's aliases: %v, want 403 M_FORBIDDEN", err)
	}
	if _, err := alice.SendStateEvent(ctx, room, event.StateHistoryVisibility, "", map[string]any{"history_visibility": "world_readable"}); err != nil {
		t.Fatal(err)
	}
	// Bob reads what alice's write projected: he waits for it as a client would.
	deadline := time.Now().Add(10 * time.Second)
	for {
		aliases.Aliases = nil
		_, err := bob.MakeRequest(ctx, http.MethodGet, url, nil, &aliases)
		if err == nil && len(aliases.Aliases) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a non-member's aliases of a world readable room: %v (%v)", aliases.Aliases, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFetchEventAsSynapse: GET /rooms/{id}/event/{eventId} answers 404 M_NOT_FOUND to a
// user who may not see the event (not 403), 200 to anyone in a world readable room, and
// under "invited" history visibility shows a joined user what was sent between their
// invite and their join.
func TestFetchEventAsSynapse(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	fetch := func(c *mautrix.Client, room id.RoomID, ev id.EventID) error {
		_, err := c.GetEvent(ctx, room, ev)
		return err
	}

	private := createRoomWith(ctx, t, alice, "private_chat")
	secret, err := sendText(ctx, alice, private, "f1", "secret")
	if err != nil {
		t.Fatal(err)
	}
	if err := fetch(bob, private, secret); !errors.Is(err, mautrix.MNotFound) {
		t.Errorf("a non-member fetching an event: %v, want 404 M_NOT_FOUND", err)
	}

	public := createRoomWith(ctx, t, alice, "public_chat")
	if _, err := alice.SendStateEvent(ctx, public, event.StateHistoryVisibility, "", map[string]any{"history_visibility": "world_readable"}); err != nil {
		t.Fatal(err)
	}
	open, err := sendText(ctx, alice, public, "f2", "for everyone")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for err := fetch(bob, public, open); err != nil; err = fetch(bob, public, open) {
		if time.Now().After(deadline) {
			t.Fatalf("a non-member fetching an event of a world readable room: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	invited := createRoomWith(ctx, t, alice, "private_chat")
	if _, err := alice.SendStateEvent(ctx, invited, event.StateHistoryVisibility, "", map[string]any{"history_visibility": "invited"}); err != nil {
		t.Fatal(err)
	}
	before, err := sendText(ctx, alice, invited, "f3", "before the invite")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.InviteUser(ctx, invited, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	between, err := sendText(ctx, alice, invited, "f4", "between invite and join")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, invited); err != nil {
		t.Fatal(err)
	}
	if err := fetch(bob, invited, between); err != nil {
		t.Errorf("an event between the invite and the join, history visibility invited: %v", err)
	}
	if err := fetch(bob, invited, before); !errors.Is(err, mautrix.MNotFound) {
		t.Errorf("an event before the invite: %v, want 404 M_NOT_FOUND", err)
	}
}

// TestAliasesAsSynapse: m.room.canonical_alias names only aliases that point to the
// room (400 M_BAD_ALIAS otherwise, M_INVALID_PARAM for what is not an alias); a member
// whose power level lets them change it may delete another's alias, one without may
// not; deleting an alias the canonical alias event names takes it out of the event.
func TestAliasesAsSynapse(t *testing.T) {
	ctx, d, hs := singleProcess(t)
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")
	carol := newUser(ctx, t, hs.url(), "carol")
	room := createRoomWith(ctx, t, alice, "public_chat", bob, carol)
	other := createRoomWith(ctx, t, alice, "public_chat")
	alias := func(name string) id.RoomAlias { return id.RoomAlias("#" + name + ":" + d.serverName) }
	for _, a := range []struct {
		c    *mautrix.Client
		name string
		room id.RoomID
	}{{alice, "main", room}, {alice, "alt", room}, {bob, "bobs", room}, {alice, "elsewhere", other}} {
		if _, err := a.c.CreateAlias(ctx, alias(a.name), a.room); err != nil {
			t.Fatalf("creating %s: %v", a.name, err)
		}
	}

	for _, bad := range []struct {
		content map[string]any
		code    string
	}{
		{map[string]any{"alias": string(alias("missing"))}, "M_BAD_ALIAS"},
		{map[string]any{"alias": string(alias("elsewhere"))}, "M_BAD_ALIAS"},
		{map[string]any{"alias": string(alias("main")), "alt_aliases": []string{string(alias("missing"))}}, "M_BAD_ALIAS"},
		{map[string]any{"alias": "not an alias"}, "M_INVALID_PARAM"},
	} {
		_, err := alice.SendStateEvent(ctx, room, event.StateCanonicalAlias, "", bad.content)
		wantError(t, fmt.Sprintf("canonical alias %v", bad.content), err, http.StatusBadRequest, bad.code)
	}
	if _, err := alice.SendStateEvent(ctx, room, event.StateCanonicalAlias, "", map[string]any{
		"alias": string(alias("main")), "alt_aliases": []string{string(alias("alt")), string(alias("bobs"))}}); err != nil {
		t.Fatalf("a canonical alias of the room's aliases: %v", err)
	}

	if _, err := carol.DeleteAlias(ctx, alias("main")); !errors.Is(err, mautrix.MForbidden) {
		t.Errorf("a member without the power level deleting another's alias: %v, want 403 M_FORBIDDEN", err)
	}
	if _, err := alice.DeleteAlias(ctx, alias("bobs")); err != nil {
		t.Errorf("the room's admin deleting bob's alias: %v", err)
	}
	if _, err := alice.DeleteAlias(ctx, alias("main")); err != nil {
		t.Errorf("deleting the canonical alias: %v", err)
	}
	var c struct {
		Alias      string   `json:"alias"`
		AltAliases []string `json:"alt_aliases"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := alice.StateEvent(ctx, room, event.StateCanonicalAlias, "", &c)
		if err == nil && c.Alias == "" && len(c.AltAliases) == 1 && c.AltAliases[0] == string(alias("alt")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the canonical alias after deleting two of its aliases: %+v (%v)", c, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestIgnoredInviter: an invite from a user in the invitee's m.ignored_user_list does
// not appear in their /sync; another's does.
func TestIgnoredInviter(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	carol := newUser(ctx, t, base, "carol")
	if err := bob.SetAccountData(ctx, "m.ignored_user_list", map[string]any{"ignored_users": map[string]any{alice.UserID.String(): map[string]any{}}}); err != nil {
		t.Fatal(err)
	}
	fromAlice := createRoomWith(ctx, t, alice, "private_chat")
	fromCarol := createRoomWith(ctx, t, carol, "private_chat")
	if _, err := alice.InviteUser(ctx, fromAlice, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := carol.InviteUser(ctx, fromCarol, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := bob.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := res.Rooms.Invite[fromAlice]; ok {
			t.Fatal("bob's sync shows the invite of alice, whom he ignores")
		}
		if _, ok := res.Rooms.Invite[fromCarol]; ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("bob's sync never showed carol's invite")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
