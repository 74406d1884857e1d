package schemas

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func ptr(s string) *string { return &s }

// The expected strings were produced by Python:
// json.JSONEncoder(separators=(",", ":")).encode(row), i.e. what Synapse emits.
func TestRowEncodingMatchesPython(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		row  any
		want string
	}{
		{"message", EventRow{EventID: "$e1", RoomID: "!r:example.com", Type: "m.room.message"},
			`["ev",["$e1","!r:example.com","m.room.message",null,null,null,null,false,false]]`},
		{"member outlier", EventRow{EventID: "$m1", RoomID: "!r:example.com", Type: "m.room.member",
			StateKey: ptr("@u:example.com"), Membership: ptr("join"), Outlier: true},
			`["ev",["$m1","!r:example.com","m.room.member","@u:example.com",null,null,"join",false,true]]`},
		{"rejected redaction", EventRow{EventID: "$r2", RoomID: "!r:ex.com", Type: "m.room.redaction",
			Redacts: ptr("$x"), Rejected: true},
			`["ev",["$r2","!r:ex.com","m.room.redaction",null,"$x",null,null,true,false]]`},
		{"non-ascii and html", EventRow{EventID: "$é", RoomID: "!rüm:例え.jp", Type: "m.room.message",
			RelatesTo: ptr(`$t"h<r>&`)},
			`["ev",["$\u00e9","!r\u00fcm:\u4f8b\u3048.jp","m.room.message",null,null,"$t\"h<r>&",null,false,false]]`},
		{"state", StateRow{RoomID: "!r:example.com", Type: "m.room.member", StateKey: "@u:example.com", EventID: ptr("$m1")},
			`["state",["!r:example.com","m.room.member","@u:example.com","$m1"]]`},
		{"state removed", StateRow{RoomID: "!r:example.com", Type: "m.room.topic"},
			`["state",["!r:example.com","m.room.topic","",null]]`},
		{"astral and controls", StateRow{RoomID: "!r:🐙.org", Type: "a\tb\n\x00\x1f\x7f\u2028", StateKey: "😀"},
			`["state",["!r:\ud83d\udc19.org","a\tb\n\u0000\u001f\u007f\u2028","\ud83d\ude00",null]]`},
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

func TestRowRoundTrip(t *testing.T) {
	t.Parallel()
	roundTrip(t, "event row", EventRow{EventID: "$m1", RoomID: "!r:例え.jp", Type: "m.room.member",
		StateKey: ptr("@ü:x"), Membership: ptr("leave"), Rejected: true})
	roundTrip(t, "state row", StateRow{RoomID: "!r:x", Type: "m.room.name", StateKey: "", EventID: nil})
}

// roundTrip checks that v decodes from its own JSON to an equal value.
func roundTrip[T any](t *testing.T, what string, v T) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var back T
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, v) {
		t.Errorf("%s round trip: got %+v want %+v", what, back, v)
	}
}

func TestRowDecodingRejectsWrongShape(t *testing.T) {
	t.Parallel()
	bad := []string{
		`["ev",["$e","!r","t",null,null,null,null,false]]`,           // 8 fields (pre-1.64 arity)
		`["ev",["$e","!r","t",null,null,null,null,false,false,1]]`,   // 10 fields
		`["state",["!r","t","k",null]]`,                              // wrong type id
		`["ev",{"event_id":"$e"}]`,                                   // not an array
		`["ev",[1,"!r","t",null,null,null,null,false,false]]`,        // wrong field type
		`["ev",["$e","!r","t",null,null,null,null,false,false],"x"]`, // extra element
		`{}`,
	}
	for _, s := range bad {
		var r EventRow
		if err := json.Unmarshal([]byte(s), &r); err == nil {
			t.Errorf("EventRow accepted %s", s)
		}
	}
	var s StateRow
	if err := json.Unmarshal([]byte(`["state",["!r","t",null]]`), &s); err == nil {
		t.Error("StateRow accepted 3 fields")
	}
}

