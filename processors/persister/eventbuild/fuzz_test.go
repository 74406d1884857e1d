package eventbuild

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib"
)

// FuzzBuild builds arbitrary content, types and state keys both ways: whatever Build
// builds, the library builds identically; whatever the library builds, Build builds
// identically unless the library's event is not what the spec allows (see specValid).
func FuzzBuild(f *testing.F) {
	for _, c := range []string{
		`{}`, `{"msgtype":"m.text","body":"hi"}`, `{"b":1,"a":[1,2,{"d":null,"c":true}]}`,
		`{"a":"\u00e9\ud83d\ude00\n\t\"\\\/\u0001\u001F\u007f\u2028<>&"}`, `{"a":-9007199254740991,"b":9007199254740991}`,
		`{"membership":"join","join_authorised_via_users_server":"@a:b","displayname":"x"}`,
		`{"a":0.0}`, `{"a":-0.0}`, `{"a":1E2}`, `{"a":-0}`, `{"a":"\ud800"}`, `{"a":1,"a":2}`, `{"a\\nb":1}`,
		"{\"a\":\"\xff\"}", `null`, `[]`, ` { "a" : [ ] } `, `{"a":{"b":{"c":{}}}}`, `{"é":1,"e":2,"z":3,"":4}`,
		`{"redacts":"$x","reason":"r"}`, `{"room_version":"11","creator":"@a:b","m.federate":false}`,
	} {
		for _, typ := range []string{"m.room.message", "m.room.member", "m.room.create", "m.room.power_levels", "m.room.redaction", "\xff<t>"} {
			f.Add([]byte(c), typ, "", typ != "m.room.message", uint8(len(c)+len(typ)))
		}
	}
	k := newTestKey("example.org", "ed25519:a1", 1)
	f.Fuzz(func(t *testing.T, content []byte, typ, stateKey string, state bool, version uint8) {
		e := &Event{
			RoomVersion: []string{"6", "7", "8", "9", "10", "11", "12"}[version%7],
			RoomID:      "!room:example.org",
			Sender:      "@alice:example.org",
			Type:        typ,
			Content:     content,
			PrevEvents:  []string{"$prev"},
			AuthEvents:  []string{"$auth"},
			Depth:       7,
			Time:        time.UnixMilli(1700000000000),
		}
		if state {
			e.StateKey = &stateKey
			if e.RoomVersion == "12" && typ == "m.room.create" {
				e.RoomID = ""
			}
		}
		js, id, err := k.signer.Build(e)
		lib, libErr := k.libraryBuild(e)
		switch {
		case err == nil && libErr != nil:
			t.Fatalf("the library refuses what Build builds: %v\n%s", libErr, js)
		case err == nil:
			if !bytes.Equal(js, lib.JSON()) || id != lib.EventID() {
				t.Fatalf("different events\nours    %s %s\nlibrary %s %s", js, id, lib.JSON(), lib.EventID())
			}
		case libErr == nil:
			if problem := specValid(content, lib.JSON()); problem == "" {
				t.Fatalf("Build refuses (%v) a spec-valid event the library builds: %s", err, lib.JSON())
			}
			if !errors.Is(err, ErrBadJSON) {
				t.Fatalf("Build refuses what the library builds with %v", err)
			}
		default:
			var ve gomatrixserverlib.EventValidationError
			libTooLarge := errors.As(libErr, &ve) && ve.Code == gomatrixserverlib.EventValidationTooLarge
			if errors.Is(err, ErrTooLarge) && !libTooLarge || libTooLarge && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrBadJSON) {
				t.Fatalf("different refusals: ours %v, library %v", err, libErr)
			}
		}
	})
}

var canonicalInteger = regexp.MustCompile(`^(0|-?[1-9][0-9]{0,15})$`)

// specValid says what, if anything, keeps the library's event from being one the spec
// allows with the content the client sent: invalid UTF-8, duplicate keys, numbers that
// are not canonical JSON's, content that is not an object, or content that differs
// from what the client sent (as encoding/json reads both).
func specValid(input, event []byte) string {
	if !utf8.Valid(event) {
		return "not UTF-8"
	}
	var ev struct{ Content json.RawMessage }
	if err := json.Unmarshal(event, &ev); err != nil {
		return err.Error()
	}
	if !bytes.HasPrefix(ev.Content, []byte("{")) {
		return "content is not an object"
	}
	if problem := walk(json.NewDecoder(bytes.NewReader(ev.Content))); problem != "" {
		return problem
	}
	var sent, got any
	if json.Unmarshal(input, &sent) != nil || json.Unmarshal(ev.Content, &got) != nil || !reflect.DeepEqual(sent, got) {
		return "content differs from what was sent"
	}
	return ""
}

// walk reads one JSON value from d and reports duplicate keys and numbers canonical
// JSON does not have.
func walk(d *json.Decoder) string {
	d.UseNumber()
	type frame struct {
		keys     map[string]bool
		inObject bool
		wantKey  bool
	}
	var stack []frame
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return ""
		}
		if err != nil {
			return err.Error()
		}
		top := len(stack) - 1
		isKey := top >= 0 && stack[top].inObject && stack[top].wantKey
		if top >= 0 && stack[top].inObject {
			stack[top].wantKey = !stack[top].wantKey
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				stack = append(stack, frame{keys: map[string]bool{}, inObject: true, wantKey: true})
			case '[':
				stack = append(stack, frame{})
			default:
				stack = stack[:top]
				if top > 0 && stack[top-1].inObject {
					stack[top-1].wantKey = true
				}
			}
		case string:
			if isKey {
				if stack[top].keys[v] {
					return "duplicate key " + strconv.Quote(v)
				}
				stack[top].keys[v] = true
			}
		case json.Number:
			if !canonicalInteger.MatchString(string(v)) {
				return "number " + string(v)
			}
			if n, _ := strconv.ParseInt(string(v), 10, 64); n > maxSafeInteger || n < -maxSafeInteger {
				return "number " + string(v)
			}
		}
	}
}
