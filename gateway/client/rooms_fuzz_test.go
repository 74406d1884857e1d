package client

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

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
		req, events, err := s.decodeCreateRoom(r, "@alice:"+testServerName)
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
	for _, s := range []string{"s0", "s12", "s12_3_4", "t5_2", "t", "t1_", "x", "s-1", "t99999999999999999999_1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		if seq, err := parseSyncToken(tok); err == nil {
			if again, err := parseSyncToken(formatSyncToken(seq)); err != nil || again != seq {
				t.Fatalf("sync token %q: round trip gave %d, %v", tok, again, err)
			}
		}
		if p, err := parsePageToken(tok); err == nil && strings.HasPrefix(tok, "t") {
			if again, err := parsePageToken(formatPageToken(p)); err != nil || again != p {
				t.Fatalf("page token %q: round trip gave %+v, %v", tok, again, err)
			}
		}
	})
}
