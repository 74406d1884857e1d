package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestChangePassword: the password changes under user-interactive auth with the old
// one; the other devices are logged out (their pushers with them) unless
// logout_devices is false; the old password stops working and the new one works.
func TestChangePassword(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	other, err := tryLogin(ctx, base, alice.UserID.Localpart(), password, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := other.SetPusher(ctx, httpPusher("app", "other-device", false)); err != nil {
		t.Fatal(err)
	}
	url := base + "/_matrix/client/v3/account/password"
	status, _, u := uiaRequest(ctx, t, alice, http.MethodPost, url, map[string]any{"new_password": "new-pw"})
	if status != http.StatusUnauthorized || u.Session == "" || len(u.Flows) != 1 || u.Flows[0].Stages[0] != "m.login.password" {
		t.Fatalf("without auth: %d %+v", status, u)
	}
	if status, code, _ := uiaRequest(ctx, t, alice, http.MethodPost, url, map[string]any{"new_password": "new-pw",
		"auth": passwordAuth(alice.UserID.Localpart(), "wrong", u.Session)}); status != http.StatusUnauthorized || code != "M_FORBIDDEN" {
		t.Errorf("with a wrong password: %d %s", status, code)
	}
	if status, code, _ := uiaRequest(ctx, t, alice, http.MethodPost, url, map[string]any{"new_password": "new-pw",
		"auth": passwordAuth(alice.UserID.Localpart(), password, u.Session)}); status != http.StatusOK {
		t.Fatalf("change: %d %s", status, code)
	}
	if _, err := other.Whoami(ctx); !errors.Is(err, mautrix.MUnknownToken) {
		t.Errorf("another device after the change: %v, want M_UNKNOWN_TOKEN", err)
	}
	if _, err := alice.Whoami(ctx); err != nil {
		t.Errorf("the device that changed the password: %v", err)
	}
	if ps, err := alice.GetPushers(ctx); err != nil || len(ps.Pushers) != 0 {
		t.Errorf("pushers after the change: %+v %v, want the other device's gone", ps, err)
	}
	if _, err := tryLogin(ctx, base, alice.UserID.Localpart(), password, ""); !errors.Is(err, mautrix.MForbidden) {
		t.Errorf("login with the old password: %v", err)
	}
	kept, err := tryLogin(ctx, base, alice.UserID.Localpart(), "new-pw", "")
	if err != nil {
		t.Fatalf("login with the new password: %v", err)
	}
	// Without logging out the others.
	status, _, u = uiaRequest(ctx, t, alice, http.MethodPost, url, map[string]any{"new_password": "newer", "logout_devices": false})
	if status, code, _ := uiaRequest(ctx, t, alice, http.MethodPost, url, map[string]any{"new_password": "newer", "logout_devices": false,
		"auth": passwordAuth(alice.UserID.Localpart(), "new-pw", u.Session)}); status != http.StatusOK {
		t.Fatalf("change keeping devices: %d %s", status, code)
	}
	if _, err := kept.Whoami(ctx); err != nil {
		t.Errorf("another device with logout_devices false: %v", err)
	}
	caps, err := alice.Capabilities(ctx)
	if err != nil || caps.ChangePassword == nil || !caps.ChangePassword.Enabled {
		t.Errorf("capabilities: %+v %v, want m.change_password enabled", caps, err)
	}
}

// TestDeactivate: deactivation asks for the password; afterwards the user has left
// their rooms and rejected their invites, their profile is empty, no device works, the
// password does not log in, and the user ID stays taken.
func TestDeactivate(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	if err := alice.SetDisplayName(ctx, "Alice A"); err != nil {
		t.Fatal(err)
	}
	joined := createRoomWith(ctx, t, bob, "private_chat", alice)
	invited := createRoomWith(ctx, t, bob, "private_chat")
	if _, err := bob.InviteUser(ctx, invited, &mautrix.ReqInviteUser{UserID: alice.UserID}); err != nil {
		t.Fatal(err)
	}
	url := base + "/_matrix/client/v3/account/deactivate"
	status, _, u := uiaRequest(ctx, t, alice, http.MethodPost, url, map[string]any{})
	if status != http.StatusUnauthorized || u.Session == "" {
		t.Fatalf("without auth: %d %+v", status, u)
	}
	if status, code, _ := uiaRequest(ctx, t, alice, http.MethodPost, url, map[string]any{"auth": passwordAuth(alice.UserID.Localpart(), "wrong", u.Session)}); status != http.StatusUnauthorized || code != "M_FORBIDDEN" {
		t.Errorf("with a wrong password: %d %s", status, code)
	}
	raw, _ := json.Marshal(map[string]any{"auth": passwordAuth(alice.UserID.Localpart(), password, u.Session)})
	status, code, text := rawRequest(ctx, t, http.MethodPost, url, alice.AccessToken, raw)
	var body map[string]string
	if err := json.Unmarshal([]byte(text), &body); err != nil || status != http.StatusOK || body["id_server_unbind_result"] != "no-support" {
		t.Fatalf("deactivate: %d %s %s", status, code, text)
	}
	if _, err := alice.Whoami(ctx); !errors.Is(err, mautrix.MUnknownToken) {
		t.Errorf("the token after deactivation: %v", err)
	}
	if _, err := tryLogin(ctx, base, alice.UserID.Localpart(), password, ""); !errors.Is(err, mautrix.MForbidden) {
		t.Errorf("login after deactivation: %v, want M_FORBIDDEN", err)
	}
	for _, room := range []id.RoomID{joined, invited} {
		var member struct {
			Membership string `json:"membership"`
		}
		if err := bob.StateEvent(ctx, room, event.StateMember, alice.UserID.String(), &member); err != nil || member.Membership != "leave" {
			t.Errorf("alice's membership in %s: %q %v, want leave", room, member.Membership, err)
		}
	}
	if p, err := bob.GetProfile(ctx, alice.UserID); err != nil || p.DisplayName != "" {
		t.Errorf("the profile after deactivation: %+v %v", p, err)
	}
	reg, _ := mautrix.NewClient(base, "", "")
	_, err := reg.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: alice.UserID.Localpart(), Password: "again"})
	wantError(t, "registering the deactivated user's ID", err, http.StatusBadRequest, "M_USER_IN_USE")
}