func TestFormatCommands(t *testing.T) {
	t.Parallel()
	ev := EventRow{EventID: "$e1", RoomID: "!r:example.com", Type: "m.room.message"}
	got, err := FormatRDATA(StreamEvents, "event_persister1", 1234, false, ev)
	if err != nil {
		t.Fatal(err)
	}
	want := `RDATA events event_persister1 1234 ["ev",["$e1","!r:example.com","m.room.message",null,null,null,null,false,false]]`
	if got != want {
		t.Errorf("RDATA:\n got %s\nwant %s", got, want)
	}
	got, err = FormatRDATA(StreamEvents, "event_persister1", 1235, true,
		EventRow{EventID: "$m1", RoomID: "!r:example.com", Type: "m.room.member",
			StateKey: ptr("@u:example.com"), Membership: ptr("join")})
	if err != nil {
		t.Fatal(err)
	}
	want = `RDATA events event_persister1 batch ["ev",["$m1","!r:example.com","m.room.member","@u:example.com",null,null,"join",false,false]]`
	if got != want {
		t.Errorf("RDATA batch:\n got %s\nwant %s", got, want)
	}
	got, err = FormatPosition(StreamEvents, "master", 12, 15)
	if err != nil {
		t.Fatal(err)
	}
	if got != "POSITION events master 12 15" {
		t.Errorf("POSITION: got %q", got)
	}
	if ReplicateCommand != "REPLICATE " {
		t.Errorf("REPLICATE: got %q", ReplicateCommand)
	}
	for _, name := range []string{"", "a b", "a\nb"} {
		if _, err := FormatPosition(name, "master", 1, 1); !errors.Is(err, ErrBadCommand) {
			t.Errorf("FormatPosition accepted stream %q", name)
		}
		if _, err := FormatRDATA(StreamEvents, name, 1, false, ev); !errors.Is(err, ErrBadCommand) {
			t.Errorf("FormatRDATA accepted instance %q", name)
		}
	}
}

func TestParseCommand(t *testing.T) {
	t.Parallel()
	cases := []struct {
		msg, name, payload string
		ok                 bool
	}{
		{"REPLICATE ", CmdReplicate, "", true},
		{"REPLICATE", CmdReplicate, "", true},
		{"POSITION events master 1 2", CmdPosition, "events master 1 2", true},
		{`RDATA events m 3 ["ev", [1]]`, CmdRDATA, `events m 3 ["ev", [1]]`, true},
		{"USER_SYNC abcde @u:x DEV start 1", CmdUserSync, "abcde @u:x DEV start 1", true},
		{"", "", "", false},
		{"  \t", "", "", false},
		{"PING 123", "", "", false},
		{" RDATA events", "", "", false},
		{"rdata events m 1 []", "", "", false},
		{"RDATA \xff", "", "", false},
	}
	for _, c := range cases {
		name, payload, err := ParseCommand(c.msg)
		if (err == nil) != c.ok {
			t.Errorf("ParseCommand(%q) err = %v, want ok=%v", c.msg, err, c.ok)
			continue
		}
		if name != c.name || payload != c.payload {
			t.Errorf("ParseCommand(%q) = %q, %q; want %q, %q", c.msg, name, payload, c.name, c.payload)
		}
	}
}

