package persister

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/ganglionhq/ganglion/schemas"
)

// TestSignerBuild builds a room's first events and a redaction in rooms of versions 5
// (the library's builder), 9, 10 and 11 (eventbuild): eventbuild's events are those the
// library builds from the same input, and bad content is refused as before.
func TestSignerBuild(t *testing.T) {
	t.Parallel()
	_, key, _ := ed25519.GenerateKey(nil)
	s := newSigner("test", "ed25519:t", key)
	now := time.UnixMilli(1700000000000)
	for _, version := range []string{"5", "9", "10", "11"} {
		r := &room{id: "!r" + version + ":test", version: gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(version)), state: authState{}}
		create := map[string]string{"room_version": version}
		if version != "11" {
			create["creator"] = alice
		}
		events := []schemas.ProtoEvent{
			state("m.room.create", "", create),
			state("m.room.member", alice, map[string]string{"membership": "join", "displayname": "Alice <A>"}),
			state("m.room.power_levels", "", map[string]any{"users": map[string]int{alice: 100}, "redact": 50}),
			{Type: "m.room.message", Content: json.RawMessage(`{ "msgtype": "m.text", "body": "h\u00e9llo \ud83d\ude00" }`)},
			{Type: "m.room.redaction", Content: json.RawMessage(`{"reason":"oops"}`)},
		}
		for i := range events {
			pe := &events[i]
			if pe.Type == "m.room.redaction" {
				pe.Redacts = r.lastEventID
			}
			prev := []string{}
			if r.lastEventID != "" {
				prev = []string{r.lastEventID}
			}
			pdu, err := s.build(r, alice, pe, now)
			if err != nil {
				t.Fatalf("v%s %s: %v", version, pe.Type, err)
			}
			if pe.Type == "m.room.redaction" && version == "11" {
				// The library's builder would put redacts at the top level.
				if !bytes.Contains(pdu.Content(), []byte(`"redacts":"`+pe.Redacts+`"`)) {
					t.Fatalf("v11 redaction without content.redacts: %s", pdu.JSON())
				}
			} else {
				lib, err := s.buildWithLibrary(r, alice, pe, prev, pdu.AuthEventIDs(), now)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(pdu.JSON(), lib.JSON()) || pdu.EventID() != lib.EventID() {
					t.Fatalf("v%s %s: built\n%s %s\nthe library builds\n%s %s", version, pe.Type, pdu.JSON(), pdu.EventID(), lib.JSON(), lib.EventID())
				}
			}
			r.apply(pdu, r.checkpoint())
		}
		for _, c := range []struct {
			content string
			status  int
			code    string
		}{
			{`{"body":}`, 400, "M_BAD_JSON"},
			{`[]`, 400, "M_BAD_JSON"},
			{`{"body":"` + strings.Repeat("x", 70000) + `"}`, 413, "M_TOO_LARGE"},
		} {
			_, err := s.build(r, alice, &schemas.ProtoEvent{Type: "m.room.message", Content: json.RawMessage(c.content)}, now)
			var ref *refusal
			if !errors.As(err, &ref) || ref.Status != c.status || ref.Code != c.code {
				t.Errorf("v%s %.20s: %v, want %d %s", version, c.content, err, c.status, c.code)
			}
		}
	}
}
