package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
)

// backupCall sends a request to /room_keys/... with the version query parameter (none
// when empty) and decodes the answer into out.
func backupCall(ctx context.Context, c *mautrix.Client, method, version string, body, out any, path ...string) error {
	p := mautrix.ClientURLPath{"v3", "room_keys"}
	for _, s := range path {
		p = append(p, s)
	}
	q := map[string]string{}
	if version != "" {
		q["version"] = version
	}
	_, err := c.MakeRequest(ctx, method, c.BuildURLWithQuery(p, q), body, out)
	return err
}

type backupInfo struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Count     int             `json:"count"`
	ETag      string          `json:"etag"`
	Version   string          `json:"version"`
}

type etagCount struct {
	ETag  string `json:"etag"`
	Count int    `json:"count"`
}

func sessionKey(index, forwarded int, verified bool, data string) map[string]any {
	return map[string]any{"first_message_index": index, "forwarded_count": forwarded, "is_verified": verified,
		"session_data": map[string]string{"ciphertext": data}}
}

// TestKeyBackup: backup versions and their session keys, with the spec's etags, counts
// and version checks and Synapse's rule for which copy of a session key is kept; a
// user's backups are theirs alone.
func TestKeyBackup(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	const alg = "m.megolm_backup.v1.curve25519-aes-sha2"
	room := "!room:" + alice.UserID.Homeserver()

	wantError(t, "no backup yet", backupCall(ctx, alice, http.MethodGet, "", nil, nil, "version"), 404, "M_NOT_FOUND")
	var created struct {
		Version string `json:"version"`
	}
	if err := backupCall(ctx, alice, http.MethodPost, "", map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "abc"}},
		&created, "version"); err != nil || created.Version != "1" {
		t.Fatalf("create: %+v %v", created, err)
	}
	var info backupInfo
	if err := backupCall(ctx, alice, http.MethodGet, "", nil, &info, "version"); err != nil ||
		info.Version != "1" || info.ETag != "0" || info.Count != 0 || info.Algorithm != alg || string(info.AuthData) != `{"public_key":"abc"}` {
		t.Fatalf("current version: %+v %v", info, err)
	}
	wantError(t, "someone else's backup", backupCall(ctx, bob, http.MethodGet, "", nil, nil, "version", "1"), 404, "M_NOT_FOUND")

	put := func(c *mautrix.Client, version string, body any, path ...string) (etagCount, error) {
		var ec etagCount
		err := backupCall(ctx, c, http.MethodPut, version, body, &ec, append([]string{"keys"}, path...)...)
		return ec, err
	}
	ec, err := put(alice, "1", map[string]any{"rooms": map[string]any{room: map[string]any{"sessions": map[string]any{
		"s1": sessionKey(5, 1, false, "first"), "s2": sessionKey(0, 0, false, "second")}}}})
	if err != nil || ec != (etagCount{"1", 2}) {
		t.Fatalf("first keys: %+v %v", ec, err)
	}
	// A worse copy of s1 (later index, same verification) is dropped: nothing changes.
	if ec, err = put(alice, "1", sessionKey(7, 2, false, "worse"), room, "s1"); err != nil || ec != (etagCount{"1", 2}) {
		t.Errorf("a worse key: %+v %v", ec, err)
	}
	// A verified copy wins, then one with a lower first message index.
	if ec, err = put(alice, "1", sessionKey(9, 3, true, "verified"), room, "s1"); err != nil || ec != (etagCount{"2", 2}) {
		t.Errorf("a verified key: %+v %v", ec, err)
	}
	if ec, err = put(alice, "1", map[string]any{"sessions": map[string]any{"s1": sessionKey(2, 3, false, "earlier"), "s3": sessionKey(0, 0, false, "third")}}, room); err != nil ||
		ec != (etagCount{"3", 3}) {
		t.Errorf("an earlier key and a new one: %+v %v", ec, err)
	}
	var one map[string]any
	if err := backupCall(ctx, alice, http.MethodGet, "1", nil, &one, "keys", room, "s1"); err != nil ||
		one["session_data"].(map[string]any)["ciphertext"] != "earlier" || one["is_verified"] != false {
		t.Errorf("session s1: %v %v", one, err)
	}
	var all struct {
		Rooms map[string]struct {
			Sessions map[string]json.RawMessage `json:"sessions"`
		} `json:"rooms"`
	}
	if err := backupCall(ctx, alice, http.MethodGet, "1", nil, &all, "keys"); err != nil || len(all.Rooms[room].Sessions) != 3 {
		t.Errorf("all keys: %+v %v", all, err)
	}
	var empty map[string]map[string]any
	if err := backupCall(ctx, alice, http.MethodGet, "1", nil, &empty, "keys", "!other:x"); err != nil || empty["sessions"] == nil || len(empty["sessions"]) != 0 {
		t.Errorf("a room without keys: %v %v", empty, err)
	}
	wantError(t, "an unknown session", backupCall(ctx, alice, http.MethodGet, "1", nil, nil, "keys", room, "nope"), 404, "M_NOT_FOUND")
	wantError(t, "keys of an unknown version", backupCall(ctx, alice, http.MethodGet, "7", nil, nil, "keys"), 404, "M_NOT_FOUND")

	// A new version becomes the current one: the old one is read-only.
	if err := backupCall(ctx, alice, http.MethodPost, "", map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "def"}},
		&created, "version"); err != nil || created.Version != "2" {
		t.Fatalf("second version: %+v %v", created, err)
	}
	_, err = put(alice, "1", sessionKey(0, 0, true, "late"), room, "s9")
	wantError(t, "keys for an old version", err, 403, "M_WRONG_ROOM_KEYS_VERSION")
	raw, _ := json.Marshal(sessionKey(0, 0, true, "late"))
	status, _, body := rawRequest(ctx, t, http.MethodPut, base+"/_matrix/client/v3/room_keys/keys/"+room+"/s9?version=1", alice.AccessToken, raw)
	if status != 403 || !strings.Contains(body, `"current_version":"2"`) {
		t.Errorf("wrong version answer: %d %s", status, body)
	}
	_, err = put(alice, "9", sessionKey(0, 0, true, "x"), room, "s9")
	wantError(t, "keys for a version that does not exist", err, 404, "M_NOT_FOUND")
	_, err = put(bob, "2", sessionKey(0, 0, true, "x"), room, "s9")
	wantError(t, "keys into someone else's backup", err, 404, "M_NOT_FOUND")

	// Deleting keys moves the etag on; deleting a version leaves the previous current.
	var del etagCount
	if err := backupCall(ctx, alice, http.MethodDelete, "1", nil, &del, "keys", room, "s2"); err != nil || del != (etagCount{"4", 2}) {
		t.Errorf("delete one session: %+v %v", del, err)
	}
	if err := backupCall(ctx, alice, http.MethodGet, "1", nil, &info, "version", "1"); err != nil || info.Count != 2 || info.ETag != "4" {
		t.Errorf("version 1 after the deletion: %+v %v", info, err)
	}
	if err := backupCall(ctx, alice, http.MethodPut, "", map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "ghi"}, "version": "2"},
		nil, "version", "2"); err != nil {
		t.Errorf("update version 2: %v", err)
	}
	wantError(t, "update with another algorithm", backupCall(ctx, alice, http.MethodPut, "",
		map[string]any{"algorithm": "other", "auth_data": map[string]any{}}, nil, "version", "2"), 400, "M_INVALID_PARAM")
	wantError(t, "update with another version in the body", backupCall(ctx, alice, http.MethodPut, "",
		map[string]any{"algorithm": alg, "auth_data": map[string]any{}, "version": "1"}, nil, "version", "2"), 400, "M_INVALID_PARAM")
	wantError(t, "update of an unknown version", backupCall(ctx, alice, http.MethodPut, "",
		map[string]any{"algorithm": alg, "auth_data": map[string]any{}}, nil, "version", "5"), 404, "M_NOT_FOUND")
	if err := backupCall(ctx, alice, http.MethodDelete, "", nil, nil, "version", "2"); err != nil {
		t.Fatal(err)
	}
	if err := backupCall(ctx, alice, http.MethodGet, "", nil, &info, "version"); err != nil || info.Version != "1" || string(info.AuthData) != `{"public_key":"abc"}` {
		t.Errorf("current version after deleting 2: %+v %v", info, err)
	}
	wantError(t, "a deleted version", backupCall(ctx, alice, http.MethodGet, "", nil, nil, "version", "2"), 404, "M_NOT_FOUND")
	wantError(t, "delete of an unknown version", backupCall(ctx, alice, http.MethodDelete, "", nil, nil, "version", "x"), 404, "M_NOT_FOUND")
	if err := backupCall(ctx, alice, http.MethodPost, "", map[string]any{"algorithm": alg, "auth_data": map[string]any{}}, &created, "version"); err != nil || created.Version != "3" {
		t.Errorf("a version after a deleted one is not reused: %+v %v", created, err)
	}

	api := base + "/_matrix/client/v3/room_keys/"
	for _, tc := range []struct {
		what, method, path, body string
		status                   int
		code                     string
	}{
		{"keys without a version", "GET", "keys", "", 400, "M_MISSING_PARAM"},
		{"keys that are not JSON", "PUT", "keys?version=3", "{", 400, "M_NOT_JSON"},
		{"is_verified that is not a boolean", "PUT", "keys/" + room + "/s?version=3", `{"first_message_index":0,"forwarded_count":0,"is_verified":"yes","session_data":{}}`, 400, "M_INVALID_PARAM"},
		{"is_verified missing", "PUT", "keys/" + room + "/s?version=3", `{"first_message_index":0,"forwarded_count":0,"session_data":{}}`, 400, "M_INVALID_PARAM"},
		{"session_data that is not an object", "PUT", "keys/" + room + "/s?version=3", `{"first_message_index":0,"forwarded_count":0,"is_verified":true,"session_data":"x"}`, 400, "M_BAD_JSON"},
		{"a bad room id in the path", "PUT", "keys/notaroom/s?version=3", `{}`, 400, "M_INVALID_PARAM"},
		{"a bad room id in the body", "PUT", "keys?version=3", `{"rooms":{"notaroom":{"sessions":{}}}}`, 400, "M_INVALID_PARAM"},
		{"a version without auth_data", "POST", "version", `{"algorithm":"x"}`, 400, "M_MISSING_PARAM"},
		{"keys too large", "PUT", "keys?version=3", `{"rooms":{"` + strings.Repeat("a", 600<<10) + `":{}}}`, 413, "M_TOO_LARGE"},
	} {
		var b []byte
		if tc.body != "" {
			b = []byte(tc.body)
		}
		status, code, body := rawRequest(ctx, t, tc.method, api+tc.path, alice.AccessToken, b)
		if status != tc.status || code != tc.code {
			t.Errorf("%s: got %d %s (%.200s), want %d %s", tc.what, status, code, body, tc.status, tc.code)
		}
	}
}
