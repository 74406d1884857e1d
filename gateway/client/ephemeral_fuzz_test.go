package client

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// FuzzDecodeTyping: any typing body gets a Matrix client error or a typing state whose
// timeout is within Synapse's cap.
func FuzzDecodeTyping(f *testing.F) {
	for _, s := range []string{
		`{"typing":true,"timeout":30000}`, `{"typing":false}`, `{"typing":true}`, `{"typing":true,"timeout":1e12}`,
		`{"typing":true,"timeout":-5}`, `{"typing":true,"timeout":2.5}`, `{"typing":"yes"}`, `{"timeout":10}`, `{}`, `[]`,
		`{"typing":true,"timeout":"30000"}`, `{"typing":null}`, `{"typing":true,"timeout":1e400}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPut, "/_matrix/client/v3/rooms/!r:h/typing/@a:h", strings.NewReader(string(body)))
		set, err := decodeTyping(r)
		if err != nil {
			checkDecodeError(t, body, err)
			return
		}
		if set.TimeoutMS < 0 || time.Duration(set.TimeoutMS)*time.Millisecond > userstreams.TypingMaxTimeout || !set.Typing && set.TimeoutMS != 0 {
			t.Fatalf("body %q gave %+v", body, set)
		}
	})
}

// FuzzDecodeReceipt: any receipt body, for each receipt type, gets a Matrix client
// error or a thread that is unthreaded, "main" or an event ID, never with m.fully_read.
func FuzzDecodeReceipt(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"thread_id":"main"}`, `{"thread_id":"$root"}`, `{"thread_id":""}`, `{"thread_id":5}`, `{"thread_id":null}`,
		`{"thread_id":"room"}`, `{"extra":{"a":1}}`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s), uint8(0))
	}
	types := []string{schemas.ReceiptRead, schemas.ReceiptReadPrivate, fullyRead}
	f.Fuzz(func(t *testing.T, body []byte, which uint8) {
		typ := types[int(which)%len(types)]
		r := httptest.NewRequest(http.MethodPost, "/_matrix/client/v3/rooms/!r:h/receipt/"+typ+"/$e", strings.NewReader(string(body)))
		thread, err := decodeReceipt(r, typ)
		if err != nil {
			checkDecodeError(t, body, err)
			return
		}
		if thread != "" && (typ == fullyRead || thread != mainThread && !validEventID(thread)) {
			t.Fatalf("body %q of a %s receipt gave thread %q", body, typ, thread)
		}
	})
}

// FuzzDecodeReadMarkers: any read_markers body gets a Matrix client error or markers of
// the three known types, each an event ID.
func FuzzDecodeReadMarkers(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"m.fully_read":"$a","m.read":"$b","m.read.private":"$c"}`, `{"m.read":""}`, `{"m.read":null}`,
		`{"m.read":5}`, `{"m.read":"nope"}`, `{"m.unknown":"$x"}`, `{"m.fully_read":["$a"]}`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/_matrix/client/v3/rooms/!r:h/read_markers", strings.NewReader(string(body)))
		markers, err := decodeReadMarkers(r)
		if err != nil {
			checkDecodeError(t, body, err)
			return
		}
		for typ, id := range markers {
			if typ != fullyRead && typ != schemas.ReceiptRead && typ != schemas.ReceiptReadPrivate || !validEventID(id) {
				t.Fatalf("body %q gave marker %s=%q", body, typ, id)
			}
		}
	})
}
