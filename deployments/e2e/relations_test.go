package e2e

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// getJSON GETs path (under the client API) as c and returns the body, failing on
// another status than want.
func getJSON(ctx context.Context, t *testing.T, c *mautrix.Client, path string, want int) gjson.Result {
	t.Helper()
	status, code, text := rawRequest(ctx, t, http.MethodGet, c.HomeserverURL.String()+"/_matrix/client/"+path, c.AccessToken, nil)
	if status != want {
		t.Fatalf("GET %s: %d %s %s, want %d", path, status, code, text, want)
	}
	return gjson.Parse(text)
}

func relatesTo(target id.EventID, relType string, content map[string]any) map[string]any {
	content["m.relates_to"] = map[string]any{"event_id": target, "rel_type": relType}
	return content
}

// TestRelationsAndThreads: the events relating to an event page in both directions,
// filtered by relation and event type and recursively; an event comes with its
// aggregations (thread summary, latest edit, references); /threads lists roots by
// latest activity, all or those the user took part in; a redacted relation is gone.
func TestRelationsAndThreads(t *testing.T) {
	ctx, _, hs := singleProcess(t)
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")
	carol := newUser(ctx, t, hs.url(), "carol")
	room := createRoomWith(ctx, t, alice, "private_chat", bob)
	send := func(c *mautrix.Client, typ string, content map[string]any) id.EventID {
		t.Helper()
		res, err := c.SendMessageEvent(ctx, room, event.NewEventType(typ), content)
		if err != nil {
			t.Fatal(err)
		}
		return res.EventID
	}
	root := send(alice, "m.room.message", textContent("root"))
	reply := send(alice, "m.room.message", relatesTo(root, "m.thread", textContent("in the thread")))
	dummy := send(bob, "m.dummy", relatesTo(root, "m.thread", map[string]any{}))
	edit := send(alice, "m.room.message", relatesTo(root, "m.replace", map[string]any{"msgtype": "m.text", "body": "* edited",
		"m.new_content": textContent("edited")}))
	ref := send(bob, "m.room.message", relatesTo(root, "m.reference", textContent("see above")))
	reaction := send(bob, "m.reaction", map[string]any{"m.relates_to": map[string]any{"event_id": reply, "rel_type": "m.annotation", "key": "👍"}})
	other := send(bob, "m.room.message", textContent("second root"))
	otherReply := send(bob, "m.room.message", relatesTo(other, "m.thread", textContent("reply two")))

	base := "v1/rooms/" + room.String() + "/relations/" + root.String()
	page := func(path string) []string { return ids(getJSON(ctx, t, alice, path, http.StatusOK).Get("chunk")) }
	str := func(evs ...id.EventID) []string {
		out := make([]string, len(evs))
		for i, e := range evs {
			out[i] = e.String()
		}
		return out
	}
	for _, c := range []struct {
		path string
		want []string
	}{
		{base, str(ref, edit, dummy, reply)},
		{base + "/m.thread", str(dummy, reply)},
		{base + "/m.thread/m.room.message", str(reply)},
		{base + "?dir=f&limit=2", str(reply, dummy)},
		{base + "/m.thread?recurse=true", str(dummy, reply)}, // the reaction is not a thread relation
		{base + "?recurse=true&limit=10", str(reaction, ref, edit, dummy, reply)},
	} {
		if got := page(c.path); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.path, got, c.want)
		}
	}
	first := getJSON(ctx, t, alice, base+"?limit=3", http.StatusOK)
	next := first.Get("next_batch").Str
	if got := ids(first.Get("chunk")); !slices.Equal(got, str(ref, edit, dummy)) || next == "" {
		t.Fatalf("first page of 3: %v, next %q", got, next)
	}
	if got := page(base + "?limit=3&from=" + next); !slices.Equal(got, str(reply)) {
		t.Errorf("second page: %v", got)
	}

	ev := getJSON(ctx, t, alice, "v3/rooms/"+room.String()+"/event/"+root.String(), http.StatusOK)
	rel := ev.Get(`unsigned.m\.relations`)
	if rel.Get(`m\.thread.count`).Int() != 2 || rel.Get(`m\.thread.latest_event.event_id`).Str != dummy.String() ||
		!rel.Get(`m\.thread.current_user_participated`).Bool() || rel.Get(`m\.replace.event_id`).Str != edit.String() ||
		rel.Get(`m\.reference.chunk.0.event_id`).Str != ref.String() {
		t.Errorf("the root's aggregations: %s", rel.Raw)
	}
	msgs := getJSON(ctx, t, bob, "v3/rooms/"+room.String()+"/messages?dir=b&limit=20", http.StatusOK)
	found := false
	for _, e := range msgs.Get("chunk").Array() {
		if e.Get("event_id").Str == root.String() {
			found = e.Get(`unsigned.m\.relations.m\.thread.count`).Int() == 2 && e.Get(`unsigned.m\.relations.m\.thread.current_user_participated`).Bool()
		}
	}
	if !found {
		t.Errorf("the root in /messages lacks its thread summary for bob, who replied: %s", msgs.Raw)
	}

	// A limited /sync timeline bundles them too.
	synced := getJSON(ctx, t, bob, "v3/sync?filter="+url.QueryEscape(`{"room":{"timeline":{"limit":10}}}`), http.StatusOK)
	tl := synced.Get("rooms.join." + strings.ReplaceAll(room.String(), ".", `\.`) + ".timeline")
	found = false
	for _, e := range tl.Get("events").Array() {
		if e.Get("event_id").Str == root.String() {
			found = e.Get(`unsigned.m\.relations.m\.thread.count`).Int() == 2 && e.Get(`unsigned.m\.relations.m\.replace.event_id`).Str == edit.String()
		}
	}
	if !tl.Get("limited").Bool() || !found {
		t.Errorf("the root in a limited sync timeline lacks its aggregations: %s", tl.Raw)
	}

	threads := func(c *mautrix.Client, query string) [][2]string {
		var out [][2]string
		for _, e := range getJSON(ctx, t, c, "v1/rooms/"+room.String()+"/threads"+query, http.StatusOK).Get("chunk").Array() {
			out = append(out, [2]string{e.Get("event_id").Str, e.Get(`unsigned.m\.relations.m\.thread.latest_event.event_id`).Str})
		}
		return out
	}
	if got := threads(alice, ""); !slices.Equal(got, [][2]string{{other.String(), otherReply.String()}, {root.String(), dummy.String()}}) {
		t.Errorf("threads: %v", got)
	}
	if got := threads(alice, "?include=participated"); !slices.Equal(got, [][2]string{{root.String(), dummy.String()}}) {
		t.Errorf("alice's threads: %v", got)
	}
	// A new reply moves its thread first.
	newer := send(alice, "m.room.message", relatesTo(root, "m.thread", textContent("later")))
	if got := threads(alice, "?limit=1"); !slices.Equal(got, [][2]string{{root.String(), newer.String()}}) {
		t.Errorf("threads after a reply: %v", got)
	}

	// A redacted relation is gone.
	if _, err := bob.RedactEvent(ctx, room, dummy); err != nil {
		t.Fatal(err)
	}
	if got := page(base + "/m.thread"); !slices.Equal(got, str(newer, reply)) {
		t.Errorf("after redacting a thread event: %v", got)
	}

	// Errors: a non-member, an unknown event, a bad direction.
	getJSON(ctx, t, carol, "v1/rooms/"+room.String()+"/relations/"+root.String(), http.StatusForbidden)
	getJSON(ctx, t, alice, "v1/rooms/"+room.String()+"/relations/$nosuchevent", http.StatusNotFound)
	getJSON(ctx, t, alice, base+"?dir=x", http.StatusBadRequest)
	getJSON(ctx, t, alice, "v1/rooms/"+room.String()+"/threads?include=mine", http.StatusBadRequest)
}

