package client

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/schemas"
)

// FuzzDecodeCreateRoom checks that any createRoom body either gets a Matrix client
// error or yields an intent the persister accepts as well-formed.
func FuzzDecodeCreateRoom(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"name":"n","topic":"t","preset":"public_chat","invite":["@b:h"]}`,
		`{"room_version":"10","creation_content":{"m.federate":false}}`,
		`{"initial_state":[{"type":"m.room.encryption","state_key":"","content":{"algorithm":"m.megolm.v1.aes-sha2"}}]}`,
		`{"power_level_content_override":{"users_default":10}}`, `{"name":5}`, `{"invite":"x"}`, `[]`, `{"room_version":"12"}`,
		`{"initial_state":[{"type":"","content":{}}]}`, `{"preset":"nope"}`,
	} {
		f.Add([]byte(s))
	}
	s := &Server{ServerName: testServerName}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/_matrix/client/v3/createRoom", strings.NewReader(string(body)))
		req, events, err := s.decodeCreateRoom(r, "@alice:"+testServerName, persist.Profile{})
		if err != nil {
			checkDecodeError(t, body, err)
			return
		}
		in := schemas.Intent{V: schemas.IntentVersion, Kind: schemas.KindCreateRoom, ID: "x", RoomID: "!r:h",
			Sender: "@alice:" + testServerName, CreateRoom: &schemas.CreateRoom{RoomVersion: req.RoomVersion, Events: events}}
		if err := in.Validate(); err != nil {
			t.Fatalf("body %q gave an invalid intent: %v", body, err)
		}
	})
}

// FuzzTokens checks the sync and pagination token parsers never panic and round-trip
// what they accept.
func FuzzTokens(f *testing.F) {
	for _, s := range []string{"s0", "s12", "s12_3_4", "s1_2_3_4_5_6_7_8", "s1_2_3_4_5_6_7_8_9", "s1__2", "s_", "t5_2", "t", "t1_", "x", "s-1", "t99999999999999999999_1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		if pos, err := parseSyncToken(tok); err == nil {
			if again, err := parseSyncToken(pos.String()); err != nil || again != pos {
				t.Fatalf("sync token %q: round trip gave %v, %v", tok, again, err)
			}
		}
		if p, err := parsePageToken(tok); err == nil && strings.HasPrefix(tok, "t") {
			if again, err := parsePageToken(formatPageToken(p)); err != nil || again != p {
				t.Fatalf("page token %q: round trip gave %+v, %v", tok, again, err)
			}
		}
	})
}

// FuzzParseSyncRequest feeds arbitrary query parameters to /sync's parser: it answers
// a Matrix client error or a request within its bounds, never a panic. Filter ids are
// left out: they are looked up in Postgres.
func FuzzParseSyncRequest(f *testing.F) {
	f.Add("s5", "30000", "false", `{"room":{"timeline":{"limit":50}}}`, "online")
	f.Add("", "", "", "", "")
	f.Add("x", "-1", "yes", `{"room":{"timeline":{"limit":"x"}}}`, "busy")
	f.Add("s1", "99999999999999999999", "true", `{"room":{"rooms":["!a:h"],"not_rooms":null,"include_leave":true}}`, "unavailable")
	f.Add("s1_2", "0", "", `{"presence":{"types":[],"senders":["@a:h"],"not_senders":"x"}}`, "offline")
	s := &Server{ServerName: testServerName}
	f.Fuzz(func(t *testing.T, since, timeout, fullState, filter, setPresence string) {
		if filter != "" && !strings.HasPrefix(filter, "{") {
			return
		}
		q := url.Values{"since": {since}, "timeout": {timeout}, "full_state": {fullState}, "filter": {filter}, "set_presence": {setPresence}}
		r := httptest.NewRequest(http.MethodGet, "/_matrix/client/v3/sync?"+q.Encode(), nil)
		req, err := s.parseSyncRequest(r.Context(), r, Device{UserID: "@a:" + testServerName})
		if err != nil {
			checkDecodeError(t, []byte(q.Encode()), err)
			return
		}
		if req.timeout < 0 || req.timeout > maxSyncTimeout {
			t.Fatalf("timeout %v out of bounds", req.timeout)
		}
		if l := req.filter.timelineLimit(); l < 0 || l > maxTimelineLimit {
			t.Fatalf("timeline limit %d out of bounds", l)
		}
		if !schemas.ValidPresence(req.setPresence) || setPresence != "" && req.setPresence != setPresence {
			t.Fatalf("set_presence %q parsed as %q", setPresence, req.setPresence)
		}
	})
}
