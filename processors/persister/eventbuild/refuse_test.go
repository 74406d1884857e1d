package eventbuild

import (
	"errors"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
)

// TestRefusals lists the content gomatrixserverlib builds into an event although the
// spec and Synapse refuse it, and which Build refuses.
func TestRefusals(t *testing.T) {
	k := newTestKey("example.org", "ed25519:a1", 1)
	for _, c := range []struct{ name, content, library string }{
		{"zero with a fraction", `{"a":0.0}`, `{"a":0.0}`},
		{"minus zero with a fraction", `{"a":-0.0}`, `{"a":0.0}`},
		{"exponent E", `{"a":1E2}`, `{"a":1E2}`},
		{"zero with an exponent", `{"a":0e5}`, `{"a":0e5}`},
		{"fraction by a negative exponent", `{"a":5E-1}`, `{"a":5E-1}`},
		{"lone high surrogate", `{"a":"x\ud800"}`, `{"a":"x"}`},
		{"low surrogate first", `{"a":"\udc00\ud800"}`, "{\"a\":\"\ufffd\"}"},
		{"high surrogate before another escape", `{"a":"\ud800\u0041"}`, "{\"a\":\"\ufffd\"}"},
		{"duplicate key", `{"a":1,"a":2}`, `{"a":1,"a":2}`},
		{"duplicate key once decoded", `{"a":{"b":1,"\u0062":2}}`, `{"a":{"b":1,"b":2}}`},
		{"key with an escaped backslash", `{"a\\nb":1}`, `{"a\nb":1}`},
		{"key with two escaped backslashes", `{"a\\\\b":1}`, `{"a\\b":1}`},
		{"invalid UTF-8 in a value", "{\"a\":\"\xff\"}", "{\"a\":\"\xff\"}"},
		{"invalid UTF-8 in a key", "{\"\xc3\":1}", "{\"\xc3\":1}"},
		{"UTF-8 of a surrogate", "{\"a\":\"\xed\xa0\x80\"}", "{\"a\":\"\xed\xa0\x80\"}"},
		{"null content", `null`, `null`},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := benchEvent()
			e.Content = []byte(c.content)
			lib, err := k.libraryBuild(e)
			if err != nil {
				t.Fatalf("the library refuses it too: %v", err)
			}
			if !strings.Contains(string(lib.JSON()), `"content":`+c.library+`,`) {
				t.Errorf("the library wrote %s, not content %s", lib.JSON(), c.library)
			}
			if _, _, err := k.signer.Build(e); !errors.Is(err, ErrBadJSON) {
				t.Fatalf("Build: %v, want ErrBadJSON", err)
			}
		})
	}
}

// TestRefusedByBoth lists what both refuse, and checks the kind of refusal matches
// (too large or not).
func TestRefusedByBoth(t *testing.T) {
	k := newTestKey("example.org", "ed25519:a1", 1)
	long := strings.Repeat("x", 256)
	wide := strings.Repeat("é", 128) // 128 code points, 256 bytes
	for _, c := range []struct {
		name string
		edit func(e *Event)
		want error
	}{
		{"minus zero", func(e *Event) { e.Content = []byte(`{"a":-0}`) }, ErrBadJSON},
		{"fraction", func(e *Event) { e.Content = []byte(`{"a":1.5}`) }, ErrBadJSON},
		{"exponent e", func(e *Event) { e.Content = []byte(`{"a":1e2}`) }, ErrBadJSON},
		{"above 2^53-1", func(e *Event) { e.Content = []byte(`{"a":9007199254740992}`) }, ErrBadJSON},
		{"below -(2^53-1)", func(e *Event) { e.Content = []byte(`{"a":[-9007199254740992]}`) }, ErrBadJSON},
		{"17 digits", func(e *Event) { e.Content = []byte(`{"a":10000000000000000}`) }, ErrBadJSON},
		{"leading zero", func(e *Event) { e.Content = []byte(`{"a":01}`) }, ErrBadJSON},
		{"key with a quote", func(e *Event) { e.Content = []byte(`{"a\"b":1}`) }, ErrBadJSON},
		{"key with a control character", func(e *Event) { e.Content = []byte(`{"\u0001":1}`) }, ErrBadJSON},
		{"raw control character", func(e *Event) { e.Content = []byte("{\"a\":\"\x01\"}") }, ErrBadJSON},
		{"array content", func(e *Event) { e.Content = []byte(`[]`) }, ErrBadJSON},
		{"no content", func(e *Event) { e.Content = nil }, ErrBadJSON},
		{"trailing data", func(e *Event) { e.Content = []byte(`{} {}`) }, ErrBadJSON},
		{"byte order mark", func(e *Event) { e.Content = []byte("\ufeff{}") }, ErrBadJSON},
		{"nested 10,000 deep", func(e *Event) {
			e.Content = []byte(`{"a":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `}`)
		}, ErrBadJSON},
		{"event over 64 KiB", func(e *Event) { e.Content = []byte(`{"body":"` + strings.Repeat("x", 65536) + `"}`) }, ErrTooLarge},
		{"type of 256 bytes", func(e *Event) { e.Type = long }, ErrTooLarge},
		{"type of 256 bytes in 128 code points", func(e *Event) { e.Type = wide }, ErrTooLarge},
		{"state key of 256 code points", func(e *Event) { s := long; e.StateKey = &s }, ErrTooLarge},
		{"state key of 256 bytes once not UTF-8 is U+FFFD", func(e *Event) { s := strings.Repeat("\xff", 86); e.StateKey = &s }, ErrTooLarge},
		{"sender without a server name", func(e *Event) { e.Sender = "@alice" }, ErrInvalid},
		{"sender without @", func(e *Event) { e.Sender = "alice:example.org" }, ErrInvalid},
		{"sender of 256 bytes", func(e *Event) { e.Sender = "@" + long[:250] + ":a.org" }, ErrTooLarge},
		{"room ID without !", func(e *Event) { e.RoomID = "#a:example.org" }, ErrInvalid},
		{"room ID without a server name", func(e *Event) { e.RoomID = "!abc" }, ErrInvalid},
		{"version 12 room ID without !", func(e *Event) { e.RoomVersion, e.RoomID = "12", "abc" }, ErrInvalid},
		{"version 12 create event with a room ID", func(e *Event) {
			s := ""
			e.RoomVersion, e.Type, e.StateKey = "12", "m.room.create", &s
		}, ErrInvalid},
		{"version 12 create event with a state key", func(e *Event) {
			s := "x"
			e.RoomVersion, e.Type, e.StateKey, e.RoomID = "12", "m.room.create", &s, ""
		}, ErrInvalid},
		{"depth above 2^53-1", func(e *Event) { e.Depth = 1 << 53 }, ErrInvalid},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := benchEvent()
			c.edit(e)
			_, _, err := k.signer.Build(e)
			if !errors.Is(err, c.want) {
				t.Fatalf("Build: %v, want %v", err, c.want)
			}
			_, libErr := k.libraryBuild(e)
			if libErr == nil {
				t.Fatal("the library builds it")
			}
			var ve gomatrixserverlib.EventValidationError
			libTooLarge := errors.As(libErr, &ve) && ve.Code == gomatrixserverlib.EventValidationTooLarge
			if libTooLarge != errors.Is(err, ErrTooLarge) {
				t.Fatalf("ours %v, library %v", err, libErr)
			}
		})
	}
	e := benchEvent()
	e.RoomVersion = "5"
	if _, _, err := k.signer.Build(e); !errors.Is(err, ErrInvalid) {
		t.Fatalf("room version 5: %v", err)
	}
}
