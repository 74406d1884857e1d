package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// uiaBody is the 401 answer of a request under user-interactive auth.
type uiaBody struct {
	Flows []struct {
		Stages []string `json:"stages"`
	} `json:"flows"`
	Session   string   `json:"session"`
	Completed []string `json:"completed"`
	ErrCode   string   `json:"errcode"`
}

// passwordAuth is the m.login.password stage for user.
func passwordAuth(user, pw, session string) map[string]any {
	return map[string]any{"type": "m.login.password", "session": session, "password": pw,
		"identifier": map[string]any{"type": "m.id.user", "user": user}}
}

// uiaRequest sends a request under user-interactive auth with body (nil for none) and
// returns the status and, for a 401, the UIA answer.
func uiaRequest(ctx context.Context, t *testing.T, c *mautrix.Client, method, url string, body any) (int, string, uiaBody) {
	t.Helper()
	var raw []byte
	if body != nil {
		raw, _ = json.Marshal(body)
	}
	status, code, text := rawRequest(ctx, t, method, url, c.AccessToken, raw)
	var u uiaBody
	if status == http.StatusUnauthorized {
		if err := json.Unmarshal([]byte(text), &u); err != nil {
			t.Fatalf("%s %s: 401 %s", method, url, text)
		}
	}
	return status, code, u
}