// TestRefreshTokens: a login asking for a refresh token gets an access token that
// expires (soft logout) and a refresh token that POST /refresh exchanges, once, for a
// new pair of the same device, so the device's transaction IDs still deduplicate.
func TestRefreshTokens(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{})
	d.shared["refreshable_access_token_lifetime"] = "1s"
	hs := d.startMain()
	alice := newUser(ctx, t, hs.url(), "alice")
	room := createRoomWith(ctx, t, alice, "private_chat")

	type tokens struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
		ExpiresInMS  int64  `json:"expires_in_ms"`
		DeviceID     string `json:"device_id"`
	}
	post := func(path, token string, body any) (int, string, tokens) {
		raw, _ := json.Marshal(body)
		status, code, text := rawRequest(ctx, t, http.MethodPost, hs.url()+"/_matrix/client/v3/"+path, token, raw)
		var out tokens
		_ = json.Unmarshal([]byte(text), &out)
		return status, code, out
	}
	status, code, first := post("login", "", map[string]any{"type": "m.login.password", "refresh_token": true,
		"identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": password})
	if status != http.StatusOK || first.RefreshToken == "" || first.ExpiresInMS != 1000 {
		t.Fatalf("login with refresh_token: %d %s %+v", status, code, first)
	}
	device := at(alice, hs.url())
	device.AccessToken, device.DeviceID = first.AccessToken, id.DeviceID(first.DeviceID)
	sent, err := device.SendMessageEvent(ctx, room, event.EventMessage, textContent("once"), mautrix.ReqSendEvent{TransactionID: "txn1"})
	if err != nil {
		t.Fatal(err)
	}

	status, code, second := post("refresh", "", map[string]any{"refresh_token": first.RefreshToken})
	if status != http.StatusOK || second.AccessToken == "" || second.RefreshToken == "" || second.RefreshToken == first.RefreshToken || second.ExpiresInMS != 1000 {
		t.Fatalf("refresh: %d %s %+v", status, code, second)
	}
	if status, code, _ := post("refresh", "", map[string]any{"refresh_token": first.RefreshToken}); status != http.StatusUnauthorized || code != "M_UNKNOWN_TOKEN" {
		t.Errorf("the used refresh token again: %d %s", status, code)
	}
	if _, err := device.Whoami(ctx); !errors.Is(err, mautrix.MUnknownToken) {
		t.Errorf("the access token that was refreshed: %v", err)
	}
	device.AccessToken = second.AccessToken
	again, err := device.SendMessageEvent(ctx, room, event.EventMessage, textContent("once"), mautrix.ReqSendEvent{TransactionID: "txn1"})
	if err != nil || again.EventID != sent.EventID {
		t.Errorf("the same transaction after the refresh: %v %v, want %s", again, err, sent.EventID)
	}
	// The access token expires: the client is told to refresh (soft logout).
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, code, text := rawRequest(ctx, t, http.MethodGet, hs.url()+"/_matrix/client/v3/account/whoami", second.AccessToken, nil)
		if status == http.StatusUnauthorized {
			if code != "M_UNKNOWN_TOKEN" || !strings.Contains(text, `"soft_logout":true`) {
				t.Errorf("an expired access token: %d %s", status, text)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the access token still works after its lifetime: %d %s", status, code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if status, code, third := post("refresh", "", map[string]any{"refresh_token": second.RefreshToken}); status != http.StatusOK || third.AccessToken == "" {
		t.Errorf("refresh after the access token expired: %d %s", status, code)
	}
	if status, code, _ := post("refresh", "", map[string]any{"refresh_token": "syr_nonsense"}); status != http.StatusUnauthorized || code != "M_UNKNOWN_TOKEN" {
		t.Errorf("an unknown refresh token: %d %s", status, code)
	}
}

