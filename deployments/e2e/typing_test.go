package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// ephemeral returns the content of room's ephemeral event of type typ in r.
func ephemeral(r *mautrix.RespSync, room id.RoomID, typ string) (map[string]any, bool) {
	jr := r.Rooms.Join[room]
	if jr == nil {
		return nil, false
	}
	for _, ev := range jr.Ephemeral.Events {
		if ev.Type.Type == typ {
			return ev.Content.Raw, true
		}
	}
	return nil, false
}

func typingUsers(content map[string]any) []string {
	users := []string{}
	list, _ := content["user_ids"].([]any)
	for _, u := range list {
		s, _ := u.(string)
		users = append(users, s)
	}
	slices.Sort(users)
	return users
}

// syncForEphemeral syncs c from since until room has an ephemeral event of type typ
// that done accepts, and returns its content and the token to go on from.
func syncForEphemeral(ctx context.Context, t *testing.T, c *mautrix.Client, since string, room id.RoomID, typ string, done func(map[string]any) bool) (map[string]any, string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		r, err := c.SyncRequest(ctx, 5000, since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatalf("%s: sync: %v", c.UserID, err)
		}
		since = r.NextBatch
		if content, ok := ephemeral(r, room, typ); ok && done(content) {
			return content, since
		}
	}
	t.Fatalf("%s: no %s in %s that the test waits for", c.UserID, typ, room)
	return nil, ""
}

