package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// receiptOf returns the receipt of user on ev of type typ in an m.receipt content.
func receiptOf(content map[string]any, ev id.EventID, typ string, user id.UserID) (map[string]any, bool) {
	byType, _ := content[ev.String()].(map[string]any)
	byUser, _ := byType[typ].(map[string]any)
	r, ok := byUser[user.String()].(map[string]any)
	return r, ok
}

func hasReceipt(ev id.EventID, typ string, user id.UserID, thread string) func(map[string]any) bool {
	return func(c map[string]any) bool {
		r, ok := receiptOf(c, ev, typ, user)
		got, _ := r["thread_id"].(string)
		ts, _ := r["ts"].(float64)
		return ok && got == thread && ts > 0
	}
}

// fullyReadOf returns the m.fully_read event of room in c's room account data.
func fullyReadOf(ctx context.Context, t *testing.T, c *mautrix.Client, room id.RoomID) string {
	t.Helper()
	var content struct {
		EventID string `json:"event_id"`
	}
	if err := c.GetRoomAccountData(ctx, room, "m.fully_read", &content); err != nil {
		t.Fatalf("m.fully_read of %s: %v", room, err)
	}
	return content.EventID
}

// TestReceipts: receipts and read markers between two users in a room. Public
// receipts reach the other member's /sync (incremental, initial, a woken long-poll),
// private ones only their owner's; a receipt never moves back; the read marker is the
// room's m.fully_read account data. Every refusal has the spec's status and errcode.
func TestReceipts(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	eve := newUser(ctx, t, base, "eve")
	room := createRoomWith(ctx, t, alice, "private_chat", bob)
	other := createRoomWith(ctx, t, eve, "private_chat")
	m1, err := sendText(ctx, alice, room, "m1", "first")
	if err != nil {
		t.Fatal(err)
	}
	m2, err := sendText(ctx, alice, room, "m2", "second")
	if err != nil {
		t.Fatal(err)
	}
	elsewhere, err := sendText(ctx, eve, other, "o1", "elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	aliceSince, err := syncUntilJoined(ctx, alice, []id.RoomID{room})
	if err != nil {
		t.Fatal(err)
	}
	bobSince, err := syncUntilJoined(ctx, bob, []id.RoomID{room})
	if err != nil {
		t.Fatal(err)
	}

	// Alice's long-poll wakes for bob's read receipt.
	done := longPoll(ctx, t, alice, 30000, aliceSince, noPresence, false, event.PresenceOnline)
	time.Sleep(300 * time.Millisecond)
	if err := bob.SendReceipt(ctx, room, m2, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r == nil {
		t.FailNow()
	}
	if content, ok := ephemeral(r, room, "m.receipt"); !ok || !hasReceipt(m2, "m.read", bob.UserID, "")(content) {
		t.Fatalf("long-poll woken by a receipt: %v", r.Rooms.Join[room])
	}
	aliceSince = r.NextBatch

	// A private receipt reaches bob only; a threaded one carries its thread.
	if err := bob.SendReceipt(ctx, room, m2, event.ReceiptTypeReadPrivate, nil); err != nil {
		t.Fatal(err)
	}
	if err := bob.SendReceipt(ctx, room, m2, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: "main"}); err != nil {
		t.Fatal(err)
	}
	content, aliceSince := syncForEphemeral(ctx, t, alice, aliceSince, room, "m.receipt", hasReceipt(m2, "m.read", bob.UserID, "main"))
	if _, ok := receiptOf(content, m2, "m.read.private", bob.UserID); ok {
		t.Errorf("alice sees bob's private receipt: %v", content)
	}
	_, bobSince = syncForEphemeral(ctx, t, bob, bobSince, room, "m.receipt", hasReceipt(m2, "m.read.private", bob.UserID, ""))

	// A reply in a thread takes receipts of its thread, not of the main timeline.
	reply, err := alice.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "in thread",
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": m1}})
	if err != nil {
		t.Fatal(err)
	}
	err = bob.SendReceipt(ctx, room, reply.EventID, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: "main"})
	wantError(t, "a receipt of a thread's reply for the main timeline", err, http.StatusBadRequest, "M_INVALID_PARAM")
	if err := bob.SendReceipt(ctx, room, reply.EventID, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: m1.String()}); err != nil {
		t.Fatal(err)
	}
	_, aliceSince = syncForEphemeral(ctx, t, alice, aliceSince, room, "m.receipt", hasReceipt(reply.EventID, "m.read", bob.UserID, m1.String()))

	// A receipt for an earlier event is ignored, as Synapse ignores it.
	if err := bob.SendReceipt(ctx, room, m1, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	if r, err = alice.SyncRequest(ctx, 1000, aliceSince, "", false, event.PresenceOnline); err != nil {
		t.Fatal(err)
	}
	if content, ok := ephemeral(r, room, "m.receipt"); ok {
		t.Errorf("a receipt moving back reached alice: %v", content)
	}

	// An initial sync has every current receipt, the private one to its owner only.
	for _, c := range []*mautrix.Client{alice, bob} {
		r, err := c.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		content, _ := ephemeral(r, room, "m.receipt")
		_, private := receiptOf(content, m2, "m.read.private", bob.UserID)
		if !hasReceipt(m2, "m.read", bob.UserID, "main")(content) || private != (c == bob) {
			t.Errorf("%s's initial sync: receipts %v", c.UserID, content)
		}
		if _, ok := receiptOf(content, m1, "m.read", bob.UserID); ok {
			t.Errorf("%s's initial sync has the receipt that moved back: %v", c.UserID, content)
		}
	}

	// The read marker, through the receipt endpoint and through read_markers; it never
	// moves back either.
	if err := bob.SendReceipt(ctx, room, m1, "m.fully_read", nil); err != nil {
		t.Fatal(err)
	}
	if got := fullyReadOf(ctx, t, bob, room); got != m1.String() {
		t.Errorf("m.fully_read after the receipt endpoint: %s, want %s", got, m1)
	}
	if err := bob.SetReadMarkers(ctx, room, &mautrix.ReqSetReadMarkers{FullyRead: m2, Read: m2, ReadPrivate: m2}); err != nil {
		t.Fatal(err)
	}
	if got := fullyReadOf(ctx, t, bob, room); got != m2.String() {
		t.Errorf("m.fully_read after read_markers: %s, want %s", got, m2)
	}
	if err := bob.SetReadMarkers(ctx, room, &mautrix.ReqSetReadMarkers{FullyRead: m1}); err != nil {
		t.Fatal(err)
	}
	if got := fullyReadOf(ctx, t, bob, room); got != m2.String() {
		t.Errorf("m.fully_read moved back to %s", got)
	}
	// It reaches bob's /sync as room account data, never as a receipt.
	bobSync := func(r *mautrix.RespSync) (string, bool) {
		jr := r.Rooms.Join[room]
		if jr == nil {
			return "", false
		}
		for _, ev := range jr.AccountData.Events {
			if ev.Type.Type == "m.fully_read" {
				id, _ := ev.Content.Raw["event_id"].(string)
				return id, true
			}
		}
		return "", false
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := bob.SyncRequest(ctx, 5000, bobSince, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		bobSince = r.NextBatch
		content, _ := ephemeral(r, room, "m.receipt")
		for _, byType := range content {
			if _, ok := byType.(map[string]any)["m.fully_read"]; ok {
				t.Errorf("m.fully_read as a receipt: %v", content)
			}
		}
		if got, ok := bobSync(r); ok {
			if got != m2.String() {
				t.Errorf("m.fully_read in bob's sync: %s", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("m.fully_read never reached bob's sync")
		}
	}

	// Errors of the receipt endpoint.
	receiptURL := func(room id.RoomID, typ string, ev id.EventID) string {
		return bob.BuildClientURL("v3", "rooms", room, "receipt", typ, ev)
	}
	for _, c := range []struct {
		what   string
		by     *mautrix.Client
		url    string
		body   any
		status int
		code   string
	}{
		{"unknown receipt type", bob, receiptURL(room, "m.seen", m2), struct{}{}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"not an event ID", bob, receiptURL(room, "m.read", "m2"), struct{}{}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"a bad room ID", bob, receiptURL("room", "m.read", m2), struct{}{}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"an unknown event", bob, receiptURL(room, "m.read", "$unknown"), struct{}{}, http.StatusNotFound, "M_NOT_FOUND"},
		{"an event of another room", bob, receiptURL(room, "m.read", elsewhere), struct{}{}, http.StatusNotFound, "M_NOT_FOUND"},
		{"not a member", eve, receiptURL(room, "m.read", m2), struct{}{}, http.StatusForbidden, "M_FORBIDDEN"},
		{"an empty thread", bob, receiptURL(room, "m.read", m2), map[string]any{"thread_id": ""}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"a thread that is not a string", bob, receiptURL(room, "m.read", m2), map[string]any{"thread_id": 5}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"a thread with m.fully_read", bob, receiptURL(room, "m.fully_read", m2), map[string]any{"thread_id": "main"}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"an event outside the thread", bob, receiptURL(room, "m.read", m2), map[string]any{"thread_id": m1}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"a body that is not an object", bob, receiptURL(room, "m.read", m2), []string{}, http.StatusBadRequest, "M_BAD_JSON"},
	} {
		_, err := c.by.MakeRequest(ctx, http.MethodPost, c.url, c.body, nil)
		wantError(t, "receipt with "+c.what, err, c.status, c.code)
	}
	roomPath := base + "/_matrix/client/v3/rooms/" + url.PathEscape(room.String())
	for _, c := range []struct {
		what, path, body string
		status           int
		code             string
	}{
		{"receipt not JSON", "/receipt/m.read/" + url.PathEscape(m2.String()), `{`, http.StatusBadRequest, "M_NOT_JSON"},
		{"receipt too large", "/receipt/m.read/" + url.PathEscape(m2.String()), `{"x":"` + strings.Repeat("a", 9000) + `"}`, http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
		{"read_markers not JSON", "/read_markers", `{`, http.StatusBadRequest, "M_NOT_JSON"},
		{"read_markers too large", "/read_markers", `{"x":"` + strings.Repeat("a", 9000) + `"}`, http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
		{"read_markers not an object", "/read_markers", `["$x"]`, http.StatusBadRequest, "M_BAD_JSON"},
		{"a marker that is not a string", "/read_markers", `{"m.read":5}`, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"a marker that is not an event ID", "/read_markers", `{"m.fully_read":"m2"}`, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"a marker on an unknown event", "/read_markers", `{"m.read":"$unknown"}`, http.StatusNotFound, "M_NOT_FOUND"},
	} {
		status, code, body := rawRequest(ctx, t, http.MethodPost, roomPath+c.path, bob.AccessToken, []byte(c.body))
		if status != c.status || code != c.code {
			t.Errorf("%s: %d %s (%s), want %d %s", c.what, status, code, body, c.status, c.code)
		}
	}
	err = eve.SetReadMarkers(ctx, room, &mautrix.ReqSetReadMarkers{Read: m2})
	wantError(t, "read_markers of a room one is not in", err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = bob.MakeRequest(ctx, http.MethodPost, bob.BuildClientURL("v3", "rooms", "room", "read_markers"), map[string]any{}, nil)
	wantError(t, "read_markers of a bad room ID", err, http.StatusBadRequest, "M_INVALID_PARAM")
	// Unknown keys and empty markers are ignored, as Synapse ignores them.
	if _, err := bob.MakeRequest(ctx, http.MethodPost, bob.BuildClientURL("v3", "rooms", room, "read_markers"),
		map[string]any{"m.read": "", "org.example.marker": "$x"}, nil); err != nil {
		t.Errorf("read_markers with nothing known: %v", err)
	}

	// None of the refusals reached alice.
	if r, err = alice.SyncRequest(ctx, 1000, aliceSince, "", false, event.PresenceOnline); err != nil {
		t.Fatal(err)
	}
	if content, ok := ephemeral(r, room, "m.receipt"); ok {
		for ev := range content {
			if ev != m2.String() {
				t.Errorf("a refused receipt reached alice: %v", content)
			}
		}
	}
}

// checkReceiptsAcross: a receipt sent through one gateway reaches the other user's
// /sync on theirs; a private one does not.
func checkReceiptsAcross(ctx context.Context, t *testing.T, c streamClients) {
	ev, err := sendText(ctx, c.alice, c.room, "receipt"+randomLetters(8), "read me")
	if err != nil {
		t.Fatal(err)
	}
	first, err := c.alice.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	other := at(c.bob, c.alice.HomeserverURL.String())
	if err := other.SendReceipt(ctx, c.room, ev, event.ReceiptTypeReadPrivate, nil); err != nil {
		t.Fatal(err)
	}
	if err := other.SendReceipt(ctx, c.room, ev, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	syncUntil(ctx, t, c.alice, first.NextBatch, "a receipt sent through the other gateway", func(r *mautrix.RespSync) bool {
		content, _ := ephemeral(r, c.room, "m.receipt")
		if _, private := receiptOf(content, ev, "m.read.private", c.bob.UserID); private {
			t.Errorf("bob's private receipt reached alice: %v", content)
		}
		return hasReceipt(ev, "m.read", c.bob.UserID, "")(content)
	})
}

// receiptsRedisCheck sends a read receipt; Synapse's receipts row is [room_id,
// receipt_type, user_id, event_id, thread_id|null, data].
var receiptsRedisCheck = redisStreamCheck{
	stream: "receipts",
	act: func(ctx context.Context, t *testing.T, alice, _ *mautrix.Client, room id.RoomID) {
		ev, err := sendText(ctx, alice, room, "redis-receipt", "read me")
		if err != nil {
			t.Fatal(err)
		}
		if err := alice.SendReceipt(ctx, room, ev, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
	},
	row: func(f []json.RawMessage, alice, _ *mautrix.Client, room id.RoomID) (bool, error) {
		var roomID, typ, user, ev string
		var thread *string
		var data struct {
			TS int64 `json:"ts"`
		}
		if len(f) != 6 || json.Unmarshal(f[0], &roomID) != nil || json.Unmarshal(f[1], &typ) != nil || json.Unmarshal(f[2], &user) != nil ||
			json.Unmarshal(f[3], &ev) != nil || json.Unmarshal(f[4], &thread) != nil || json.Unmarshal(f[5], &data) != nil || data.TS == 0 {
			return false, errors.New("want [room_id, receipt_type, user_id, event_id, thread_id|null, {ts}]")
		}
		return roomID == room.String() && typ == "m.read" && user == alice.UserID.String() && strings.HasPrefix(ev, "$") && thread == nil, nil
	},
}
