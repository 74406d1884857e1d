package schemas

import "testing"

// The typing and receipts rows as Synapse encodes them (json.JSONEncoder with compact
// separators, ASCII only).
func TestTypingAndReceiptRows(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		row  any
		want string
	}{
		{"typing", TypingRow{Room: "!r:example.com", Users: []string{"@a:example.com", "@ü:example.com"}},
			`["!r:example.com",["@a:example.com","@\u00fc:example.com"]]`},
		{"nobody typing", TypingRow{Room: "!r:example.com"}, `["!r:example.com",[]]`},
		{"unthreaded receipt", ReceiptRow{Room: "!r:x", Type: ReceiptRead, User: "@a:x", EventID: "$e", TS: 1700000000000},
			`["!r:x","m.read","@a:x","$e",null,{"ts":1700000000000}]`},
		{"threaded private receipt", ReceiptRow{Room: "!r:x", Type: ReceiptReadPrivate, User: "@a:x", EventID: "$e", Thread: "main", TS: 5},
			`["!r:x","m.read.private","@a:x","$e","main",{"ts":5}]`},
	}
	for _, c := range cases {
		got, err := EncodeJSON(c.row)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if string(got) != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
	}
}

// FuzzDecodeEphemeralRecords feeds arbitrary bytes to the typing and receipt record
// decoders, which read what any process on the bus published: they never panic, and
// what they accept names a room (and a user and an event for a receipt).
func FuzzDecodeEphemeralRecords(f *testing.F) {
	f.Add([]byte(`{"v":1,"room":"!r:h","users":["@a:h"]}`))
	f.Add([]byte(`{"v":1,"room":"!r:h","type":"m.read","user":"@a:h","event_id":"$e","event_seq":3,"event_idx":1,"ts":5}`))
	f.Add([]byte(`{"v":2,"room":"!r:h"}`))
	f.Add([]byte(`{"v":1,"room":"!r:h","users":["x"]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if r, err := DecodeTyping(data); err == nil && (r.Room == "" || r.Users == nil) {
			t.Fatalf("typing record %+v", r)
		}
		if r, err := DecodeReceipt(data); err == nil && (r.Room == "" || r.User == "" || r.EventID == "") {
			t.Fatalf("receipt record %+v", r)
		}
	})
}
