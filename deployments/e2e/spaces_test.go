package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// hierarchyPage is a page of GET /hierarchy.
type hierarchyPage struct {
	Rooms []struct {
		RoomID        id.RoomID `json:"room_id"`
		Name          string    `json:"name"`
		RoomType      string    `json:"room_type"`
		JoinRule      string    `json:"join_rule"`
		NumJoined     int       `json:"num_joined_members"`
		ChildrenState []struct {
			StateKey       id.RoomID `json:"state_key"`
			OriginServerTS int64     `json:"origin_server_ts"`
		} `json:"children_state"`
	} `json:"rooms"`
	NextBatch string `json:"next_batch"`
}

func (p hierarchyPage) ids() []id.RoomID {
	var out []id.RoomID
	for _, r := range p.Rooms {
		out = append(out, r.RoomID)
	}
	return out
}

// The space hierarchy: a depth-first walk in the spec's order of children (order
// strings, then age), bounded by max_depth and suggested_only, paged with next_batch,
// showing only the rooms the user may see and walking only into spaces.
func TestSpaceHierarchy(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	server := alice.UserID.Homeserver()
	space := func(c *mautrix.Client, name, preset string) id.RoomID {
		res, err := c.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: name, Preset: preset,
			CreationContent: map[string]any{"type": "m.space"}})
		if err != nil {
			t.Fatal(err)
		}
		return res.RoomID
	}
	room := func(c *mautrix.Client, name, preset string) id.RoomID {
		res, err := c.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: name, Preset: preset})
		if err != nil {
			t.Fatal(err)
		}
		return res.RoomID
	}
	link := func(parent, child id.RoomID, content map[string]any) {
		t.Helper()
		if content == nil {
			content = map[string]any{}
		}
		if _, ok := content["via"]; !ok {
			content["via"] = []string{server}
		}
		if _, err := alice.SendStateEvent(ctx, parent, event.NewEventType("m.space.child"), child.String(), content); err != nil {
			t.Fatal(err)
		}
		// Children without an order sort by age: no two links in one millisecond.
		time.Sleep(2 * time.Millisecond)
	}
	root := space(alice, "Root", "public_chat")
	lobby := room(alice, "Lobby", "public_chat")
	sub := space(alice, "Sub", "public_chat")
	deep := room(alice, "Deep", "public_chat")
	secret := room(alice, "Secret", "private_chat")
	hidden := space(alice, "Hidden", "private_chat")
	behind := room(alice, "Behind", "public_chat")
	first := room(alice, "First", "public_chat")
	orphan := room(alice, "Orphan", "public_chat")

	link(root, lobby, map[string]any{"suggested": true})
	link(root, sub, nil)
	link(root, secret, nil)
	link(root, hidden, nil)
	link(root, first, map[string]any{"order": "a", "suggested": true}) // sorts before those without an order
	link(root, orphan, map[string]any{"via": []string{}})              // no via: no link
	link(sub, deep, nil)
	link(hidden, behind, nil)
	link(lobby, behind, nil) // a room that is not a space: not walked
	link(sub, root, nil)     // a cycle

	get := func(c *mautrix.Client, room id.RoomID, q url.Values) (hierarchyPage, int, string) {
		t.Helper()
		u := base + "/_matrix/client/v1/rooms/" + url.PathEscape(room.String()) + "/hierarchy?" + q.Encode()
		status, code, body := rawRequest(ctx, t, http.MethodGet, u, c.AccessToken, nil)
		var page hierarchyPage
		if status == http.StatusOK {
			if err := json.Unmarshal([]byte(body), &page); err != nil {
				t.Fatal(err)
			}
		}
		return page, status, code
	}

	// Alice's read waits for her own writes, so bob's after it see them all.
	if page, _, _ := get(alice, root, nil); !slices.Equal(page.ids(), []id.RoomID{root, first, lobby, sub, deep, secret, hidden, behind}) {
		t.Errorf("alice's whole hierarchy: %v", page.ids())
	}
	page, status, _ := get(bob, root, nil)
	if want := []id.RoomID{root, first, lobby, sub, deep}; status != http.StatusOK || !slices.Equal(page.ids(), want) {
		t.Errorf("bob's whole hierarchy: %d %v, want %v", status, page.ids(), want)
	}
	if status == http.StatusOK {
		r := page.Rooms[0]
		var kids []id.RoomID
		for _, c := range r.ChildrenState {
			kids = append(kids, c.StateKey)
		}
		if want := []id.RoomID{first, lobby, sub, secret, hidden}; r.Name != "Root" || r.RoomType != "m.space" || r.JoinRule != "public" ||
			r.NumJoined != 1 || !slices.Equal(kids, want) {
			t.Errorf("the root's entry: %+v, children %v, want %v", r, kids, want)
		}
		if len(page.Rooms) > 1 && page.Rooms[1].ChildrenState == nil {
			t.Error("a room's children_state is missing, want []")
		}
	}
	// An invite makes a room visible (alice's read of it waits for its projection).
	if _, err := alice.InviteUser(ctx, secret, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.JoinedMembers(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if page, _, _ := get(bob, root, url.Values{"max_depth": {"1"}}); !slices.Equal(page.ids(), []id.RoomID{root, first, lobby, sub, secret}) {
		t.Errorf("bob's hierarchy to depth 1 once invited to Secret: %v", page.ids())
	}
	if page, _, _ := get(bob, root, url.Values{"suggested_only": {"true"}}); !slices.Equal(page.ids(), []id.RoomID{root, first, lobby}) {
		t.Errorf("suggested only: %v", page.ids())
	}
	if page, _, _ := get(bob, root, url.Values{"max_depth": {"0"}}); !slices.Equal(page.ids(), []id.RoomID{root}) {
		t.Errorf("depth 0: %v", page.ids())
	}

	// Pages of two, and a token only for the walk it came from.
	var paged []id.RoomID
	q := url.Values{"limit": {"2"}}
	for range 5 {
		page, status, code := get(bob, root, q)
		if status != http.StatusOK {
			t.Fatalf("a page: %d %s", status, code)
		}
		paged = append(paged, page.ids()...)
		if page.NextBatch == "" {
			break
		}
		if _, status, code := get(bob, root, url.Values{"from": {page.NextBatch}, "max_depth": {"1"}}); status != http.StatusBadRequest || code != "M_INVALID_PARAM" {
			t.Errorf("a token with another max_depth: %d %s", status, code)
		}
		q.Set("from", page.NextBatch)
	}
	if want := []id.RoomID{root, first, lobby, sub, deep, secret}; !slices.Equal(paged, want) {
		t.Errorf("paged: %v, want %v", paged, want)
	}

	for _, c := range []struct {
		what   string
		room   id.RoomID
		q      url.Values
		status int
		code   string
	}{
		{"a root bob may not see", hidden, nil, http.StatusForbidden, "M_FORBIDDEN"},
		{"an unknown root", id.RoomID("!nowhere:" + server), nil, http.StatusForbidden, "M_FORBIDDEN"},
		{"a limit of 0", root, url.Values{"limit": {"0"}}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"a negative max_depth", root, url.Values{"max_depth": {"-1"}}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"a made-up token", root, url.Values{"from": {"h000000000000_3"}}, http.StatusBadRequest, "M_INVALID_PARAM"},
	} {
		if _, status, code := get(bob, c.room, c.q); status != c.status || code != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.what, status, code, c.status, c.code)
		}
	}
}
