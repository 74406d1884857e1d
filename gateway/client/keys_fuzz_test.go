package client

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// fuzzDevice is the requester of the key fuzz targets, with a fixed signing key so
// seeds can carry valid signatures.
var (
	fuzzDevice = Device{UserID: "@alice:" + testServerName, DeviceID: "DEV"}
	fuzzKey    = ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	fuzzPub    = base64.RawStdEncoding.EncodeToString(fuzzKey.Public().(ed25519.PublicKey))
)

func fuzzSigned(t testing.TB, obj any) string {
	raw, _ := json.Marshal(obj)
	signed, err := gomatrixserverlib.SignJSON(fuzzDevice.UserID, "ed25519:"+gomatrixserverlib.KeyID(fuzzDevice.DeviceID), fuzzKey, raw)
	if err != nil {
		t.Fatal(err)
	}
	return string(signed)
}

func post(path string, body []byte) *http.Request {
	return httptest.NewRequest(http.MethodPost, path, strings.NewReader(string(body)))
}

// FuzzDecodeKeysUpload: any /keys/upload body is refused with a Matrix client error or
// checked keys come out: the device's own, key IDs well formed, one fallback key per
// algorithm, in a write the writer accepts.
func FuzzDecodeKeysUpload(f *testing.F) {
	dk := fuzzSigned(f, map[string]any{"user_id": fuzzDevice.UserID, "device_id": "DEV", "algorithms": []string{"m.olm.v1.curve25519-aes-sha2"},
		"keys": map[string]string{"ed25519:DEV": fuzzPub, "curve25519:DEV": fuzzPub}})
	otk := fuzzSigned(f, map[string]any{"key": "abc"})
	fb := fuzzSigned(f, map[string]any{"key": "def", "fallback": true})
	for _, s := range []string{
		`{"device_keys":` + dk + `,"one_time_keys":{"signed_curve25519:AAAA":` + otk + `},"fallback_keys":{"signed_curve25519:F":` + fb + `}}`,
		`{"one_time_keys":{"curve25519:A":"plain","signed_curve25519:B":` + otk + `}}`,
		`{"device_keys":null}`, `{"device_keys":{"user_id":"@bob:x"}}`, `{"one_time_keys":{"nocolon":"x"}}`,
		`{"one_time_keys":{"signed_curve25519:A":"unsigned"}}`, `{"fallback_keys":{"a:1":"x","a:2":"y"}}`, `{}`, `[]`,
		`{"one_time_keys":{"a:b:c":{"key":"k","signatures":{}}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		up, err := decodeKeysUpload(post("/_matrix/client/v3/keys/upload", body), fuzzDevice, func() (string, error) { return fuzzPub, nil })
		if err != nil {
			checkDecodeError(t, body, err)
			return
		}
		if up.DeviceKeys != nil {
			if _, _, err := userstreams.CheckDeviceKeys(up.DeviceKeys, fuzzDevice.UserID, fuzzDevice.DeviceID); err != nil {
				t.Fatalf("body %q: accepted device keys fail the check again: %v", body, err)
			}
		}
		algorithms := map[string]bool{}
		for id := range up.FallbackKeys {
			alg, _, _ := strings.Cut(id, ":")
			if algorithms[alg] {
				t.Fatalf("body %q: two fallback keys of %s", body, alg)
			}
			algorithms[alg] = true
		}
		for id := range up.OneTimeKeys {
			if alg, kid, ok := strings.Cut(id, ":"); !ok || alg == "" || kid == "" || len(up.OneTimeKeys) > maxOneTimeKeys {
				t.Fatalf("body %q: one-time key %q accepted", body, id)
			}
		}
		checkWrite(t, body, up)
	})
}

// checkWrite fails t unless a write carrying body is one the writer accepts.
func checkWrite(t *testing.T, in []byte, body any) {
	t.Helper()
	raw, err := schemas.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	w := schemas.StreamWrite{V: schemas.StreamWriteVersion, ID: "x", Stream: schemas.StreamDeviceLists, Op: "op", Key: fuzzDevice.UserID,
		User: fuzzDevice.UserID, Device: fuzzDevice.DeviceID, Body: raw}
	if err := w.Validate(); err != nil {
		t.Fatalf("body %q gave an invalid write: %v", in, err)
	}
}

// FuzzDecodeKeysQueryAndClaim: /keys/query and /keys/claim bodies are refused with a
// Matrix client error or read within their bounds.
func FuzzDecodeKeysQueryAndClaim(f *testing.F) {
	for _, s := range []string{
		`{"device_keys":{"@a:b":[],"@c:d":["D1","D2"]},"timeout":10000}`, `{"one_time_keys":{"@a:b":{"D":"signed_curve25519"}}}`,
		`{"device_keys":{"@a:b":"D"}}`, `{"device_keys":null}`, `{"one_time_keys":{"@a:b":{"D":""}}}`, `{"one_time_keys":{"@a:b":{"":"x"}}}`, `{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if q, err := decodeKeysQuery(post("/_matrix/client/v3/keys/query", body)); err != nil {
			checkDecodeError(t, body, err)
		} else if q == nil {
			t.Fatalf("body %q: a query without device_keys accepted", body)
		}
		claims, err := decodeKeysClaim(post("/_matrix/client/v3/keys/claim", body))
		if err != nil {
			checkDecodeError(t, body, err)
			return
		}
		n := 0
		for _, devices := range claims {
			for device, alg := range devices {
				if device == "" || alg == "" {
					t.Fatalf("body %q: empty device or algorithm accepted", body)
				}
			}
			n += len(devices)
		}
		if n > maxClaimedDevices {
			t.Fatalf("body %q: %d claims accepted", body, n)
		}
		checkWrite(t, body, claims)
	})
}

