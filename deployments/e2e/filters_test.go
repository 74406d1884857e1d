package e2e

import (
	"net/http"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestFilters: filters on /sync and /messages select events by type (with wildcards),
// sender, room and url, count their limits over what they keep, lazily load members,
// and invalid ones are refused rather than ignored.
func TestFilters(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	carol := newUser(ctx, t, base, "carol")
	room := createRoomWith(ctx, t, alice, "private_chat", bob, carol)
	other := createRoomWith(ctx, t, alice, "private_chat")

	send := func(c *mautrix.Client, typ string, content map[string]any) {
		t.Helper()
		if _, err := c.SendMessageEvent(ctx, room, event.NewEventType(typ), content); err != nil {
			t.Fatal(err)
		}
	}
	send(bob, "m.room.message", textContent("from bob"))
	send(alice, "org.example.custom", map[string]any{"n": 1})
	send(alice, "m.room.message", map[string]any{"msgtype": "m.image", "body": "pic", "url": "mxc://x/y"})
	for i := range 5 {
		send(alice, "m.room.message", textContent("filler "+string(rune('a'+i))))
	}
	if _, err := alice.SendMessageEvent(ctx, other, event.EventMessage, textContent("elsewhere")); err != nil {
		t.Fatal(err)
	}

	timelineOf := func(resp *mautrix.RespSync, r id.RoomID) []*event.Event {
		if jr := resp.Rooms.Join[r]; jr != nil {
			return jr.Timeline.Events
		}
		return nil
	}
	syncWith := func(c *mautrix.Client, filter string) *mautrix.RespSync {
		t.Helper()
		resp, err := c.SyncRequest(ctx, 0, "", filter, false, "")
		if err != nil {
			t.Fatalf("sync with %s: %v", filter, err)
		}
		return resp
	}

	// Types with a wildcard, and the limit counts only what passes: bob's one message
	// is found behind seven events of alice's.
	resp := syncWith(carol, `{"room":{"timeline":{"limit":1,"senders":["`+bob.UserID.String()+`"],"types":["m.room.*"]}}}`)
	if tl := timelineOf(resp, room); len(tl) != 1 || tl[0].Sender != bob.UserID || !resp.Rooms.Join[room].Timeline.Limited {
		t.Errorf("senders + types + limit 1: %v", senders(tl))
	}
	resp = syncWith(carol, `{"room":{"timeline":{"limit":50,"not_types":["m.room.*"]}}}`)
	if tl := timelineOf(resp, room); len(tl) != 1 || tl[0].Type.Type != "org.example.custom" {
		t.Errorf("not_types m.room.*: %v", types(tl))
	}
	resp = syncWith(carol, `{"room":{"timeline":{"limit":50,"contains_url":true}}}`)
	if tl := timelineOf(resp, room); len(tl) != 1 || tl[0].Content.Raw["url"] != "mxc://x/y" {
		t.Errorf("contains_url: %v", types(tl))
	}
	resp = syncWith(carol, `{"room":{"timeline":{"limit":50,"not_senders":["`+alice.UserID.String()+`"],"types":[]}}}`)
	if tl := timelineOf(resp, room); len(tl) != 0 {
		t.Errorf("types [] lets nothing through: %v", types(tl))
	}
	resp = syncWith(alice, `{"room":{"not_rooms":["`+other.String()+`"]}}`)
	if resp.Rooms.Join[other] != nil || resp.Rooms.Join[room] == nil {
		t.Errorf("not_rooms: joined %v", keys(resp.Rooms.Join))
	}

	// State filtered by type, and members loaded lazily: the state carries the member
	// events of the timeline's senders and the user's own, nobody else's.
	resp = syncWith(carol, `{"room":{"timeline":{"limit":1},"state":{"types":["m.room.create"]}}}`)
	if st := resp.Rooms.Join[room].State.Events; len(st) != 1 || st[0].Type != event.StateCreate {
		t.Errorf("state types [m.room.create]: %v", types(st))
	}
	resp = syncWith(carol, `{"room":{"timeline":{"limit":1,"senders":["`+bob.UserID.String()+`"]},"state":{"lazy_load_members":true}}}`)
	var members []string
	for _, ev := range resp.Rooms.Join[room].State.Events {
		if ev.Type == event.StateMember {
			members = append(members, *ev.StateKey)
		}
	}
	slices.Sort(members)
	want := []string{bob.UserID.String(), carol.UserID.String()}
	slices.Sort(want)
	if !slices.Equal(members, want) {
		t.Errorf("lazy-loaded members %v, want %v", members, want)
	}
	if st := resp.Rooms.Join[room].State.Events; !slices.ContainsFunc(st, func(e *event.Event) bool { return e.Type == event.StateCreate }) {
		t.Errorf("lazy loading dropped non-member state: %v", types(st))
	}
	// Incremental: a sender whose member event the device was sent is not sent again,
	// unless the filter asks for redundant members.
	send(bob, "m.room.message", textContent("again from bob"))
	lazy := `{"room":{"timeline":{"limit":1,"senders":["` + bob.UserID.String() + `"]},"state":{"lazy_load_members":true}}}`
	inc, err := carol.SyncRequest(ctx, 0, resp.NextBatch, lazy, false, "")
	if err != nil || len(timelineOf(inc, room)) != 1 {
		t.Fatalf("incremental lazy sync: %v", err)
	}
	if st := inc.Rooms.Join[room].State.Events; len(st) != 0 {
		t.Errorf("a member already sent was sent again: %v", types(st))
	}
	send(bob, "m.room.message", textContent("and again"))
	redundant := `{"room":{"timeline":{"limit":1,"senders":["` + bob.UserID.String() + `"]},"state":{"lazy_load_members":true,"include_redundant_members":true}}}`
	inc, err = carol.SyncRequest(ctx, 0, inc.NextBatch, redundant, false, "")
	if err != nil || len(timelineOf(inc, room)) != 1 {
		t.Fatalf("incremental lazy sync with redundant members: %v", err)
	}
	if st := inc.Rooms.Join[room].State.Events; !slices.ContainsFunc(st, func(e *event.Event) bool { return *e.StateKey == bob.UserID.String() }) {
		t.Errorf("redundant members asked for: %v", types(st))
	}

	// The summary: three joined, nobody invited, heroes are the two others.
	sum := resp.Rooms.Join[room].Summary
	if sum.JoinedMemberCount == nil || *sum.JoinedMemberCount != 3 || sum.InvitedMemberCount == nil || *sum.InvitedMemberCount != 0 ||
		!slices.Equal(sum.Heroes, []id.UserID{alice.UserID, bob.UserID}) {
		t.Errorf("summary %+v (heroes %v)", sum, sum.Heroes)
	}

	// Account data filtered by type.
	if err := carol.SetAccountData(ctx, "org.example.keep", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if err := carol.SetAccountData(ctx, "org.example.drop", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	resp = syncWith(carol, `{"account_data":{"not_types":["*.drop"]}}`)
	if got := accountDataTypes(resp); !slices.Contains(got, "org.example.keep") || slices.Contains(got, "org.example.drop") {
		t.Errorf("account data not_types *.drop: %v", got)
	}

	// A stored filter is the same as inline.
	stored, err := carol.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 50, Types: []event.Type{event.NewEventType("org.example.custom")}}}})
	if err != nil {
		t.Fatal(err)
	}
	resp = syncWith(carol, stored.FilterID)
	if tl := timelineOf(resp, room); len(tl) != 1 || tl[0].Type.Type != "org.example.custom" {
		t.Errorf("stored filter: %v", types(tl))
	}

	// /messages with a filter, and lazily loaded members in its state.
	msgs, err := carol.Messages(ctx, room, "", "", mautrix.DirectionBackward,
		&mautrix.FilterPart{Senders: []id.UserID{bob.UserID}, Types: []event.Type{event.EventMessage}, LazyLoadMembers: true}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := senders(msgs.Chunk); len(got) != 3 || slices.ContainsFunc(got, func(u id.UserID) bool { return u != bob.UserID }) {
		t.Errorf("/messages senders [bob]: %v", got)
	}
	if len(msgs.State) != 1 || *msgs.State[0].StateKey != bob.UserID.String() {
		t.Errorf("/messages lazy members: %v", types(msgs.State))
	}

	// Paginating back over the whole room: the members as of the newest event of the
	// chunk, so everyone who sent one of its events, joined.
	all, err := carol.Messages(ctx, room, "", "", mautrix.DirectionBackward, &mautrix.FilterPart{LazyLoadMembers: true}, 100)
	if err != nil {
		t.Fatal(err)
	}
	joinedMembers := map[string]bool{}
	for _, ev := range all.State {
		if ev.Content.Raw["membership"] == "join" {
			joinedMembers[*ev.StateKey] = true
		}
	}
	if len(joinedMembers) != 3 {
		t.Errorf("/messages lazy members over the whole room: %v", joinedMembers)
	}

	// /members at a point before carol joined does not list her.
	early, err := carol.Messages(ctx, room, "", "", mautrix.DirectionForward, &mautrix.FilterPart{Types: []event.Type{event.StateMember}}, 2)
	if err != nil || len(early.Chunk) != 2 {
		t.Fatalf("first member events: %v", err)
	}
	at, err := carol.Members(ctx, room, mautrix.ReqMembers{At: early.End})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range at.Chunk {
		if *ev.StateKey == carol.UserID.String() {
			t.Errorf("/members at %s lists carol, who joined later", early.End)
		}
	}

	// Invalid filters: refused with the spec's errors, never ignored.
	for _, tc := range []struct {
		name, filter string
		status       int
		code         string
	}{
		{"room that is not a room id", `{"room":{"rooms":["general"]}}`, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"sender that is not a user id", `{"room":{"timeline":{"senders":["bob"]}}}`, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"negative limit", `{"room":{"timeline":{"limit":-1}}}`, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"wrong type", `{"room":{"timeline":{"types":"m.room.message"}}}`, http.StatusBadRequest, "M_BAD_JSON"},
		{"not JSON", `{"room":`, http.StatusBadRequest, "M_NOT_JSON"},
		{"unknown filter id", `12345`, http.StatusBadRequest, "M_INVALID_PARAM"},
	} {
		_, err := carol.SyncRequest(ctx, 0, "", tc.filter, false, "")
		wantError(t, "sync with "+tc.name, err, tc.status, tc.code)
	}
	_, err = carol.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{Rooms: []id.RoomID{"general"}}})
	wantError(t, "upload a filter naming a bad room", err, http.StatusBadRequest, "M_INVALID_PARAM")
	_, err = carol.MakeRequest(ctx, http.MethodGet, carol.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "rooms", room, "messages"},
		map[string]string{"dir": "b", "filter": `{"senders":["nobody"]}`}), nil, nil)
	wantError(t, "/messages with a bad sender", err, http.StatusBadRequest, "M_INVALID_PARAM")
}

func senders(evs []*event.Event) []id.UserID {
	var out []id.UserID
	for _, e := range evs {
		out = append(out, e.Sender)
	}
	return out
}

func types(evs []*event.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type.Type)
	}
	return out
}

func keys[M ~map[K]V, K comparable, V any](m M) []K {
	var out []K
	for k := range m {
		out = append(out, k)
	}
	return out
}

func accountDataTypes(resp *mautrix.RespSync) []string {
	var out []string
	for _, e := range resp.AccountData.Events {
		out = append(out, e.Type.Type)
	}
	return out
}
