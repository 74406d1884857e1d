package e2e

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// keyDevice is a client's device with an ed25519 signing key the test holds, so it can
// upload keys as a client does, and forge them as an attacker would.
type keyDevice struct {
	c    *mautrix.Client
	priv ed25519.PrivateKey
	pub  string
}

func newKeyDevice(c *mautrix.Client) *keyDevice {
	pub, priv, _ := ed25519.GenerateKey(nil)
	return &keyDevice{c: c, priv: priv, pub: base64.RawStdEncoding.EncodeToString(pub)}
}

// signAs signs obj as signer with the key named keyID.
func signAs(t *testing.T, signer, keyID string, priv ed25519.PrivateKey, obj any) map[string]any {
	t.Helper()
	raw, _ := json.Marshal(obj)
	signed, err := gomatrixserverlib.SignJSON(signer, gomatrixserverlib.KeyID(keyID), priv, raw)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	_ = json.Unmarshal(signed, &out)
	return out
}

func (d *keyDevice) sign(t *testing.T, obj any) map[string]any {
	return signAs(t, d.c.UserID.String(), "ed25519:"+d.c.DeviceID.String(), d.priv, obj)
}

// deviceKeys is the device's keys object, signed.
func (d *keyDevice) deviceKeys(t *testing.T) map[string]any {
	dev := d.c.DeviceID.String()
	return d.sign(t, map[string]any{"user_id": d.c.UserID, "device_id": dev,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + dev: d.pub, "curve25519:" + dev: d.pub}})
}

// oneTimeKeys are n signed one-time keys named <prefix><i>.
func (d *keyDevice) oneTimeKeys(t *testing.T, prefix string, n int) map[string]any {
	out := map[string]any{}
	for i := range n {
		out[fmt.Sprintf("signed_curve25519:%s%d", prefix, i)] = d.sign(t, map[string]any{"key": fmt.Sprintf("%s-key-%d", prefix, i)})
	}
	return out
}

// call sends a request with a JSON body through the client and decodes the answer.
func call(ctx context.Context, c *mautrix.Client, method string, body any, out any, path ...any) error {
	_, err := c.MakeRequest(ctx, method, c.BuildClientURL(append([]any{"v3"}, path...)...), body, out)
	return err
}

// keyCounts uploads nothing and returns the device's one-time key counts.
func keyCounts(ctx context.Context, t *testing.T, c *mautrix.Client) map[string]int {
	t.Helper()
	var res struct {
		Counts map[string]int `json:"one_time_key_counts"`
	}
	if err := call(ctx, c, http.MethodPost, map[string]any{}, &res, "keys", "upload"); err != nil {
		t.Fatal(err)
	}
	return res.Counts
}