// Deactivation with erase: the user's events are shown redacted to whoever was not in
// the room when they were sent, in /messages and /sync, and whole to those who were.
func TestErasure(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	carol := newUser(ctx, t, base, "carol")
	room := createRoomWith(ctx, t, bob, "public_chat", alice)
	secret, err := sendText(ctx, alice, room, "e1", "my secret")
	if err != nil {
		t.Fatal(err)
	}
	url := base + "/_matrix/client/v3/account/deactivate"
	_, _, u := uiaRequest(ctx, t, alice, http.MethodPost, url, map[string]any{})
	raw, _ := json.Marshal(map[string]any{"auth": passwordAuth(alice.UserID.Localpart(), password, u.Session), "erase": true})
	if status, code, text := rawRequest(ctx, t, http.MethodPost, url, alice.AccessToken, raw); status != http.StatusOK {
		t.Fatalf("deactivate with erase: %d %s %s", status, code, text)
	}
	if _, err := carol.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	bodyOf := func(evs []*event.Event) (string, bool) {
		for _, ev := range evs {
			if ev.ID == secret {
				b, _ := ev.Content.Raw["body"].(string)
				return b, true
			}
		}
		return "", false
	}
	// The erasure shows within the gateway's cache of erased users (erasedTTL).
	deadline := time.Now().Add(15 * time.Second)
	for {
		evs, err := messagesBackwards(ctx, carol, room)
		if err != nil {
			t.Fatal(err)
		}
		body, found := bodyOf(evs)
		if found && body == "" {
			break
		}
		if !found || time.Now().After(deadline) {
			t.Fatalf("carol, who joined after the erasure, reads the erased message: found %v, body %q", found, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	evs, err := messagesBackwards(ctx, bob, room)
	if err != nil {
		t.Fatal(err)
	}
	if body, _ := bodyOf(evs); body != "my secret" {
		t.Errorf("bob, who was in the room, reads %q", body)
	}
	sync, err := carol.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	if body, found := bodyOf(sync.Rooms.Join[room].Timeline.Events); found && body != "" {
		t.Errorf("carol's sync shows the erased message: %q", body)
	}
	// Search finds the message by its words, and shows it as /messages does.
	for _, c := range []struct {
		who        *mautrix.Client
		body, memb string
	}{{carol, "", "leave"}, {bob, "my secret", "join"}} {
		res, err := c.who.Search(ctx, &mautrix.ReqSearch{SearchTerm: "secret"})
		if err != nil {
			t.Fatal(err)
		}
		var results []*event.Event
		for _, r := range res.Results {
			results = append(results, r.Event)
		}
		body, found := bodyOf(results)
		if !found || body != c.body {
			t.Errorf("%s's search: found %v, body %q, want %q", c.who.UserID, found, body, c.body)
		}
		for _, ev := range results {
			if ev.ID == secret && string(ev.Unsigned.Membership) != c.memb {
				t.Errorf("%s's search result's membership: %q, want %q", c.who.UserID, ev.Unsigned.Membership, c.memb)
			}
		}
	}
}