func TestParseRDATAAndPosition(t *testing.T) {
	t.Parallel()
	d, err := ParseRDATA(`events event_persister1 batch ["ev", ["$m1", "!r:x"]]`)
	if err != nil {
		t.Fatal(err)
	}
	if d.Stream != "events" || d.Instance != "event_persister1" || !d.Batch ||
		string(d.Row) != `["ev", ["$m1", "!r:x"]]` {
		t.Errorf("RDATA batch parsed as %+v", d)
	}
	d, err = ParseRDATA(`typing master 7 ["!r:x",["@a:x"]]`)
	if err != nil {
		t.Fatal(err)
	}
	if d.Batch || d.Token != 7 {
		t.Errorf("RDATA token parsed as %+v", d)
	}
	for _, bad := range []string{
		"events m 1", "events m x []", "events m 1 [", "events m 1 NaN", " m 1 []",
	} {
		if _, err := ParseRDATA(bad); err == nil {
			t.Errorf("ParseRDATA accepted %q", bad)
		}
	}
	p, err := ParsePosition("events master -5 10")
	if err != nil {
		t.Fatal(err)
	}
	if p != (Position{Stream: "events", Instance: "master", Prev: -5, New: 10}) {
		t.Errorf("POSITION parsed as %+v", p)
	}
	for _, bad := range []string{"events master 1", "events master 1 2 3", "events master a 2", "events  1 2"} {
		if _, err := ParsePosition(bad); err == nil {
			t.Errorf("ParsePosition accepted %q", bad)
		}
	}
}

// FuzzParseCommand feeds arbitrary Redis messages through the parsers that face
// the network: they must never panic, and whatever they accept must survive a
// format/parse round trip.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		"REPLICATE ",
		"POSITION events master 1 2",
		`RDATA events event_persister1 batch ["ev",["$m1","!r:x","m.room.member","@u:x",null,null,"join",false,false]]`,
		`RDATA events p 5 ["state",["!r:x","m.room.name","",null]]`,
		"USER_SYNC abcde @u:x None end 17",
		"",
		"RDATA \xff\xfe",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg string) {
		name, payload, err := ParseCommand(msg)
		if err != nil {
			return
		}
		if !utf8.ValidString(payload) || strings.Contains(name, " ") {
			t.Fatalf("ParseCommand(%q) = %q, %q", msg, name, payload)
		}
		switch name {
		case CmdPosition:
			p, err := ParsePosition(payload)
			if err != nil {
				return
			}
			line, err := FormatPosition(p.Stream, p.Instance, p.Prev, p.New)
			if err != nil {
				t.Fatalf("accepted POSITION %q does not format: %v", payload, err)
			}
			_, again, _ := ParseCommand(line)
			if p2, err := ParsePosition(again); err != nil || p2 != p {
				t.Fatalf("POSITION round trip: %+v -> %q -> %+v, %v", p, line, p2, err)
			}
		case CmdRDATA:
			d, err := ParseRDATA(payload)
			if err != nil {
				return
			}
			var row any
			if err := json.Unmarshal(d.Row, &row); err != nil {
				return // valid JSON Go cannot hold, e.g. 1e400
			}
			line, err := FormatRDATA(d.Stream, d.Instance, d.Token, d.Batch, row)
			if err != nil {
				t.Fatalf("accepted RDATA %q does not format: %v", payload, err)
			}
			_, again, _ := ParseCommand(line)
			d2, err := ParseRDATA(again)
			if err != nil || d2.Stream != d.Stream || d2.Instance != d.Instance ||
				d2.Batch != d.Batch || d2.Token != d.Token {
				t.Fatalf("RDATA round trip: %+v -> %q -> %+v, %v", d, line, d2, err)
			}
			for _, c := range []byte(d2.Row) {
				if c > 0x7e || c < 0x20 {
					t.Fatalf("formatted RDATA row has byte %q: %s", c, d2.Row)
				}
			}
			var row2 any
			if err := json.Unmarshal(d2.Row, &row2); err != nil || !reflect.DeepEqual(row, row2) {
				t.Fatalf("RDATA row changed: %s -> %s", d.Row, d2.Row)
			}
			if d.Row[0] == '[' {
				// Typed events rows must either decode or fail, never panic.
				var ev EventRow
				_ = json.Unmarshal(d.Row, &ev)
				var st StateRow
				_ = json.Unmarshal(d.Row, &st)
			}
		}
	})
}
