package e2e

import (
	"net/http"
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
