package e2e

import (
	"net/http"
	"strconv"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// Reports: a member reports an event they can see and anyone reports a room; events
// they cannot see, unknown rooms and bad bodies are refused with the spec's errors;
// server admins list the event reports and read one with its event.
func TestReports(t *testing.T) {
	ctx, _, hs, root := withAdmin(t, deploymentOptions{}, nil)
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")
	carol := newUser(ctx, t, hs.url(), "carol")
	room := createRoomWith(ctx, t, alice, "private_chat", bob)
	spam, err := sendText(ctx, alice, room, "r1", "buy now")
	if err != nil {
		t.Fatal(err)
	}
	// Alice's read of her message waits for its projection, so bob's report finds it.
	if _, err := alice.GetEvent(ctx, room, spam); err != nil {
		t.Fatal(err)
	}
	other := createRoomWith(ctx, t, alice, "public_chat")
	elsewhere, err := sendText(ctx, alice, other, "r2", "elsewhere")
	if err != nil {
		t.Fatal(err)
	}

	report := func(c *mautrix.Client, room id.RoomID, event id.EventID, body any) (int, string) {
		t.Helper()
		url := hs.url() + "/_matrix/client/v3/rooms/" + room.String() + "/report"
		if event != "" {
			url += "/" + event.String()
		}
		raw := []byte(body.(string))
		status, code, _ := rawRequest(ctx, t, http.MethodPost, url, c.AccessToken, raw)
		return status, code
	}
	for _, c := range []struct {
		what   string
		as     *mautrix.Client
		room   id.RoomID
		event  id.EventID
		body   string
		status int
		code   string
	}{
		{"bob reports alice's message", bob, room, spam, `{"reason":"spam","score":-100}`, http.StatusOK, ""},
		{"a report without a reason", bob, room, spam, `{}`, http.StatusOK, ""},
		{"carol reports an event of a room she is not in", carol, room, spam, `{"reason":"x"}`, http.StatusNotFound, "M_NOT_FOUND"},
		{"an event of another room", bob, room, elsewhere, `{"reason":"x"}`, http.StatusNotFound, "M_NOT_FOUND"},
		{"an unknown event", bob, room, "$nothing", `{"reason":"x"}`, http.StatusNotFound, "M_NOT_FOUND"},
		{"a score above 0", bob, room, spam, `{"reason":"x","score":5}`, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"a score that is no integer", bob, room, spam, `{"reason":"x","score":"low"}`, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"a reason that is no string", bob, room, spam, `{"reason":7}`, http.StatusBadRequest, "M_BAD_JSON"},
		{"a reason with NUL", bob, room, spam, `{"reason":"a\u0000b"}`, http.StatusBadRequest, "M_BAD_JSON"},
		{"carol reports the room", carol, room, "", `{"reason":"scam ring"}`, http.StatusOK, ""},
		{"a room report without a reason", carol, room, "", `{}`, http.StatusBadRequest, "M_BAD_JSON"},
		{"an unknown room", carol, id.RoomID("!nowhere:" + alice.UserID.Homeserver()), "", `{"reason":"x"}`, http.StatusNotFound, "M_NOT_FOUND"},
	} {
		if status, code := report(c.as, c.room, c.event, c.body); status != c.status || code != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.what, status, code, c.status, c.code)
		}
	}

	adminCall(ctx, t, hs, bob, "GET", "v1/event_reports", nil, http.StatusForbidden)
	list := adminCall(ctx, t, hs, root, "GET", "v1/event_reports", nil, http.StatusOK)
	if list.Get("total").Int() != 2 || len(list.Get("event_reports").Array()) != 2 {
		t.Fatalf("event reports: %s", list.Raw)
	}
	newest := list.Get("event_reports.0")
	if newest.Get("event_id").Str != spam.String() || newest.Get("user_id").Str != bob.UserID.String() ||
		newest.Get("sender").Str != alice.UserID.String() || newest.Get("room_id").Str != room.String() ||
		newest.Get("reason").Exists() && newest.Get("reason").Type.String() != "Null" {
		t.Errorf("the newest report: %s", newest.Raw)
	}
	page := adminCall(ctx, t, hs, root, "GET", "v1/event_reports?dir=f&limit=1", nil, http.StatusOK)
	first := page.Get("event_reports.0")
	if first.Get("reason").Str != "spam" || first.Get("score").Int() != -100 || page.Get("next_token").Int() != 1 {
		t.Errorf("the oldest report, alone on its page: %s", page.Raw)
	}
	if n := adminCall(ctx, t, hs, root, "GET", "v1/event_reports?user_id=carol", nil, http.StatusOK).Get("total").Int(); n != 0 {
		t.Errorf("carol's event reports: %d, want 0 (a room report is no event report)", n)
	}
	one := adminCall(ctx, t, hs, root, "GET", "v1/event_reports/"+strconv.FormatInt(first.Get("id").Int(), 10), nil, http.StatusOK)
	if one.Get("event_json.content.body").Str != "buy now" {
		t.Errorf("one report's details: %s", one.Raw)
	}
	adminCall(ctx, t, hs, root, "GET", "v1/event_reports/999999", nil, http.StatusNotFound)
	adminCall(ctx, t, hs, root, "GET", "v1/event_reports/x", nil, http.StatusBadRequest)
}
