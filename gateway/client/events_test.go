package client

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/ganglionhq/ganglion/persist/projtest"
)

// authedGet sends an authenticated GET and returns the answer and its body as sent.
func authedGet(t *testing.T, url, token string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp, raw
}

// rawGet sends an authenticated GET and returns the status and the body as sent.
func rawGet(t *testing.T, url, token string) (int, string) {
	t.Helper()
	resp, raw := authedGet(t, url, token)
	return resp.StatusCode, string(raw)
}

// TestEventsKeepHTMLCharacters: events go out with the characters they came in with,
// as every other response does: no \u003c for <, no \u0026 for &, wherever an event is
// shown (sync timelines and state, invite state, /state, one state event, /messages).
func TestEventsKeepHTMLCharacters(t *testing.T) {
	t.Parallel()
	srv := newSyncServer(t)
	const alice, bob = "@alice:" + testServerName, "@bob:" + testServerName
	aliceTok := newSyncTestUser(t, srv.db, alice, "ALICEDEV")
	bobTok := newSyncTestUser(t, srv.db, bob, "BOBDEV")
	room := &syncTestRoom{Room: projtest.NewRoom(t, "!html:"+testServerName, testServerName), t: t, db: srv.db}
	msg := projtest.Event{Label: "msg", Type: "m.room.message", Sender: alice, DeviceID: "ALICEDEV", TxnID: "<t>&",
		Content: map[string]any{"msgtype": "m.text", "body": "<b>&"}}
	room.project(1,
		projtest.State("create", "m.room.create", alice, map[string]any{"room_version": "11"}),
		projtest.Member("alice-join", alice, alice, "join"),
		projtest.State("name", "m.room.name", alice, map[string]any{"name": "<b>&"}),
		projtest.Member("bob-invite", bob, alice, "invite"),
		msg)
	srv.feed.set(1)

	roomURL := srv.url + "/_matrix/client/v3/rooms/" + url.PathEscape(room.ID)
	for _, tc := range []struct {
		what, url, token, want string
	}{
		{"sync", srv.url + "/_matrix/client/v3/sync", aliceTok, `"body":"<b>&"`},
		{"sync state", srv.url + "/_matrix/client/v3/sync", aliceTok, `"name":"<b>&"`},
		{"sync transaction id", srv.url + "/_matrix/client/v3/sync", aliceTok, `"transaction_id":"<t>&"`},
		{"invite state", srv.url + "/_matrix/client/v3/sync", bobTok, `"name":"<b>&"`},
		{"state", roomURL + "/state", aliceTok, `"name":"<b>&"`},
		{"state event", roomURL + "/state/m.room.name/?format=event", aliceTok, `"name":"<b>&"`},
		{"messages", roomURL + "/messages?dir=b", aliceTok, `"body":"<b>&"`},
	} {
		status, body := rawGet(t, tc.url, tc.token)
		if status != http.StatusOK || !strings.Contains(body, tc.want) || strings.Contains(body, `\u003c`) || strings.Contains(body, `\u0026`) {
			t.Errorf("%s: %d %.300s, want %s unescaped", tc.what, status, body, tc.want)
		}
	}
}
