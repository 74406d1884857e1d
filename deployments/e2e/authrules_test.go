package e2e

import (
	"context"
	"net/http"
	"testing"

	"github.com/jackc/pgx/v5"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Acceptance 4: the auth rules hold for a non-member, a user below the power level a
// state event needs, and a banned user.
func TestAuthRules(t *testing.T) {
	ctx, d, hs := singleProcess(t)
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")
	carol := newUser(ctx, t, hs.url(), "carol")
	dave := newUser(ctx, t, hs.url(), "dave")

	// A public room, so that only the auth rules, not the join rules, keep people out.
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "alice's room"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID

	_, err = sendText(ctx, dave, room, "t1", "I am not in this room")
	wantError(t, "a non-member sends", err, http.StatusForbidden, "M_FORBIDDEN")

	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatalf("bob joins the public room: %v", err)
	}
	if _, err := sendText(ctx, bob, room, "t2", "hello"); err != nil {
		t.Fatalf("a member sends: %v", err)
	}
	_, err = bob.SendStateEvent(ctx, room, event.StateRoomName, "", map[string]any{"name": "bob's room"})
	wantError(t, "bob (power 0) sets m.room.name (power 50)", err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = bob.SendStateEvent(ctx, room, event.StatePowerLevels, "", map[string]any{"users": map[string]int{bob.UserID.String(): 100}})
	wantError(t, "bob (power 0) raises his own power level", err, http.StatusForbidden, "M_FORBIDDEN")
	if _, err := alice.SendStateEvent(ctx, room, event.StateRoomName, "", map[string]any{"name": "renamed by alice"}); err != nil {
		t.Fatalf("alice (power 100) sets the name: %v", err)
	}
	var name struct {
		Name string `json:"name"`
	}
	if err := bob.StateEvent(ctx, room, event.StateRoomName, "", &name); err != nil || name.Name != "renamed by alice" {
		t.Errorf("room name is %q (%v), want alice's", name.Name, err)
	}

	if _, err := carol.JoinRoomByID(ctx, room); err != nil {
		t.Fatalf("carol joins: %v", err)
	}
	if _, err := alice.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: carol.UserID, Reason: "test"}); err != nil {
		t.Fatalf("alice bans carol: %v", err)
	}
	_, err = carol.JoinRoomByID(ctx, room)
	wantError(t, "banned carol rejoins", err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = sendText(ctx, carol, room, "t3", "still here?")
	wantError(t, "banned carol sends", err, http.StatusForbidden, "M_FORBIDDEN")
	var member struct {
		Membership event.Membership `json:"membership"`
	}
	if err := alice.StateEvent(ctx, room, event.StateMember, carol.UserID.String(), &member); err != nil || member.Membership != event.MembershipBan {
		t.Errorf("carol's membership is %q (%v), want ban", member.Membership, err)
	}

	// Nothing refused was stored: no message from dave or carol, no state from bob, and
	// carol's only own membership event is her first join.
	d.query(ctx, func(conn *pgx.Conn) error {
		var messages, bobState, carolJoins int
		err := conn.QueryRow(ctx, `SELECT
			count(*) FILTER (WHERE type = 'm.room.message' AND sender IN ($2, $3)),
			count(*) FILTER (WHERE sender = $4 AND type IN ('m.room.name', 'm.room.power_levels')),
			count(*) FILTER (WHERE sender = $3 AND type = 'm.room.member')
			FROM events WHERE room_id = $1`,
			room.String(), dave.UserID.String(), carol.UserID.String(), bob.UserID.String()).Scan(&messages, &bobState, &carolJoins)
		if err == nil && (messages != 0 || bobState != 0 || carolJoins != 1) {
			t.Errorf("Postgres has %d refused messages, %d refused state events of bob, %d member events of carol (want 0, 0, 1)", messages, bobState, carolJoins)
		}
		return err
	})
	checkMembers(ctx, t, alice, room, map[id.UserID]event.Membership{
		alice.UserID: event.MembershipJoin, bob.UserID: event.MembershipJoin, carol.UserID: event.MembershipBan,
	})
}

// checkMembers compares a room's member list with want.
func checkMembers(ctx context.Context, t *testing.T, c *mautrix.Client, room id.RoomID, want map[id.UserID]event.Membership) {
	t.Helper()
	resp, err := c.Members(ctx, room)
	if err != nil {
		t.Fatalf("members: %v", err)
	}
	got := map[id.UserID]event.Membership{}
	for _, e := range resp.Chunk {
		got[id.UserID(*e.StateKey)] = event.Membership(e.Content.Raw["membership"].(string))
	}
	if len(got) != len(want) {
		t.Errorf("members %v, want %v", got, want)
	}
	for u, m := range want {
		if got[u] != m {
			t.Errorf("members %v, want %v", got, want)
			return
		}
	}
}
