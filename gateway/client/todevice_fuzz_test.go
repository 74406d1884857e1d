package client

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"unicode/utf8"

	"github.com/ganglionhq/ganglion/schemas"
)

func FuzzDecodeSendToDevice(f *testing.F) {
	for _, s := range []string{
		`{"messages":{"@bob:test.local":{"DEV":{"body":"hi"},"*":{}}}}`,
		`{"messages":{"@bob:other":{"*":{"a":[1,2,{"b":null}]}}}}`,
		`{"messages":{}}`, `{}`, `{"messages":null}`, `{"messages":[]}`, `{"messages":{"bob":{}}}`,
		`{"messages":{"@bob:x":null}}`, `{"messages":{"@bob:x":{"D":"text"}}}`, `{"messages":{"@bob:x":{"D":[]}}}`,
		`{"messages":{"@bob:x":{"D":{"k":"\u0000"}}}}`, `[]`, `not json`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPut, "/_matrix/client/v3/sendToDevice/m.test/1", bytes.NewReader(body))
		messages, err := decodeSendToDevice(r)
		if err != nil {
			checkDecodeError(t, body, err)
			return
		}
		if messages == nil {
			t.Fatalf("body %q: no messages and no error", body)
		}
		for user, byDevice := range messages {
			if !validUserID(user) || byDevice == nil {
				t.Fatalf("body %q: accepted recipient %q with %v", body, user, byDevice)
			}
			for device, content := range byDevice {
				if !schemas.IsObject(content) || len(content) > maxSendToDeviceBody {
					t.Fatalf("body %q: accepted content %q for %q", body, content, device)
				}
			}
		}
	})
}

func FuzzDecodeDeviceBodies(f *testing.F) {
	for _, s := range []string{
		`{"display_name":"phone"}`, `{"display_name":null}`, `{}`, `{"display_name":5}`,
		`{"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"pw","session":"s"}}`,
		`{"devices":["A","B"],"auth":{"type":"m.login.password","user":"@alice:test.local","password":"pw"}}`,
		`{"devices":"A"}`, `{"devices":[1]}`, `{"auth":[]}`, ``, ` `, `[]`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		put := httptest.NewRequest(http.MethodPut, "/_matrix/client/v3/devices/D", bytes.NewReader(body))
		if name, err := decodeDeviceUpdate(put); err != nil {
			checkDecodeError(t, body, err)
		} else if name != nil && utf8.RuneCountInString(*name) > maxDisplayNameLen {
			t.Fatalf("body %q: accepted a display name of %d characters", body, utf8.RuneCountInString(*name))
		}
		for _, list := range []bool{false, true} {
			del := httptest.NewRequest(http.MethodPost, "/_matrix/client/v3/delete_devices", bytes.NewReader(body))
			req, err := decodeDeleteDevices(del, list)
			if err != nil {
				checkDecodeError(t, body, err)
				continue
			}
			if list && req.Devices == nil {
				t.Fatalf("body %q: no device list and no error", body)
			}
			if len(bytes.TrimSpace(body)) == 0 && (req.Auth != nil || list) {
				t.Fatalf("empty body read as %+v", req)
			}
		}
	})
}