// TestTyping: two users in a room; one's typing (start, stop, timeout, leaving the
// room) reaches the other's /sync and wakes their long-poll; only the user themselves,
// in a room they are joined to, may set it; malformed requests get the spec's errors.
func TestTyping(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	eve := newUser(ctx, t, base, "eve")
	room := createRoomWith(ctx, t, alice, "private_chat", bob)
	since, err := syncUntilJoined(ctx, bob, []id.RoomID{room})
	if err != nil {
		t.Fatal(err)
	}
	isTyping := func(users ...string) func(map[string]any) bool {
		return func(c map[string]any) bool { return slices.Equal(typingUsers(c), users) }
	}

	// Bob's long-poll wakes for alice's typing alone.
	done := longPoll(ctx, t, bob, 30000, since, noPresence, false, event.PresenceOnline)
	time.Sleep(300 * time.Millisecond)
	if _, err := alice.UserTyping(ctx, room, true, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r == nil {
		t.FailNow()
	}
	if content, ok := ephemeral(r, room, "m.typing"); !ok || !isTyping(alice.UserID.String())(content) {
		t.Fatalf("long-poll woken by typing: %v", r.Rooms.Join[room])
	}
	since = r.NextBatch

	// A new sync of bob's shows who types now; alice's own too.
	if _, err := bob.UserTyping(ctx, room, true, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	both := []string{alice.UserID.String(), bob.UserID.String()}
	slices.Sort(both)
	syncForEphemeral(ctx, t, alice, "", room, "m.typing", isTyping(both...))

	// Stops.
	if _, err := bob.UserTyping(ctx, room, false, 0); err != nil {
		t.Fatal(err)
	}
	_, since = syncForEphemeral(ctx, t, bob, since, room, "m.typing", isTyping(alice.UserID.String()))
	if _, err := alice.UserTyping(ctx, room, false, 0); err != nil {
		t.Fatal(err)
	}
	_, since = syncForEphemeral(ctx, t, bob, since, room, "m.typing", isTyping())

	// A timeout is honoured: alice stops typing by herself after a second.
	if _, err := alice.UserTyping(ctx, room, true, time.Second); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	_, since = syncForEphemeral(ctx, t, bob, since, room, "m.typing", isTyping(alice.UserID.String()))
	_, since = syncForEphemeral(ctx, t, bob, since, room, "m.typing", isTyping())
	if took := time.Since(started); took < 900*time.Millisecond || took > 10*time.Second {
		t.Errorf("a 1 s typing notice ended after %v", took)
	}

	// Errors.
	typingURL := func(room id.RoomID, user id.UserID) string {
		return alice.BuildClientURL("v3", "rooms", room, "typing", user)
	}
	_, err = alice.MakeRequest(ctx, http.MethodPut, typingURL(room, bob.UserID), map[string]any{"typing": true}, nil)
	wantError(t, "alice sets bob's typing", err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = eve.UserTyping(ctx, room, true, time.Second)
	wantError(t, "typing in a room one is not in", err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = alice.MakeRequest(ctx, http.MethodPut, typingURL("!unknown:"+id.RoomID(alice.UserID.Homeserver()), alice.UserID), map[string]any{"typing": true}, nil)
	wantError(t, "typing in an unknown room", err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = alice.MakeRequest(ctx, http.MethodPut, typingURL("not-a-room", alice.UserID), map[string]any{"typing": true}, nil)
	wantError(t, "typing in a bad room id", err, http.StatusBadRequest, "M_INVALID_PARAM")
	_, err = alice.MakeRequest(ctx, http.MethodPut, typingURL(room, "alice"), map[string]any{"typing": true}, nil)
	wantError(t, "typing of a bad user id", err, http.StatusBadRequest, "M_INVALID_PARAM")
	for _, c := range []struct {
		what, body string
		status     int
		code       string
	}{
		{"not JSON", `{"typing":`, http.StatusBadRequest, "M_NOT_JSON"},
		{"not an object", `[true]`, http.StatusBadRequest, "M_BAD_JSON"},
		{"without typing", `{"timeout":1000}`, http.StatusBadRequest, "M_MISSING_PARAM"},
		{"typing not a boolean", `{"typing":"yes"}`, http.StatusBadRequest, "M_BAD_JSON"},
		{"timeout not a number", `{"typing":true,"timeout":"30000"}`, http.StatusBadRequest, "M_BAD_JSON"},
		{"too large", `{"typing":true,"x":"` + strings.Repeat("a", 5000) + `"}`, http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
	} {
		status, code, body := rawRequest(ctx, t, http.MethodPut, base+"/_matrix/client/v3/rooms/"+url.PathEscape(room.String())+
			"/typing/"+url.PathEscape(alice.UserID.String()), alice.AccessToken, []byte(c.body))
		if status != c.status || code != c.code {
			t.Errorf("typing body %s: %d %s (%s), want %d %s", c.what, status, code, body, c.status, c.code)
		}
	}
	// None of the refused requests made anyone type.
	r, err = bob.SyncRequest(ctx, 500, since, "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	if content, ok := ephemeral(r, room, "m.typing"); ok {
		t.Errorf("refused typing requests reached bob: %v", content)
	}

	// Leaving the room stops one's typing at once, as in Synapse.
	if _, err := bob.UserTyping(ctx, room, true, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	_, aliceSince := syncForEphemeral(ctx, t, alice, "", room, "m.typing", isTyping(bob.UserID.String()))
	if _, err := bob.LeaveRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	left := time.Now()
	syncForEphemeral(ctx, t, alice, aliceSince, room, "m.typing", isTyping())
	if took := time.Since(left); took > 10*time.Second {
		t.Errorf("bob stopped typing %v after leaving", took)
	}
}

// checkTypingAcross: typing set through one gateway reaches the other user's /sync on
// theirs, start and stop.
func checkTypingAcross(ctx context.Context, t *testing.T, c streamClients) {
	first, err := c.bob.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	other := at(c.alice, c.bob.HomeserverURL.String())
	if _, err := other.UserTyping(ctx, c.room, true, time.Minute); err != nil {
		t.Fatal(err)
	}
	typers := func(want ...string) func(*mautrix.RespSync) bool {
		return func(r *mautrix.RespSync) bool {
			content, ok := ephemeral(r, c.room, "m.typing")
			return ok && slices.Equal(typingUsers(content), want)
		}
	}
	since := syncUntil(ctx, t, c.bob, first.NextBatch, "typing set through the other gateway", typers(c.alice.UserID.String()))
	if _, err := c.alice.UserTyping(ctx, c.room, false, 0); err != nil {
		t.Fatal(err)
	}
	syncUntil(ctx, t, c.bob, since, "typing stopped", typers())
}

// typingRedisCheck starts typing; Synapse's typing row is [room_id, [user_ids]].
var typingRedisCheck = redisStreamCheck{
	stream: "typing",
	act: func(ctx context.Context, t *testing.T, alice, _ *mautrix.Client, room id.RoomID) {
		if _, err := alice.UserTyping(ctx, room, true, time.Minute); err != nil {
			t.Fatal(err)
		}
	},
	row: func(f []json.RawMessage, alice, _ *mautrix.Client, room id.RoomID) (bool, error) {
		var roomID string
		var users []string
		if len(f) != 2 || json.Unmarshal(f[0], &roomID) != nil || json.Unmarshal(f[1], &users) != nil || users == nil {
			return false, errors.New("want [room_id, [user_ids]]")
		}
		return roomID == room.String() && slices.Equal(users, []string{alice.UserID.String()}), nil
	},
}
