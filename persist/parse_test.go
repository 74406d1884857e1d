package persist

import (
	"reflect"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/ganglionhq/ganglion/schemas"
)

// TestDecodeMatchesTheLibrary: the fields replay reads from an event's JSON are those
// the protocol library's parse gives, for every kind of event the projections read,
// and for content keys that mean nothing outside their event type.
func TestDecodeMatchesTheLibrary(t *testing.T) {
	base := `"room_id":"!r:x","sender":"@a:x","depth":7,"origin_server_ts":1700000000123,"prev_events":[],"auth_events":[],"hashes":{"sha256":"x"},"signatures":{}`
	cases := []struct{ version, json string }{
		{"10", `{"type":"m.room.member","state_key":"@a:x","content":{"membership":"join","displayname":"A \u00e9"},` + base + `}`},
		{"11", `{"type":"m.room.member","state_key":"@b:x","content":{"membership":"leave","reason":"r"},` + base + `}`},
		{"11", `{"type":"m.room.member","state_key":"@b:x","content":{"membership":5},` + base + `}`},
		{"10", `{"type":"m.room.redaction","redacts":"$t:x","content":{"reason":"r"},` + base + `}`},
		{"11", `{"type":"m.room.redaction","content":{"redacts":"$t"},` + base + `}`},
		{"11", `{"type":"m.room.redaction","content":{},` + base + `}`},
		{"11", `{"type":"m.room.name","state_key":"","content":{"name":"n"},` + base + `}`},
		{"11", `{"type":"m.room.message","content":{"membership":"join","redacts":{"a":1},"body":"b"},` + base + `}`},
		{"12", `{"type":"m.room.message","content":{},` + base + `}`},
	}
	for i, c := range cases {
		le := schemas.LoggedEvent{EventID: "$e", JSON: []byte(c.json)}
		b := BatchAt{Seq: 3, Batch: &schemas.LogBatch{RoomID: "!r:x", RoomVersion: c.version, Events: []schemas.LoggedEvent{le}}}
		fast, err := parseBatch(b)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		impl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(c.version))
		pdu, err := impl.NewEventFromTrustedJSONWithEventID(le.EventID, le.JSON, false)
		if err != nil {
			t.Fatalf("case %d: the library refuses it: %v", i, err)
		}
		b.PDUs = []gomatrixserverlib.PDU{pdu}
		lib, err := parseBatch(b)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if !reflect.DeepEqual(fast, lib) {
			t.Errorf("case %d: decoded %+v, the library's %+v", i, fast[0], lib[0])
		}
	}
}
