package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// rawRequest sends a request a client library would refuse to build, and returns the
// status, the errcode and the body of the answer.
func rawRequest(ctx context.Context, t *testing.T, method, url, token string, body []byte) (int, string, string) {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var e struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.Unmarshal(data, &e)
	return resp.StatusCode, e.ErrCode, string(data)
}

// Acceptance 5: malformed requests get the spec's errors, and none of them reaches the
// bus: no intent is published, no event is appended or stored. The requests go to a
// gateway worker, whose intents travel over the bus to the writer in the main process
// (a gateway beside its writer hands intents over in memory).
func TestBadInput(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{externalNATS: true})
	d.startMain()
	hs := d.launchWorker("gateway1", true)
	hs.waitReady()
	alice := newUser(ctx, t, hs.url(), "alice")
	room := createRoomWith(ctx, t, alice, "")
	token := alice.AccessToken
	api := hs.url() + "/_matrix/client/v3"
	roomPath := api + "/rooms/" + url.PathEscape(room.String())

	topo := d.topology()
	bus := func() [3]uint64 {
		var stored uint64
		d.query(ctx, func(conn *pgx.Conn) error {
			return conn.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&stored)
		})
		return [3]uint64{d.lastSeq(ctx, topo.IntentsStream()), d.lastSeq(ctx, topo.EventsStream()), stored}
	}
	// A read waits until the room's creation, answered at its append, is projected.
	if _, err := alice.JoinedRooms(ctx); err != nil {
		t.Fatal(err)
	}
	before := bus()

	big := func(n int) []byte {
		prefix := `{"msgtype":"m.text","body":"`
		return []byte(prefix + strings.Repeat("x", n-len(prefix)-2) + `"}`)
	}
	invites := func(n int) []byte {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("@%d:%s", i, d.serverName)
		}
		return []byte(`{"invite":["` + strings.Join(ids, `","`) + `"]}`)
	}
	for _, tc := range []struct {
		what, method, url, token string
		body                     []byte
		status                   int
		code                     string
	}{
		{"truncated JSON", "PUT", roomPath + "/send/m.room.message/b1", token, []byte(`{"msgtype":"m.text","body":`), 400, "M_NOT_JSON"},
		{"not JSON at all", "PUT", roomPath + "/state/m.room.topic/", token, []byte(`topic=hello`), 400, "M_NOT_JSON"},
		{"invalid UTF-8", "PUT", roomPath + "/send/m.room.message/b2", token, []byte("{\"body\":\"\xff\"}"), 400, "M_NOT_JSON"},
		{"empty body", "PUT", roomPath + "/send/m.room.message/b3", token, []byte{}, 400, "M_NOT_JSON"},
		{"createRoom name is a number", "POST", api + "/createRoom", token, []byte(`{"name":5}`), 400, "M_BAD_JSON"},
		{"invite user_id is a number", "POST", roomPath + "/invite", token, []byte(`{"user_id":5}`), 400, "M_BAD_JSON"},
		{"content is an array", "PUT", roomPath + "/send/m.room.message/b4", token, []byte(`[1,2]`), 400, "M_BAD_JSON"},
		{"state content is a string", "PUT", roomPath + "/state/m.room.topic/", token, []byte(`"hello"`), 400, "M_BAD_JSON"},
		{"body of 65537 bytes", "PUT", roomPath + "/send/m.room.message/b5", token, big(65537), 413, "M_TOO_LARGE"},
		{"body of 1 MiB", "PUT", roomPath + "/send/m.room.message/b6", token, big(1 << 20), 413, "M_TOO_LARGE"},
		{"no token", "PUT", roomPath + "/send/m.room.message/b7", "", []byte(`{"body":"x"}`), 401, "M_MISSING_TOKEN"},
		{"unknown token", "PUT", roomPath + "/send/m.room.message/b8", "syt_not_a_token", []byte(`{"body":"x"}`), 401, "M_UNKNOWN_TOKEN"},
		{"unknown token as query parameter", "PUT", roomPath + "/send/m.room.message/b9?access_token=syt_not_a_token", "", []byte(`{"body":"x"}`), 401, "M_UNKNOWN_TOKEN"},
		{"NUL in the transaction id", "PUT", roomPath + "/send/m.room.message/b%00x", token, []byte(`{"body":"x"}`), 400, "M_INVALID_PARAM"},
		{"NUL in the event type", "PUT", roomPath + "/send/m.room%00.message/b10", token, []byte(`{"body":"x"}`), 400, "M_INVALID_PARAM"},
		// Strings Postgres cannot store are refused where the request is decoded: in a
		// path or query with M_INVALID_PARAM, in a body with M_BAD_JSON.
		{"NUL in an initial_state type", "POST", api + "/createRoom", token, []byte(`{"initial_state":[{"type":"a\u0000b","content":{}}]}`), 400, "M_BAD_JSON"},
		{"NUL in the room id of /messages", "GET", api + "/rooms/!a%00b:" + d.serverName + "/messages?dir=b", token, nil, 400, "M_INVALID_PARAM"},
		{"invalid UTF-8 in the room id of /messages", "GET", api + "/rooms/!a%FFb:" + d.serverName + "/messages?dir=b", token, nil, 400, "M_INVALID_PARAM"},
		{"NUL in the room id of /state", "GET", api + "/rooms/!a%00b:" + d.serverName + "/state", token, nil, 400, "M_INVALID_PARAM"},
		{"invalid UTF-8 in the room id of /state", "GET", api + "/rooms/!a%FFb:" + d.serverName + "/state", token, nil, 400, "M_INVALID_PARAM"},
		{"NUL in an alias (GET)", "GET", api + "/directory/room/%23a%00b:" + d.serverName, "", nil, 400, "M_INVALID_PARAM"},
		{"NUL in an alias (PUT)", "PUT", api + "/directory/room/%23a%00b:" + d.serverName, token, []byte(`{"room_id":"` + room.String() + `"}`), 400, "M_INVALID_PARAM"},
		{"NUL in room_alias_name", "POST", api + "/createRoom", token, []byte(`{"room_alias_name":"a\u0000b"}`), 400, "M_BAD_JSON"},
		{"NUL in a display name", "PUT", api + "/profile/" + alice.UserID.String() + "/displayname", token, []byte(`{"displayname":"a\u0000b"}`), 400, "M_BAD_JSON"},
		{"NUL in a filter", "POST", api + "/user/" + alice.UserID.String() + "/filter", token, []byte(`{"room":{"rooms":["!a\u0000:x"]}}`), 400, "M_BAD_JSON"},
		{"NUL in an inline sync filter", "GET", api + "/sync?filter=" + url.QueryEscape(`{"room":{"rooms":["!a\u0000:x"]}}`), token, nil, 400, "M_BAD_JSON"},
		{"a lone surrogate in a message", "PUT", roomPath + "/send/m.room.message/b11", token, []byte(`{"msgtype":"m.text","body":"sur\ud800x"}`), 400, "M_BAD_JSON"},
		{"JSON nested 9,990 levels", "PUT", roomPath + "/send/m.room.message/b12", token, []byte(`{"body":` + strings.Repeat("[", 9989) + strings.Repeat("]", 9989) + `}`), 400, "M_BAD_JSON"},
		{"createRoom with 101 invites", "POST", api + "/createRoom", token, invites(101), 400, "M_INVALID_PARAM"},
		{"createRoom with a 64 KB body of 2,300 invites", "POST", api + "/createRoom", token, invites(2300), 400, "M_INVALID_PARAM"},
		{"createRoom with 101 initial_state events", "POST", api + "/createRoom", token, []byte(`{"initial_state":[` + strings.Repeat(`{"type":"m.custom","content":{}},`, 100) + `{"type":"m.custom","content":{}}]}`), 400, "M_INVALID_PARAM"},
		{"unknown endpoint", "GET", api + "/no/such/endpoint", token, nil, 404, "M_UNRECOGNIZED"},
		{"unknown endpoint without a token", "POST", hs.url() + "/_matrix/client/v9/createRoom", "", []byte(`{}`), 404, "M_UNRECOGNIZED"},
	} {
		status, code, body := rawRequest(ctx, t, tc.method, tc.url, tc.token, tc.body)
		if status != tc.status || code != tc.code {
			t.Errorf("%s: got %d %s (%.200s), want %d %s", tc.what, status, code, body, tc.status, tc.code)
		}
	}
	if after := bus(); after != before {
		t.Errorf("bad requests reached the bus: (intents seq, events seq, stored events) went from %v to %v", before, after)
	}

	// The whole event, not only the request body, is bounded by 65536 bytes: content
	// just under the limit makes an event over it once the server adds its fields.
	status, code, body := rawRequest(ctx, t, "PUT", roomPath+"/send/m.room.message/b10", token, big(65500))
	if status != 413 || code != "M_TOO_LARGE" {
		t.Errorf("an event of more than 65536 bytes: got %d %s (%.200s), want 413 M_TOO_LARGE", status, code, body)
	}
	after := bus()
	if after[1] != before[1] || after[2] != before[2] {
		t.Errorf("an event over 65536 bytes was stored: (intents seq, events seq, stored events) went from %v to %v", before, after)
	}

	// The measure itself works: a good request moves every counter (Postgres's a moment
	// after the answer, which comes at the log append).
	if _, err := sendText(ctx, alice, room, "good", "fine"); err != nil {
		t.Fatalf("a valid send: %v", err)
	}
	good := bus()
	for deadline := time.Now().Add(10 * time.Second); good[2] <= after[2] && time.Now().Before(deadline); good = bus() {
		time.Sleep(20 * time.Millisecond)
	}
	if good[0] <= after[0] || good[1] <= after[1] || good[2] <= after[2] {
		t.Errorf("a valid send moved (intents seq, events seq, stored events) from %v to %v only", after, good)
	}
}