// TestEventContext: /context answers an event with the events around it (half before,
// newest first), tokens that /messages continues from, and the room's state; lazily
// loaded members give only the senders shown; an unknown event is 404.
func TestEventContext(t *testing.T) {
	ctx, _, hs := singleProcess(t)
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")
	carol := newUser(ctx, t, hs.url(), "carol")
	room := createRoomWith(ctx, t, alice, "private_chat", bob)
	var sent []string
	for i := range 9 {
		c := alice
		if i%2 == 1 {
			c = bob
		}
		res, err := c.SendText(ctx, room, "message")
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, res.EventID.String())
	}
	base := "v3/rooms/" + room.String() + "/context/" + sent[4]
	res := getJSON(ctx, t, alice, base+"?limit=4", http.StatusOK)
	if res.Get("event.event_id").Str != sent[4] || !slices.Equal(ids(res.Get("events_before")), []string{sent[3], sent[2]}) ||
		!slices.Equal(ids(res.Get("events_after")), []string{sent[5], sent[6]}) {
		t.Fatalf("context of the fifth message: %s", res.Raw)
	}
	types := map[string]bool{}
	for _, e := range res.Get("state").Array() {
		types[e.Get("type").Str] = true
	}
	if !types["m.room.create"] || !types["m.room.member"] || !types["m.room.power_levels"] {
		t.Errorf("state: %v", types)
	}
	after := getJSON(ctx, t, alice, "v3/rooms/"+room.String()+"/messages?dir=f&limit=5&from="+res.Get("end").Str, http.StatusOK)
	if got := ids(after.Get("chunk")); !slices.Equal(got, sent[7:]) {
		t.Errorf("/messages after the context's end: %v, want %v", got, sent[7:])
	}
	before := getJSON(ctx, t, alice, "v3/rooms/"+room.String()+"/messages?dir=b&limit=2&from="+res.Get("start").Str, http.StatusOK)
	if got := ids(before.Get("chunk")); !slices.Equal(got, []string{sent[1], sent[0]}) {
		t.Errorf("/messages before the context's start: %v", got)
	}
	lazy := getJSON(ctx, t, alice, base+`?limit=2&filter={"lazy_load_members":true,"types":["m.room.message"]}`, http.StatusOK)
	var members []string
	for _, e := range lazy.Get("state").Array() {
		members = append(members, e.Get("state_key").Str)
	}
	slices.Sort(members)
	if want := []string{alice.UserID.String(), bob.UserID.String()}; !slices.Equal(members, want) {
		t.Errorf("lazily loaded members: %v, want %v", members, want)
	}
	getJSON(ctx, t, alice, "v3/rooms/"+room.String()+"/context/$nosuchevent", http.StatusNotFound)
	getJSON(ctx, t, carol, base, http.StatusForbidden)
}