// TestKeysUploadQueryClaim: a device publishes signed keys, others read them and claim
// each one-time key once, then the fallback key; forgeries and malformed keys are
// refused with the spec's errors.
func TestKeysUploadQueryClaim(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newKeyDevice(newUser(ctx, t, base, "alice"))
	bob := newUser(ctx, t, base, "bob")
	upload := map[string]any{
		"device_keys":   alice.deviceKeys(t),
		"one_time_keys": alice.oneTimeKeys(t, "A", 3),
		"fallback_keys": map[string]any{"signed_curve25519:F": alice.sign(t, map[string]any{"key": "fallback", "fallback": true})},
	}
	var up struct {
		Counts map[string]int `json:"one_time_key_counts"`
	}
	if err := call(ctx, alice.c, http.MethodPost, upload, &up, "keys", "upload"); err != nil || up.Counts["signed_curve25519"] != 3 {
		t.Fatalf("upload: %v, counts %v", err, up.Counts)
	}
	// Uploading the same keys again is harmless.
	if err := call(ctx, alice.c, http.MethodPost, upload, &up, "keys", "upload"); err != nil || up.Counts["signed_curve25519"] != 3 {
		t.Fatalf("the same upload again: %v, counts %v", err, up.Counts)
	}

	nobody := id.UserID("@nobody:" + alice.c.UserID.Homeserver())
	q, err := bob.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{
		alice.c.UserID: {}, nobody: {}, "@someone:elsewhere.example": {}}})
	if err != nil {
		t.Fatal(err)
	}
	keys, ok := q.DeviceKeys[alice.c.UserID][alice.c.DeviceID]
	if !ok || keys.Keys.GetEd25519(alice.c.DeviceID).String() != alice.pub {
		t.Fatalf("query of alice: %+v", q.DeviceKeys)
	}
	if devs, ok := q.DeviceKeys[nobody]; !ok || len(devs) != 0 {
		t.Errorf("an unknown local user should be present without devices: %v", q.DeviceKeys)
	}
	if _, ok := q.Failures["elsewhere.example"]; !ok {
		t.Errorf("a remote server should be in failures: %v", q.Failures)
	}
	var raw map[string]any
	_ = call(ctx, bob, http.MethodPost, map[string]any{"device_keys": map[string]any{alice.c.UserID.String(): []string{"NOTADEVICE"}}}, &raw, "keys", "query")
	if devs := raw["device_keys"].(map[string]any)[alice.c.UserID.String()]; len(devs.(map[string]any)) != 0 {
		t.Errorf("query of an unknown device: %v", raw)
	}

	claimed := map[string]int{}
	for range 5 {
		res, err := bob.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
			alice.c.UserID: {alice.c.DeviceID: id.KeyAlgorithmSignedCurve25519}}})
		if err != nil {
			t.Fatal(err)
		}
		for kid := range res.OneTimeKeys[alice.c.UserID][alice.c.DeviceID] {
			claimed[kid.String()]++
		}
	}
	if len(claimed) != 4 || claimed["signed_curve25519:F"] != 2 || claimed["signed_curve25519:A0"] != 1 {
		t.Errorf("claims handed out %v: want each one-time key once, then the fallback key", claimed)
	}
	if c := keyCounts(ctx, t, alice.c); c["signed_curve25519"] != 0 {
		t.Errorf("counts after the claims: %v", c)
	}
	// /sync tells the device its counts and that its fallback key was used: [] not null.
	status, _, body := rawRequest(ctx, t, http.MethodGet, base+"/_matrix/client/v3/sync", alice.c.AccessToken, nil)
	if status != http.StatusOK || !strings.Contains(body, `"device_unused_fallback_key_types":[]`) ||
		!strings.Contains(body, `"device_one_time_keys_count":{"signed_curve25519":0}`) {
		t.Errorf("sync of the device: %d %s", status, body)
	}
	var claim map[string]any
	if err := call(ctx, bob, http.MethodPost, map[string]any{"one_time_keys": map[string]any{
		"@someone:elsewhere.example": map[string]string{"X": "signed_curve25519"}}}, &claim, "keys", "claim"); err != nil ||
		claim["failures"].(map[string]any)["elsewhere.example"] == nil {
		t.Errorf("claim of a remote user: %v %v", claim, err)
	}

	// Forgeries and malformed keys.
	if err := call(ctx, alice.c, http.MethodPost, map[string]any{"one_time_keys": alice.oneTimeKeys(t, "B", 1)}, nil, "keys", "upload"); err != nil {
		t.Fatal(err)
	}
	mallory := newKeyDevice(newUser(ctx, t, base, "mallory"))
	forged := mallory.deviceKeys(t)
	forged["keys"].(map[string]any)["curve25519:"+mallory.c.DeviceID.String()] = "c29tZXRoaW5nIGVsc2U"
	wrongUser := alice.sign(t, map[string]any{"user_id": bob.UserID, "device_id": alice.c.DeviceID,
		"algorithms": []string{}, "keys": map[string]string{"ed25519:" + alice.c.DeviceID.String(): alice.pub}})
	otherDevice := mallory.deviceKeys(t)
	otherDevice["device_id"] = "OTHER"
	badKeyID := mallory.sign(t, map[string]any{"user_id": mallory.c.UserID, "device_id": mallory.c.DeviceID,
		"algorithms": []string{}, "keys": map[string]string{"ed25519:OTHER": mallory.pub}})
	badOTK := mallory.oneTimeKeys(t, "M", 1)
	badOTK["signed_curve25519:M0"].(map[string]any)["key"] = "swapped"
	newIdentity := newKeyDevice(alice.c)
	for _, tc := range []struct {
		what   string
		c      *mautrix.Client
		body   any
		status int
		code   string
	}{
		{"device keys whose signature does not match", mallory.c, map[string]any{"device_keys": forged}, 400, "M_INVALID_SIGNATURE"},
		{"device keys of another user", alice.c, map[string]any{"device_keys": wrongUser}, 400, "M_BAD_JSON"},
		{"device keys of another device", mallory.c, map[string]any{"device_keys": otherDevice}, 400, "M_BAD_JSON"},
		{"a key not named after the device", mallory.c, map[string]any{"device_keys": badKeyID}, 400, "M_BAD_JSON"},
		{"device_keys null", mallory.c, map[string]any{"device_keys": nil}, 400, "M_BAD_JSON"},
		{"a one-time key id without an algorithm", mallory.c, map[string]any{"device_keys": mallory.deviceKeys(t), "one_time_keys": map[string]any{"AAAA": "x"}}, 400, "M_BAD_JSON"},
		{"a signed one-time key with a bad signature", mallory.c, map[string]any{"device_keys": mallory.deviceKeys(t), "one_time_keys": badOTK}, 400, "M_INVALID_SIGNATURE"},
		{"a signed one-time key as a string", mallory.c, map[string]any{"one_time_keys": map[string]any{"signed_curve25519:Z": "x"}}, 400, "M_BAD_JSON"},
		{"new identity keys for an existing device", alice.c, map[string]any{"device_keys": newIdentity.deviceKeys(t)}, 400, "M_INVALID_PARAM"},
		{"two fallback keys of one algorithm", alice.c, map[string]any{"fallback_keys": map[string]any{
			"signed_curve25519:F1": alice.sign(t, map[string]any{"key": "1", "fallback": true}),
			"signed_curve25519:F2": alice.sign(t, map[string]any{"key": "2", "fallback": true})}}, 400, "M_INVALID_PARAM"},
		{"a one-time key id reused for another key", alice.c, map[string]any{"one_time_keys": map[string]any{
			"signed_curve25519:B0": alice.sign(t, map[string]any{"key": "changed"})}}, 400, "M_UNKNOWN"},
	} {
		wantError(t, tc.what, call(ctx, tc.c, http.MethodPost, tc.body, nil, "keys", "upload"), tc.status, tc.code)
	}
	api := base + "/_matrix/client/v3/keys/"
	for _, tc := range []struct {
		what, path, body string
		status           int
		code             string
	}{
		{"upload that is not JSON", "upload", `{"device_keys":`, 400, "M_NOT_JSON"},
		{"upload too large", "upload", `{"one_time_keys":{"x":"` + strings.Repeat("a", 600<<10) + `"}}`, 413, "M_TOO_LARGE"},
		{"query without device_keys", "query", `{}`, 400, "M_BAD_JSON"},
		{"query with a device list that is not a list", "query", `{"device_keys":{"@a:b":"X"}}`, 400, "M_BAD_JSON"},
		{"claim that is not JSON", "claim", `nope`, 400, "M_NOT_JSON"},
		{"claim with an algorithm that is not a string", "claim", `{"one_time_keys":{"@a:b":{"D":1}}}`, 400, "M_BAD_JSON"},
	} {
		status, code, body := rawRequest(ctx, t, http.MethodPost, api+tc.path, bob.AccessToken, []byte(tc.body))
		if status != tc.status || code != tc.code {
			t.Errorf("%s: got %d %s (%.200s), want %d %s", tc.what, status, code, body, tc.status, tc.code)
		}
	}
	if status, code, _ := rawRequest(ctx, t, http.MethodPost, api+"query", "", []byte(`{"device_keys":{}}`)); status != 401 || code != "M_MISSING_TOKEN" {
		t.Errorf("query without a token: %d %s", status, code)
	}
}

