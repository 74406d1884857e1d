package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestRoomAliases covers the room directory: createRoom's room_alias_name, resolving,
// joining by alias, adding and deleting aliases, and who may.
func TestRoomAliases(t *testing.T) {
	ctx, d, hs := singleProcess(t)
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")
	alias := id.RoomAlias("#lobby:" + d.serverName)

	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "lobby"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "lobby"})
	wantError(t, "a second room takes a taken alias", err, http.StatusBadRequest, "M_ROOM_IN_USE")

	resolved, err := bob.ResolveAlias(ctx, alias)
	if err != nil || resolved.RoomID != created.RoomID {
		t.Fatalf("resolving %s: %v, %v; want %s", alias, resolved, err, created.RoomID)
	}
	var canonical struct {
		Alias id.RoomAlias `json:"alias"`
	}
	if err := alice.StateEvent(ctx, created.RoomID, event.StateCanonicalAlias, "", &canonical); err != nil || canonical.Alias != alias {
		t.Errorf("canonical alias %q (%v), want %s", canonical.Alias, err, alias)
	}
	joined, err := bob.JoinRoom(ctx, alias.String(), nil)
	if err != nil || joined.RoomID != created.RoomID {
		t.Fatalf("bob joins by alias: %v, %v", joined, err)
	}

	other := id.RoomAlias("#other:" + d.serverName)
	eve := newUser(ctx, t, hs.url(), "eve")
	_, err = eve.CreateAlias(ctx, other, created.RoomID)
	wantError(t, "a non-member adds an alias", err, http.StatusForbidden, "M_FORBIDDEN")
	if _, err := bob.CreateAlias(ctx, other, created.RoomID); err != nil {
		t.Fatal(err)
	}
	_, err = alice.CreateAlias(ctx, other, created.RoomID)
	wantError(t, "an alias added twice", err, http.StatusConflict, "M_UNKNOWN")
	// Only the alias's creator, or a user who may change the room's canonical alias
	// (alice, its creator, could: TestAliasesAsSynapse), deletes it.
	_, err = eve.DeleteAlias(ctx, other)
	wantError(t, "a user without the power level deletes bob's alias", err, http.StatusForbidden, "M_FORBIDDEN")
	if _, err := bob.DeleteAlias(ctx, other); err != nil {
		t.Fatal(err)
	}
	_, err = bob.ResolveAlias(ctx, other)
	wantError(t, "resolving a deleted alias", err, http.StatusNotFound, "M_NOT_FOUND")
	_, err = bob.JoinRoom(ctx, "#nowhere:"+d.serverName, nil)
	wantError(t, "joining an unknown alias", err, http.StatusNotFound, "M_NOT_FOUND")
}

// TestCreateRoomAliasClaims: createRoom's alias is claimed through the alias's writer
// before the room is created. Of rooms created at once with one alias, exactly one is
// created and holds it, and the others cost no room; a create refused by the room's
// writer leaves the alias free.
func TestCreateRoomAliasClaims(t *testing.T) {
	ctx, d, hs := singleProcess(t)
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")

	// bob may not be joined by alice: the room's writer refuses the create.
	_, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "race", InitialState: []*event.Event{{
		Type: event.StateMember, StateKey: new(bob.UserID.String()), Content: event.Content{Raw: map[string]any{"membership": "join"}},
	}}})
	wantError(t, "a create the room's writer refuses", err, http.StatusForbidden, "M_FORBIDDEN")

	const n = 4
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "race"})
			errs <- err
		}()
	}
	created := 0
	for range n {
		if err := <-errs; err == nil {
			created++
		} else {
			wantError(t, "a create whose alias another create took", err, http.StatusBadRequest, "M_ROOM_IN_USE")
		}
	}
	if created != 1 {
		t.Fatalf("%d rooms created with one alias", created)
	}
	joined, err := alice.JoinedRooms(ctx)
	if err != nil || len(joined.JoinedRooms) != 1 {
		t.Fatalf("alice is in %v (%v); the losing creates must cost no room", joined, err)
	}
	resolved, err := bob.ResolveAlias(ctx, id.RoomAlias("#race:"+d.serverName))
	if err != nil || resolved.RoomID != joined.JoinedRooms[0] {
		t.Fatalf("#race resolves to %v (%v), want %s", resolved, err, joined.JoinedRooms[0])
	}
}

// publicRoomsOf asks the room directory's list with body (GET without one) and returns
// the answer.
func publicRoomsOf(ctx context.Context, t *testing.T, c *mautrix.Client, body map[string]any) publicRoomsAnswer {
	t.Helper()
	method, raw := http.MethodGet, []byte(nil)
	if body != nil {
		method, raw = http.MethodPost, must(json.Marshal(body))
	}
	status, code, text := rawRequest(ctx, t, method, c.HomeserverURL.String()+"/_matrix/client/v3/publicRooms", c.AccessToken, raw)
	var out publicRoomsAnswer
	if err := json.Unmarshal([]byte(text), &out); err != nil || status != http.StatusOK {
		t.Fatalf("publicRooms %v: %d %s %s", body, status, code, text)
	}
	return out
}