// TestDevices: a user lists, reads and renames their devices and deletes them under
// user-interactive auth with their password; a deleted device's token is refused at
// once; someone else's device is never theirs; every error has the spec's status.
func TestDevices(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	phone := login(ctx, t, base, alice.UserID.Localpart(), "")
	laptop := login(ctx, t, base, alice.UserID.Localpart(), "")
	bob := newUser(ctx, t, base, "bob")

	// The list: every device of alice's (the registration's, three logins), never bob's.
	list, err := alice.GetDevicesInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[id.DeviceID]mautrix.RespDeviceInfo{}
	for _, d := range list.Devices {
		seen[d.DeviceID] = d
	}
	if len(list.Devices) != 4 || seen[phone.DeviceID].DeviceID == "" || seen[bob.DeviceID].DeviceID != "" {
		t.Fatalf("alice's devices: %+v", list.Devices)
	}
	if d := seen[alice.DeviceID]; d.LastSeenTS == 0 || d.LastSeenIP != "127.0.0.1" {
		t.Errorf("a device in use: last seen %d from %q", d.LastSeenTS, d.LastSeenIP)
	}
	// Synapse's fields, null where unknown, and the owner.
	_, _, text := rawRequest(ctx, t, http.MethodGet, alice.BuildClientURL("v3", "devices", phone.DeviceID), alice.AccessToken, nil)
	var raw map[string]any
	if err := json.Unmarshal([]byte(text), &raw); err != nil || raw["user_id"] != alice.UserID.String() ||
		raw["device_id"] != phone.DeviceID.String() || raw["display_name"] != nil {
		t.Errorf("GET a device: %s", text)
	}

	// Rename.
	if err := alice.SetDeviceInfo(ctx, phone.DeviceID, &mautrix.ReqDeviceInfo{DisplayName: "Alice's phone"}); err != nil {
		t.Fatal(err)
	}
	if d, err := alice.GetDeviceInfo(ctx, phone.DeviceID); err != nil || d.DisplayName != "Alice's phone" {
		t.Errorf("renamed device: %+v, %v", d, err)
	}
	// Leaving display_name out keeps it.
	if s, c, _ := rawRequest(ctx, t, http.MethodPut, alice.BuildClientURL("v3", "devices", phone.DeviceID), alice.AccessToken, []byte(`{}`)); s != 200 {
		t.Errorf("PUT without a name: %d %s", s, c)
	}
	if d, _ := alice.GetDeviceInfo(ctx, phone.DeviceID); d.DisplayName != "Alice's phone" {
		t.Errorf("name after a PUT without one: %q", d.DisplayName)
	}

	// Errors of reads and renames.
	_, err = alice.GetDeviceInfo(ctx, "NOSUCHDEVICE")
	wantError(t, "GET an unknown device", err, 404, "M_NOT_FOUND")
	_, err = alice.GetDeviceInfo(ctx, bob.DeviceID)
	wantError(t, "GET bob's device", err, 404, "M_NOT_FOUND")
	err = alice.SetDeviceInfo(ctx, "NOSUCHDEVICE", &mautrix.ReqDeviceInfo{DisplayName: "x"})
	wantError(t, "PUT an unknown device", err, 404, "M_NOT_FOUND")
	err = alice.SetDeviceInfo(ctx, bob.DeviceID, &mautrix.ReqDeviceInfo{DisplayName: "x"})
	wantError(t, "PUT bob's device", err, 404, "M_NOT_FOUND")
	if d, _ := bob.GetDeviceInfo(ctx, bob.DeviceID); d.DisplayName == "x" {
		t.Error("alice renamed bob's device")
	}
	err = alice.SetDeviceInfo(ctx, phone.DeviceID, &mautrix.ReqDeviceInfo{DisplayName: strings.Repeat("é", 101)})
	wantError(t, "a display name over 100 characters", err, 400, "M_TOO_LARGE")
	devURL := alice.BuildClientURL("v3", "devices", phone.DeviceID)
	for _, tc := range []struct {
		what, body string
		status     int
		code       string
	}{
		{"not JSON", `{"display_name":`, 400, "M_NOT_JSON"},
		{"a name that is not a string", `{"display_name":5}`, 400, "M_BAD_JSON"},
		{"not an object", `["x"]`, 400, "M_BAD_JSON"},
		{"too large", `{"display_name":"` + strings.Repeat("x", 70000) + `"}`, 413, "M_TOO_LARGE"},
	} {
		if s, c, body := rawRequest(ctx, t, http.MethodPut, devURL, alice.AccessToken, []byte(tc.body)); s != tc.status || c != tc.code {
			t.Errorf("PUT %s: %d %s (%s), want %d %s", tc.what, s, c, body, tc.status, tc.code)
		}
	}
	if s, c, _ := rawRequest(ctx, t, http.MethodGet, alice.BuildClientURL("v3", "devices"), "", nil); s != 401 || c != "M_MISSING_TOKEN" {
		t.Errorf("GET /devices without a token: %d %s", s, c)
	}

	// DELETE /devices/{id}: first the flows and a session, then a wrong password
	// (401 again, same session, M_FORBIDDEN), then the right one.
	delURL := alice.BuildClientURL("v3", "devices", phone.DeviceID)
	s, _, u := uiaRequest(ctx, t, alice, http.MethodDelete, delURL, nil)
	if s != 401 || u.Session == "" || len(u.Flows) != 1 || len(u.Flows[0].Stages) != 1 || u.Flows[0].Stages[0] != "m.login.password" {
		t.Fatalf("DELETE without auth: %d %+v", s, u)
	}
	s, _, wrong := uiaRequest(ctx, t, alice, http.MethodDelete, delURL, map[string]any{"auth": passwordAuth(alice.UserID.Localpart(), "wrong", u.Session)})
	if s != 401 || wrong.ErrCode != "M_FORBIDDEN" || wrong.Session != u.Session || len(wrong.Completed) != 0 {
		t.Errorf("DELETE with a wrong password: %d %+v", s, wrong)
	}
	if s, c, _ := uiaRequest(ctx, t, alice, http.MethodDelete, delURL, map[string]any{"auth": passwordAuth(bob.UserID.String(), password, u.Session)}); s != 403 || c != "M_FORBIDDEN" {
		t.Errorf("DELETE authenticated as bob: %d %s", s, c)
	}
	if s, c, _ := uiaRequest(ctx, t, alice, http.MethodDelete, delURL, map[string]any{"auth": passwordAuth(alice.UserID.Localpart(), password, "nosuchsession")}); s != 400 || c != "M_UNKNOWN" {
		t.Errorf("DELETE with an unknown session: %d %s", s, c)
	}
	// A session is bound to its request: it authorises no other deletion.
	other := alice.BuildClientURL("v3", "devices", laptop.DeviceID)
	if s, c, _ := uiaRequest(ctx, t, alice, http.MethodDelete, other, map[string]any{"auth": passwordAuth(alice.UserID.Localpart(), password, u.Session)}); s != 400 || c != "M_UNKNOWN" {
		t.Errorf("another device's deletion in the session: %d %s", s, c)
	}
	if s, c, _ := uiaRequest(ctx, t, alice, http.MethodDelete, delURL, map[string]any{"auth": map[string]any{"type": "m.login.recaptcha", "session": u.Session}}); s != 401 || c != "M_UNRECOGNIZED" {
		t.Errorf("DELETE with a stage not offered: %d %s", s, c)
	}
	if s, c, _ := uiaRequest(ctx, t, alice, http.MethodDelete, delURL, `{"auth":`); s != 400 || c != "M_BAD_JSON" {
		// (a JSON string, not an object)
		t.Errorf("DELETE with a body that is not an object: %d %s", s, c)
	}
	if s, c, _ := rawRequest(ctx, t, http.MethodDelete, delURL, alice.AccessToken, []byte(`{"auth":`)); s != 400 || c != "M_NOT_JSON" {
		t.Errorf("DELETE with a body that is not JSON: %d %s", s, c)
	}
	if _, err := phone.Whoami(ctx); err != nil {
		t.Fatalf("the phone's token before its deletion: %v", err)
	}
	if s, c, _ := uiaRequest(ctx, t, alice, http.MethodDelete, delURL, map[string]any{"auth": passwordAuth(alice.UserID.Localpart(), password, u.Session)}); s != 200 {
		t.Fatalf("DELETE with the password: %d %s", s, c)
	}
	_, err = phone.Whoami(ctx)
	wantError(t, "the deleted device's token", err, 401, "M_UNKNOWN_TOKEN")
	_, err = alice.GetDeviceInfo(ctx, phone.DeviceID)
	wantError(t, "GET the deleted device", err, 404, "M_NOT_FOUND")
	// The session authorised that one deletion.
	if s, c, _ := uiaRequest(ctx, t, alice, http.MethodDelete, delURL, map[string]any{"auth": passwordAuth(alice.UserID.Localpart(), password, u.Session)}); s != 400 || c != "M_UNKNOWN" {
		t.Errorf("the session used again: %d %s", s, c)
	}

	// POST /delete_devices, through mautrix; unknown devices and bob's are skipped.
	bulk := &mautrix.ReqDeleteDevices[any]{Devices: []id.DeviceID{laptop.DeviceID, "NOSUCHDEVICE", bob.DeviceID}}
	err = alice.DeleteDevices(ctx, bulk)
	var he mautrix.HTTPError
	if !errors.As(err, &he) || he.Response == nil || he.Response.StatusCode != 401 {
		t.Fatalf("delete_devices without auth: %v", err)
	}
	var first uiaBody
	_ = json.Unmarshal([]byte(he.ResponseBody), &first)
	bulk.Auth = mautrix.ReqUIAuthLogin{BaseAuthData: mautrix.BaseAuthData{Type: mautrix.AuthTypePassword, Session: first.Session},
		User: alice.UserID.String(), Password: password}
	if err := alice.DeleteDevices(ctx, bulk); err != nil {
		t.Fatalf("delete_devices with the password: %v", err)
	}
	_, err = laptop.Whoami(ctx)
	wantError(t, "a bulk-deleted device's token", err, 401, "M_UNKNOWN_TOKEN")
	if _, err := bob.Whoami(ctx); err != nil {
		t.Errorf("bob's device after alice named it: %v", err)
	}
	list, _ = alice.GetDevicesInfo(ctx)
	if len(list.Devices) != 2 {
		t.Errorf("alice's devices after the deletions: %+v", list.Devices)
	}
	delAll := alice.BuildClientURL("v3", "delete_devices")
	if s, c, _ := uiaRequest(ctx, t, alice, http.MethodPost, delAll, map[string]any{}); s != 400 || c != "M_BAD_JSON" {
		t.Errorf("delete_devices without devices: %d %s", s, c)
	}
	if s, c, _ := uiaRequest(ctx, t, alice, http.MethodPost, delAll, map[string]any{"devices": "X"}); s != 400 || c != "M_BAD_JSON" {
		t.Errorf("delete_devices with devices not a list: %d %s", s, c)
	}

	// Logging out deletes the device too.
	if _, err := alice.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	list, err = bob.GetDevicesInfo(ctx)
	if err != nil || len(list.Devices) != 2 {
		t.Errorf("bob's devices: %+v, %v", list, err)
	}
}