// syncDeviceLists syncs from since until device_lists satisfies done.
func syncDeviceLists(ctx context.Context, t *testing.T, c *mautrix.Client, since string, done func(mautrix.DeviceLists) bool) (*mautrix.RespSync, string) {
	t.Helper()
	var all mautrix.DeviceLists
	for {
		res, err := c.SyncRequest(ctx, 10000, since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		all.Changed = append(all.Changed, res.DeviceLists.Changed...)
		all.Left = append(all.Left, res.DeviceLists.Left...)
		since = res.NextBatch
		if done(all) {
			return res, since
		}
		if ctx.Err() != nil {
			t.Fatalf("device lists never became what was expected: %+v", all)
		}
	}
}

// TestDeviceListsInSyncAndKeyChanges: a user learns in /sync and /keys/changes whose
// keys changed among those sharing a room with them, who started sharing one, and who
// stopped sharing any.
func TestDeviceListsInSyncAndKeyChanges(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newKeyDevice(newUser(ctx, t, base, "alice"))
	bob := newUser(ctx, t, base, "bob")
	carol := newUser(ctx, t, base, "carol")
	stranger := newKeyDevice(newUser(ctx, t, base, "stranger"))
	room := createRoomWith(ctx, t, bob, "private_chat", alice.c)
	first, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.DeviceLists.Changed) != 0 {
		t.Errorf("an initial sync lists no changes: %v", first.DeviceLists)
	}
	// A long-poll wakes for alice's keys; a stranger's keys do not concern bob.
	if err := call(ctx, stranger.c, http.MethodPost, map[string]any{"device_keys": stranger.deviceKeys(t)}, nil, "keys", "upload"); err != nil {
		t.Fatal(err)
	}
	done := longPoll(ctx, t, bob, 30000, first.NextBatch, noPresence, false, event.PresenceOnline)
	if err := call(ctx, alice.c, http.MethodPost, map[string]any{"device_keys": alice.deviceKeys(t)}, nil, "keys", "upload"); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r == nil || !slices.Contains(r.DeviceLists.Changed, alice.c.UserID) || slices.Contains(r.DeviceLists.Changed, stranger.c.UserID) {
		t.Fatalf("long-poll woken by alice's keys: %+v", r)
	}
	var changes mautrix.RespKeyChanges
	changesURL := bob.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "keys", "changes"}, map[string]string{"from": first.NextBatch, "to": r.NextBatch})
	if _, err := bob.MakeRequest(ctx, http.MethodGet, changesURL, nil, &changes); err != nil ||
		!slices.Contains(changes.Changed, alice.c.UserID) || slices.Contains(changes.Changed, stranger.c.UserID) {
		t.Errorf("/keys/changes: %+v %v", changes, err)
	}
	// A new name of alice's device reaches bob's device lists and her keys as he reads
	// them.
	since := r.NextBatch
	if err := alice.c.SetDeviceInfo(ctx, alice.c.DeviceID, &mautrix.ReqDeviceInfo{DisplayName: "alice's laptop"}); err != nil {
		t.Fatal(err)
	}
	_, since = syncDeviceLists(ctx, t, bob, since, func(dl mautrix.DeviceLists) bool { return slices.Contains(dl.Changed, alice.c.UserID) })
	var q map[string]map[string]map[string]struct {
		Unsigned map[string]string `json:"unsigned"`
	}
	if err := call(ctx, bob, http.MethodPost, map[string]any{"device_keys": map[string][]string{alice.c.UserID.String(): {}}}, &q, "keys", "query"); err != nil ||
		q["device_keys"][alice.c.UserID.String()][alice.c.DeviceID.String()].Unsigned["device_display_name"] != "alice's laptop" {
		t.Errorf("alice's device name in bob's query: %+v %v", q, err)
	}

	// A user who joins a room bob is in, then one who leaves every room they shared.
	if _, err := bob.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := carol.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	_, since = syncDeviceLists(ctx, t, bob, since, func(dl mautrix.DeviceLists) bool { return slices.Contains(dl.Changed, carol.UserID) })
	if _, err := carol.LeaveRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	_, since = syncDeviceLists(ctx, t, bob, since, func(dl mautrix.DeviceLists) bool { return slices.Contains(dl.Left, carol.UserID) })
	// A room bob joins brings its members; one he leaves takes those he shares no other
	// room with.
	other := createRoomWith(ctx, t, stranger.c, "private_chat", carol)
	if _, err := stranger.c.InviteUser(ctx, other, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, other); err != nil {
		t.Fatal(err)
	}
	_, since = syncDeviceLists(ctx, t, bob, since, func(dl mautrix.DeviceLists) bool {
		return slices.Contains(dl.Changed, carol.UserID) && slices.Contains(dl.Changed, stranger.c.UserID)
	})
	if _, err := bob.LeaveRoom(ctx, other); err != nil {
		t.Fatal(err)
	}
	res, _ := syncDeviceLists(ctx, t, bob, since, func(dl mautrix.DeviceLists) bool {
		return slices.Contains(dl.Left, carol.UserID) && slices.Contains(dl.Left, stranger.c.UserID)
	})
	if slices.Contains(res.DeviceLists.Left, alice.c.UserID) {
		t.Errorf("alice still shares a room with bob but is in left: %v", res.DeviceLists)
	}

	for _, tc := range []struct {
		what, query string
		code        string
	}{{"without from", "", "M_MISSING_PARAM"}, {"with a bad from", "?from=garbage", "M_INVALID_PARAM"}, {"with a bad to", "?from=s1&to=x", "M_INVALID_PARAM"}} {
		status, code, _ := rawRequest(ctx, t, http.MethodGet, base+"/_matrix/client/v3/keys/changes"+tc.query, bob.AccessToken, nil)
		if status != 400 || code != tc.code {
			t.Errorf("/keys/changes %s: %d %s, want 400 %s", tc.what, status, code, tc.code)
		}
	}
}