type publicRoomsAnswer struct {
	Chunk []struct {
		RoomID         string `json:"room_id"`
		Name           string `json:"name"`
		Topic          string `json:"topic"`
		CanonicalAlias string `json:"canonical_alias"`
		JoinRule       string `json:"join_rule"`
		Joined         int    `json:"num_joined_members"`
		WorldReadable  *bool  `json:"world_readable"`
		GuestCanJoin   *bool  `json:"guest_can_join"`
	} `json:"chunk"`
	NextBatch string `json:"next_batch"`
	PrevBatch string `json:"prev_batch"`
	Total     int    `json:"total_room_count_estimate"`
}

func (a publicRoomsAnswer) ids() []string {
	var out []string
	for _, r := range a.Chunk {
		out = append(out, r.RoomID)
	}
	return out
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestPublicRoomList: createRoom's visibility and PUT /directory/list/room put rooms in
// the list that /publicRooms pages through, most members first, with their name, topic
// and alias, filtered by a search term; only a member with the power level to change
// the canonical alias may change a room's entry.
func TestPublicRoomList(t *testing.T) {
	ctx, d, hs := singleProcess(t)
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")
	carol := newUser(ctx, t, hs.url(), "carol")
	womble, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "The Den",
		Topic: "Test Topic Wombles", RoomAliasName: "den"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "Busy"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := carol.JoinRoomByID(ctx, other.RoomID); err != nil {
		t.Fatal(err)
	}
	private := createRoomWith(ctx, t, alice, "private_chat", carol)

	all := publicRoomsOf(ctx, t, carol, nil)
	if got := all.ids(); !slices.Equal(got, []string{other.RoomID.String(), womble.RoomID.String()}) || all.Total != 2 {
		t.Fatalf("the list: %v (total %d), want the busier room first", got, all.Total)
	}
	den := all.Chunk[1]
	if den.Name != "The Den" || den.Topic != "Test Topic Wombles" || den.CanonicalAlias != "#den:"+d.serverName || den.Joined != 1 ||
		den.JoinRule != "public" || den.WorldReadable == nil || *den.WorldReadable || den.GuestCanJoin == nil {
		t.Errorf("the room's entry: %+v", den)
	}
	if got := publicRoomsOf(ctx, t, carol, map[string]any{"filter": map[string]any{"generic_search_term": "wombles"}}).ids(); !slices.Equal(got, []string{womble.RoomID.String()}) {
		t.Errorf("search for wombles: %v", got)
	}
	first := publicRoomsOf(ctx, t, carol, map[string]any{"limit": 1})
	second := publicRoomsOf(ctx, t, carol, map[string]any{"limit": 1, "since": first.NextBatch})
	if len(first.Chunk) != 1 || first.NextBatch == "" || !slices.Equal(second.ids(), []string{womble.RoomID.String()}) || second.NextBatch != "" || second.PrevBatch == "" {
		t.Errorf("pages of one: %+v then %+v", first, second)
	}

	listURL := hs.url() + "/_matrix/client/v3/directory/list/room/"
	visibility := func(room id.RoomID) string {
		status, _, text := rawRequest(ctx, t, http.MethodGet, listURL+room.String(), "", nil)
		var v struct{ Visibility string }
		_ = json.Unmarshal([]byte(text), &v)
		if status != http.StatusOK {
			t.Fatalf("visibility of %s: %d %s", room, status, text)
		}
		return v.Visibility
	}
	if v := visibility(private); v != "private" {
		t.Errorf("a private room: %s", v)
	}
	for _, c := range []struct {
		who    *mautrix.Client
		room   id.RoomID
		status int
		code   string
	}{
		{carol, private, http.StatusForbidden, "M_FORBIDDEN"}, // a member without the power level
		{bob, private, http.StatusForbidden, "M_FORBIDDEN"},   // not a member
		{alice, private, http.StatusOK, ""},
	} {
		status, code, _ := rawRequest(ctx, t, http.MethodPut, listURL+c.room.String(), c.who.AccessToken, []byte(`{"visibility":"public"}`))
		if status != c.status || code != c.code {
			t.Errorf("%s publishes %s: %d %s, want %d %s", c.who.UserID, c.room, status, code, c.status, c.code)
		}
	}
	if v := visibility(private); v != "public" {
		t.Errorf("after publishing: %s", v)
	}
	if status, _, _ := rawRequest(ctx, t, http.MethodPut, listURL+womble.RoomID.String(), alice.AccessToken, []byte(`{"visibility":"private"}`)); status != http.StatusOK {
		t.Fatalf("unpublish: %d", status)
	}
	if got := publicRoomsOf(ctx, t, carol, nil).ids(); slices.Contains(got, womble.RoomID.String()) || !slices.Contains(got, private.String()) {
		t.Errorf("after the changes: %v", got)
	}
	if status, code, _ := rawRequest(ctx, t, http.MethodGet, listURL+"!nosuch:"+d.serverName, "", nil); status != http.StatusNotFound || code != "M_NOT_FOUND" {
		t.Errorf("an unknown room's visibility: %d %s", status, code)
	}
	if status, code, _ := rawRequest(ctx, t, http.MethodPut, listURL+private.String(), alice.AccessToken, []byte(`{"visibility":"secret"}`)); status != http.StatusBadRequest || code != "M_INVALID_PARAM" {
		t.Errorf("visibility secret: %d %s", status, code)
	}
}
