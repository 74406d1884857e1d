package schemas

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeIntent feeds arbitrary bytes to the intent decoder, which reads what any
// process on the bus published: it must never panic, and what it accepts must be valid
// and survive a round trip.
func FuzzDecodeIntent(f *testing.F) {
	f.Add([]byte(`{"v":1,"kind":"client_event","id":"x","room_id":"!r:h","sender":"@a:h","event":{"type":"m.room.message","content":{}}}`))
	f.Add([]byte(`{"v":1,"kind":"create_room","id":"x","room_id":"!r:h","sender":"@a:h","create_room":{"room_version":"11","events":[{"type":"m.room.create","state_key":"","content":{}}]}}`))
	f.Add([]byte(`{"v":1,"kind":"remote_event","id":"x","room_id":"!r:h","remote":{"origin":"h","pdu":{}}}`))
	f.Add([]byte(`{"v":2}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := DecodeIntent(data)
		if err != nil {
			return
		}
		if err := in.Validate(); err != nil {
			t.Fatalf("decoded an invalid intent: %v", err)
		}
		again, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeIntent(again); err != nil {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// FuzzDecodeLogBatch does the same for EVENTS log messages.
func FuzzDecodeLogBatch(f *testing.F) {
	f.Add([]byte(`{"v":1,"room_id":"!r:h","room_version":"11","writer":"w","events":[{"event_id":"$e","json":{}}]}`))
	f.Add([]byte(`{"v":1,"room_id":"!r:h","room_version":"11","events":[]}`))
	f.Add([]byte(`{"v":1,"room_id":"!r:h","room_version":"11","writer":"w","purged":true}`))
	f.Add([]byte(`{"v":1,"room_id":"!r:h","room_version":"11","writer":"w","purged":true,"events":[{"event_id":"$e","json":{}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeLogBatch(data)
		if err != nil {
			return
		}
		// A batch has events, or is a purge and has none.
		if b.RoomID == "" || (len(b.Events) == 0) != b.Purged {
			t.Fatalf("decoded an incomplete batch: %+v", b)
		}
	})
}