// crossKeys are a user's cross-signing keys, held by the test.
type crossKeys struct {
	user                string
	privs               map[string]ed25519.PrivateKey
	pubs                map[string]string
	master, self, users map[string]any
}

func newCrossKeys(t *testing.T, user id.UserID) *crossKeys {
	k := &crossKeys{user: user.String(), privs: map[string]ed25519.PrivateKey{}, pubs: map[string]string{}}
	for _, typ := range []string{"master", "self_signing", "user_signing"} {
		pub, priv, _ := ed25519.GenerateKey(nil)
		k.privs[typ], k.pubs[typ] = priv, base64.RawStdEncoding.EncodeToString(pub)
	}
	obj := func(typ string) map[string]any {
		return map[string]any{"user_id": user, "usage": []string{typ}, "keys": map[string]string{"ed25519:" + k.pubs[typ]: k.pubs[typ]}}
	}
	k.master = obj("master")
	k.self = k.signWith(t, "master", obj("self_signing"))
	k.users = k.signWith(t, "master", obj("user_signing"))
	return k
}

func (k *crossKeys) signWith(t *testing.T, typ string, obj any) map[string]any {
	return signAs(t, k.user, "ed25519:"+k.pubs[typ], k.privs[typ], obj)
}

func (k *crossKeys) upload() map[string]any {
	return map[string]any{"master_key": k.master, "self_signing_key": k.self, "user_signing_key": k.users}
}