// ids are the event IDs of a list of events.
func ids(list gjson.Result) []string {
	var out []string
	for _, e := range list.Array() {
		out = append(out, e.Get("event_id").Str)
	}
	return out
}

// TestUnsignedMembership: events a user reads carry their membership just after each
// event (unsigned.membership) in /sync, /messages and /event: leave before they joined,
// join from their join, leave from their leave.
func TestUnsignedMembership(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	room := createRoomWith(ctx, t, alice, "public_chat")
	before, err := alice.SendText(ctx, room, "before bob")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	after, err := alice.SendText(ctx, room, "after bob joined")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{before.EventID.String(): "leave", after.EventID.String(): "join"}
	check := func(where string, list gjson.Result) {
		t.Helper()
		seen := 0
		for _, e := range list.Array() {
			if m, ok := want[e.Get("event_id").Str]; ok {
				seen++
				if got := e.Get("unsigned.membership").Str; got != m {
					t.Errorf("%s: %s has membership %q, want %q", where, e.Get("event_id").Str, got, m)
				}
			}
		}
		if seen != len(want) {
			t.Errorf("%s: %d of the %d events", where, seen, len(want))
		}
	}
	sync := getJSON(ctx, t, bob, `v3/sync?filter={"room":{"timeline":{"limit":20}}}`, http.StatusOK)
	check("initial /sync", sync.Get("rooms.join."+gjson.Escape(room.String())+".timeline.events"))
	check("/messages", getJSON(ctx, t, bob, "v3/rooms/"+room.String()+"/messages?dir=b&limit=20", http.StatusOK).Get("chunk"))
	if ev := getJSON(ctx, t, bob, "v3/rooms/"+room.String()+"/event/"+before.EventID.String(), http.StatusOK); ev.Get("unsigned.membership").Str != "leave" {
		t.Errorf("/event before the join: %s", ev.Raw)
	}
	// An incremental /sync of a room joined throughout.
	next := sync.Get("next_batch").Str
	later, err := alice.SendText(ctx, room, "later")
	if err != nil {
		t.Fatal(err)
	}
	inc := syncUntilEvent(ctx, t, bob, next, room, later.EventID)
	for _, e := range inc.Rooms.Join[room].Timeline.Events {
		if e.ID == later.EventID && e.Unsigned.Membership != "join" {
			t.Errorf("incremental /sync: membership %q", e.Unsigned.Membership)
		}
	}
}

// TestEmptyTimelineIsAList: a room whose timeline has no events in a /sync answer (a
// left room seen with a filter taking none of its events) still gets "events": [].
func TestEmptyTimelineIsAList(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	room := createRoomWith(ctx, t, alice, "public_chat", bob)
	if _, err := bob.LeaveRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	res := getJSON(ctx, t, bob, `v3/sync?filter={"room":{"include_leave":true,"timeline":{"limit":0}}}`, http.StatusOK)
	if tl := res.Get("rooms.leave." + gjson.Escape(room.String()) + ".timeline.events"); !tl.IsArray() {
		t.Errorf("the left room's timeline events: %s", res.Get("rooms.leave").Raw)
	}
}

// TestMembersBeforeTheRoom: /members at a token from before the room's first event (an
// initial sync's prev_batch reaching the create event) lists the members the room was
// created with, not later joiners and not nobody.
func TestMembersBeforeTheRoom(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	room := createRoomWith(ctx, t, alice, "public_chat")
	if _, err := alice.SendText(ctx, room, "hello"); err != nil {
		t.Fatal(err)
	}
	sync := getJSON(ctx, t, alice, "v3/sync", http.StatusOK)
	prev := sync.Get("rooms.join." + gjson.Escape(room.String()) + ".timeline.prev_batch").Str
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	var members []string
	for _, e := range getJSON(ctx, t, alice, "v3/rooms/"+room.String()+"/members?at="+prev, http.StatusOK).Get("chunk").Array() {
		members = append(members, e.Get("state_key").Str)
	}
	if !slices.Equal(members, []string{alice.UserID.String()}) {
		t.Errorf("members at %s: %v, want only alice", prev, members)
	}
}
