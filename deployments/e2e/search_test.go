package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// searchAs posts a room_events search as c and returns the room_events result.
func searchAs(ctx context.Context, t *testing.T, c *mautrix.Client, criteria map[string]any, nextBatch string, want int) gjson.Result {
	t.Helper()
	raw, _ := json.Marshal(map[string]any{"search_categories": map[string]any{"room_events": criteria}})
	url := c.HomeserverURL.String() + "/_matrix/client/v3/search"
	if nextBatch != "" {
		url += "?next_batch=" + nextBatch
	}
	status, code, text := rawRequest(ctx, t, http.MethodPost, url, c.AccessToken, raw)
	if status != want {
		t.Fatalf("search %v: %d %s %s", criteria, status, code, text)
	}
	return gjson.Get(text, "search_categories.room_events")
}

func resultIDs(res gjson.Result) []string {
	var out []string
	for _, r := range res.Get("results").Array() {
		out = append(out, r.Get("result.event_id").Str)
	}
	return out
}

// TestSearch: full-text search finds messages (with English stemming), room names and
// topics of the rooms the user is in and may read, ranked or newest first, pages with
// next_batch, gives context, profiles, groups and state, and leaves out redacted
// events and other users' rooms.
func TestSearch(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	carol := newUser(ctx, t, base, "carol")
	shared := createRoomWith(ctx, t, alice, "private_chat", bob)
	own, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Secret Garden", Topic: "roses and foxgloves"})
	if err != nil {
		t.Fatal(err)
	}
	others := createRoomWith(ctx, t, carol, "private_chat")
	say := func(c *mautrix.Client, room id.RoomID, body string) string {
		t.Helper()
		res, err := c.SendText(ctx, room, body)
		if err != nil {
			t.Fatal(err)
		}
		return res.EventID.String()
	}
	hello := say(bob, shared, "hello world")
	foxes := say(alice, shared, "the quick brown foxes jump")
	helloOwn := say(alice, own.RoomID, "hello there")
	say(carol, others, "hello from a room alice is not in")
	redacted := say(alice, shared, "hello redacted")
	if _, err := alice.RedactEvent(ctx, shared, id.EventID(redacted)); err != nil {
		t.Fatal(err)
	}
	var numbered []string
	for i := range 12 {
		numbered = append(numbered, say(alice, shared, fmt.Sprintf("Message number %d", i)))
	}

	res := searchAs(ctx, t, alice, map[string]any{"search_term": "hello"}, "", http.StatusOK)
	if got := resultIDs(res); res.Get("count").Int() != 2 || !slices.Contains(got, hello) || !slices.Contains(got, helloOwn) || len(got) != 2 {
		t.Errorf("hello: %s", res.Raw)
	}
	if got := resultIDs(searchAs(ctx, t, alice, map[string]any{"search_term": "fox"}, "", http.StatusOK)); !slices.Equal(got, []string{foxes}) {
		t.Errorf("fox (stemmed to foxes): %v", got)
	}
	if got := resultIDs(searchAs(ctx, t, bob, map[string]any{"search_term": "hello"}, "", http.StatusOK)); !slices.Equal(got, []string{hello}) {
		t.Errorf("bob's hello, only his room: %v", got)
	}
	named := searchAs(ctx, t, alice, map[string]any{"search_term": "garden", "keys": []string{"content.name"}}, "", http.StatusOK)
	if named.Get("count").Int() != 1 || named.Get("results.0.result.type").Str != "m.room.name" {
		t.Errorf("a room name: %s", named.Raw)
	}
	if searchAs(ctx, t, alice, map[string]any{"search_term": "garden", "keys": []string{"content.body"}}, "", http.StatusOK).Get("count").Int() != 0 {
		t.Error("a name found in bodies")
	}

	// Newest first, in pages of five.
	var pages []string
	next := ""
	for range 4 {
		page := searchAs(ctx, t, alice, map[string]any{"search_term": "message number", "order_by": "recent",
			"filter": map[string]any{"limit": 5, "rooms": []string{shared.String()}}}, next, http.StatusOK)
		pages = append(pages, resultIDs(page)...)
		next = page.Get("next_batch").Str
		if next == "" {
			break
		}
	}
	want := slices.Clone(numbered)
	slices.Reverse(want)
	if !slices.Equal(pages, want) || next != "" {
		t.Errorf("recent pages: %v, want %v (next %q)", pages, want, next)
	}

	ctxRes := searchAs(ctx, t, alice, map[string]any{"search_term": "number 5", "order_by": "recent",
		"event_context": map[string]any{"before_limit": 2, "after_limit": 1, "include_profile": true},
		"groupings":     map[string]any{"group_by": []map[string]string{{"key": "room_id"}}}, "include_state": true}, "", http.StatusOK)
	r0 := ctxRes.Get("results.0")
	if r0.Get("result.event_id").Str != numbered[5] || !slices.Equal(ids(r0.Get("context.events_before")), []string{numbered[4], numbered[3]}) ||
		!slices.Equal(ids(r0.Get("context.events_after")), []string{numbered[6]}) ||
		r0.Get("context.profile_info."+gjson.Escape(alice.UserID.String())+".displayname").Str != alice.UserID.Localpart() {
		t.Errorf("context: %s", r0.Raw)
	}
	if ctxRes.Get("groups.room_id."+gjson.Escape(shared.String())+".results.0").Str != numbered[5] ||
		!ctxRes.Get("state."+gjson.Escape(shared.String())).IsArray() {
		t.Errorf("groups and state: %s", ctxRes.Raw)
	}

	searchAs(ctx, t, alice, map[string]any{"search_term": ""}, "", http.StatusBadRequest)
	searchAs(ctx, t, alice, map[string]any{"search_term": "x", "order_by": "oldest"}, "", http.StatusBadRequest)
	searchAs(ctx, t, alice, map[string]any{"search_term": "x", "keys": []string{"content.url"}}, "", http.StatusBadRequest)
}