// TestCrossSigning: the first cross-signing keys need no authentication, replacing
// them needs the password; signatures are verified before they are stored, and a
// user's signature of another's master key is seen by them alone.
func TestCrossSigning(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newKeyDevice(newUser(ctx, t, base, "alice"))
	bob := newKeyDevice(newUser(ctx, t, base, "bob"))
	carol := newUser(ctx, t, base, "carol")
	createRoomWith(ctx, t, alice.c, "private_chat", bob.c)
	for _, d := range []*keyDevice{alice, bob} {
		if err := call(ctx, d.c, http.MethodPost, map[string]any{"device_keys": d.deviceKeys(t)}, nil, "keys", "upload"); err != nil {
			t.Fatal(err)
		}
	}
	ak, bk := newCrossKeys(t, alice.c.UserID), newCrossKeys(t, bob.c.UserID)
	path := []any{"keys", "device_signing", "upload"}
	wantError(t, "a self-signing key without a master key", call(ctx, alice.c, http.MethodPost,
		map[string]any{"self_signing_key": ak.self}, nil, path...), 400, "M_MISSING_PARAM")
	badSelf := signAs(t, ak.user, "ed25519:"+ak.pubs["master"], ak.privs["user_signing"], map[string]any{"user_id": ak.user,
		"usage": []string{"self_signing"}, "keys": map[string]string{"ed25519:" + ak.pubs["self_signing"]: ak.pubs["self_signing"]}})
	wantError(t, "a self-signing key the master key did not sign", call(ctx, alice.c, http.MethodPost,
		map[string]any{"master_key": ak.master, "self_signing_key": badSelf}, nil, path...), 400, "M_INVALID_SIGNATURE")
	wantError(t, "a master key of another user", call(ctx, alice.c, http.MethodPost,
		map[string]any{"master_key": bk.master}, nil, path...), 400, "M_INVALID_PARAM")
	for _, k := range []*crossKeys{ak, bk} {
		c := alice.c
		if k == bk {
			c = bob.c
		}
		if err := call(ctx, c, http.MethodPost, k.upload(), nil, path...); err != nil {
			t.Fatalf("first cross-signing keys of %s: %v", k.user, err)
		}
		if err := call(ctx, c, http.MethodPost, k.upload(), nil, path...); err != nil {
			t.Errorf("the same keys again need no authentication: %v", err)
		}
	}
	// Replacing them: 401 with the password flow, M_FORBIDDEN for a wrong password.
	ak2 := newCrossKeys(t, alice.c.UserID)
	var uia struct {
		Session string `json:"session"`
		Flows   []struct {
			Stages []string `json:"stages"`
		} `json:"flows"`
		ErrCode string `json:"errcode"`
	}
	raw, _ := json.Marshal(ak2.upload())
	status, _, body := rawRequest(ctx, t, http.MethodPost, base+"/_matrix/client/v3/keys/device_signing/upload", alice.c.AccessToken, raw)
	_ = json.Unmarshal([]byte(body), &uia)
	if status != 401 || uia.Session == "" || len(uia.Flows) != 1 || uia.Flows[0].Stages[0] != "m.login.password" {
		t.Fatalf("replacing cross-signing keys: %d %s", status, body)
	}
	withAuth := func(pw string) map[string]any {
		b := ak2.upload()
		b["auth"] = map[string]any{"type": "m.login.password", "session": uia.Session, "password": pw,
			"identifier": map[string]string{"type": "m.id.user", "user": alice.c.UserID.String()}}
		return b
	}
	raw, _ = json.Marshal(withAuth("wrong"))
	status, code, body := rawRequest(ctx, t, http.MethodPost, base+"/_matrix/client/v3/keys/device_signing/upload", alice.c.AccessToken, raw)
	if status != 401 || code != "M_FORBIDDEN" {
		t.Errorf("a wrong password: %d %s", status, body)
	}
	if err := call(ctx, alice.c, http.MethodPost, withAuth(password), nil, path...); err != nil {
		t.Fatalf("replacing with the password: %v", err)
	}
	// The same session cannot authorise a second replacement.
	ak3 := newCrossKeys(t, alice.c.UserID)
	b := ak3.upload()
	b["auth"] = withAuth(password)["auth"]
	wantError(t, "a used auth session", call(ctx, alice.c, http.MethodPost, b, nil, path...), 400, "M_UNKNOWN")
	ak = ak2

	// Alice's self-signing key signs her device; her user-signing key signs bob.
	devObj := alice.deviceKeys(t)
	delete(devObj, "signatures")
	bobMaster := map[string]any{}
	for k, v := range bk.master {
		bobMaster[k] = v
	}
	var res struct {
		Failures map[string]map[string]struct {
			ErrCode string `json:"errcode"`
		} `json:"failures"`
	}
	forgedDev := signAs(t, ak.user, "ed25519:"+ak.pubs["self_signing"], ak.privs["user_signing"], devObj)
	err := call(ctx, alice.c, http.MethodPost, map[string]any{
		alice.c.UserID.String(): map[string]any{alice.c.DeviceID.String(): forgedDev, "NOSUCHDEVICE": ak.signWith(t, "self_signing", devObj)},
	}, &res, "keys", "signatures", "upload")
	if err != nil || res.Failures[alice.c.UserID.String()][alice.c.DeviceID.String()].ErrCode != "M_INVALID_SIGNATURE" ||
		res.Failures[alice.c.UserID.String()]["NOSUCHDEVICE"].ErrCode != "M_NOT_FOUND" {
		t.Errorf("forged signatures: %+v %v", res, err)
	}
	res.Failures = nil
	err = call(ctx, alice.c, http.MethodPost, map[string]any{
		alice.c.UserID.String(): map[string]any{alice.c.DeviceID.String(): ak.signWith(t, "self_signing", devObj)},
		bob.c.UserID.String():   map[string]any{bk.pubs["master"]: ak.signWith(t, "user_signing", bobMaster)},
	}, &res, "keys", "signatures", "upload")
	if err != nil || len(res.Failures) != 0 {
		t.Fatalf("signatures: %+v %v", res, err)
	}
	query := func(c *mautrix.Client) *mautrix.RespQueryKeys {
		q, err := c.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.c.UserID: {}, bob.c.UserID: {}}})
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	aliceSSK := id.NewKeyID(id.KeyAlgorithmEd25519, ak.pubs["self_signing"])
	aliceUSK := id.NewKeyID(id.KeyAlgorithmEd25519, ak.pubs["user_signing"])
	for _, viewer := range []*mautrix.Client{alice.c, carol} {
		q := query(viewer)
		dev := q.DeviceKeys[alice.c.UserID][alice.c.DeviceID]
		if dev.Signatures[alice.c.UserID][aliceSSK] == "" {
			t.Errorf("%s: alice's device lacks her self-signing signature: %+v", viewer.UserID, dev.Signatures)
		}
		if q.MasterKeys[alice.c.UserID].Keys == nil || q.SelfSigningKeys[bob.c.UserID].Keys == nil {
			t.Errorf("%s: cross-signing keys missing: %+v", viewer.UserID, q)
		}
		_, sees := q.MasterKeys[bob.c.UserID].Signatures[alice.c.UserID][aliceUSK]
		if sees != (viewer == alice.c) {
			t.Errorf("%s sees alice's signature of bob's master key: %v", viewer.UserID, sees)
		}
		_, ownUSK := q.UserSigningKeys[alice.c.UserID]
		if ownUSK != (viewer == alice.c) || len(q.UserSigningKeys) > 1 {
			t.Errorf("%s: user-signing keys %+v", viewer.UserID, q.UserSigningKeys)
		}
	}
	wantError(t, "a signed object that is not an object", call(ctx, alice.c, http.MethodPost,
		map[string]any{alice.c.UserID.String(): map[string]any{"X": 1}}, nil, "keys", "signatures", "upload"), 400, "M_INVALID_PARAM")
}