// FuzzDecodeSignaturesUpload: a /keys/signatures/upload body is refused with a Matrix
// client error or every signed key in it is an object, within the bound.
func FuzzDecodeSignaturesUpload(f *testing.F) {
	for _, s := range []string{
		`{"@a:b":{"DEV":{"user_id":"@a:b","device_id":"DEV","keys":{},"signatures":{"@a:b":{"ed25519:x":"sig"}}}}}`,
		`{"@a:b":{"DEV":1}}`, `{"@a:b":[]}`, `{}`, `{"@a:b":{}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, n, err := decodeSignaturesUpload(post("/_matrix/client/v3/keys/signatures/upload", body))
		if err != nil {
			checkDecodeError(t, body, err)
			return
		}
		count := 0
		for _, keys := range req {
			for id, obj := range keys {
				if !schemas.IsObject(obj) {
					t.Fatalf("body %q: %s is not an object", body, id)
				}
				count++
			}
		}
		if count != n || n > maxSignaturesUpload {
			t.Fatalf("body %q: %d signed keys counted as %d", body, count, n)
		}
		checkWrite(t, body, req)
	})
}

// FuzzDecodeBackup: key backup bodies, on each of their three paths, and backup version
// bodies are refused with a Matrix client error or give complete session keys within
// the bound.
func FuzzDecodeBackup(f *testing.F) {
	key := `{"first_message_index":1,"forwarded_count":0,"is_verified":true,"session_data":{"ciphertext":"x"}}`
	for _, s := range []struct{ body, room, session string }{
		{`{"rooms":{"!r:h":{"sessions":{"s":` + key + `}}}}`, "", ""},
		{`{"sessions":{"s":` + key + `}}`, "!r:h", ""},
		{key, "!r:h", "s"},
		{`{"first_message_index":1,"forwarded_count":0,"is_verified":"no","session_data":{}}`, "!r:h", "s"},
		{`{"rooms":{"bad":{"sessions":{}}}}`, "", ""},
		{`{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{"public_key":"k"}}`, "", ""},
		{`{"algorithm":"a","auth_data":"x","version":"1"}`, "", ""},
	} {
		f.Add([]byte(s.body), s.room, s.session)
	}
	f.Fuzz(func(t *testing.T, body []byte, room, session string) {
		if room != "" && !validRoomID(room) || room == "" && session != "" {
			return // the router hands over only a checked room, and a session with its room
		}
		keys, err := decodeBackupKeys(httptest.NewRequest(http.MethodPut, "/_matrix/client/v3/room_keys/keys", strings.NewReader(string(body))), room, session)
		if err != nil {
			checkDecodeError(t, body, err)
		} else {
			if len(keys) > maxBackupKeys {
				t.Fatalf("body %q: %d keys accepted", body, len(keys))
			}
			for _, k := range keys {
				if k.Session == "" || !validRoomID(k.Room) || !schemas.IsObject(k.SessionData) {
					t.Fatalf("body %q: incomplete key %+v accepted", body, k)
				}
			}
			checkWrite(t, body, userstreams.BackupOp{Version: "1", Keys: keys})
		}
		v, err := decodeBackupVersion(post("/_matrix/client/v3/room_keys/version", body))
		if err != nil {
			checkDecodeError(t, body, err)
			return
		}
		if v.Algorithm == "" || !schemas.IsObject(v.AuthData) {
			t.Fatalf("body %q: version without algorithm or auth_data accepted", body)
		}
	})
}