// checkDeviceListsAcross: keys uploaded through one gateway reach the other user's
// /sync, /keys/query and /keys/claim on the other gateway, through the device_lists
// writer wherever it runs.
func checkDeviceListsAcross(ctx context.Context, t *testing.T, c streamClients) {
	first, err := c.bob.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	d := newKeyDevice(login(ctx, t, c.alice.HomeserverURL.String(), c.alice.UserID.String(), ""))
	if err := call(ctx, d.c, http.MethodPost, map[string]any{"device_keys": d.deviceKeys(t), "one_time_keys": d.oneTimeKeys(t, "X", 1)},
		nil, "keys", "upload"); err != nil {
		t.Fatal(err)
	}
	syncUntil(ctx, t, c.bob, first.NextBatch, "alice's new device in bob's device lists", func(r *mautrix.RespSync) bool {
		return slices.Contains(r.DeviceLists.Changed, c.alice.UserID)
	})
	q, err := c.bob.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{c.alice.UserID: {d.c.DeviceID}}})
	if err != nil || q.DeviceKeys[c.alice.UserID][d.c.DeviceID].Keys.GetEd25519(d.c.DeviceID).String() != d.pub {
		t.Errorf("bob's query of the new device: %+v %v", q, err)
	}
	claim, err := c.bob.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
		c.alice.UserID: {d.c.DeviceID: id.KeyAlgorithmSignedCurve25519}}})
	if _, ok := claim.OneTimeKeys[c.alice.UserID][d.c.DeviceID]["signed_curve25519:X0"]; err != nil || !ok {
		t.Errorf("bob's claim of the new device's key: %+v %v", claim, err)
	}
}
