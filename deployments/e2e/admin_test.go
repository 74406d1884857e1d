package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"

	"github.com/ganglionhq/ganglion/gateway/client"
)

// TestAdminAPI: `ganglion register-user -admin` makes an admin with the shared secret;
// the admin API answers admins only; it creates, changes, lists and deactivates users,
// resets passwords, and lists rooms; a wrong mac or a used nonce is refused.
func TestAdminAPI(t *testing.T) {
	ctx, d, hs, root := withAdmin(t, deploymentOptions{}, nil)
	bob := newUser(ctx, t, hs.url(), "bob")
	admin := func(c *mautrix.Client, method, path string, body any, want int) gjson.Result {
		t.Helper()
		return adminCall(ctx, t, hs, c, method, path, body, want)
	}
	if v := admin(root, "GET", "v1/server_version", nil, http.StatusOK); v.Get("server_version").Str == "" {
		t.Errorf("server_version: %s", v.Raw)
	}
	admin(bob, "GET", "v1/server_version", nil, http.StatusForbidden)
	admin(bob, "GET", "v2/users", nil, http.StatusForbidden)

	// The registration's checks.
	nonce := admin(bob, "GET", "v1/register", nil, http.StatusOK).Get("nonce").Str
	admin(bob, "POST", "v1/register", map[string]any{"nonce": nonce, "username": "eve", "password": "pw", "admin": true,
		"mac": client.RegistrationMAC("wrong", nonce, "eve", "pw", true, nil)}, http.StatusForbidden)
	good := map[string]any{"nonce": nonce, "username": "dave", "password": "pw", "admin": false,
		"mac": client.RegistrationMAC("s3cret", nonce, "dave", "pw", false, nil)}
	if res := admin(bob, "POST", "v1/register", good, http.StatusOK); res.Get("access_token").Str == "" {
		t.Errorf("shared-secret registration: %s", res.Raw)
	}
	admin(bob, "POST", "v1/register", good, http.StatusBadRequest) // the nonce is used

	carol := "@carol:" + d.serverName
	created := admin(root, "PUT", "v2/users/"+carol, map[string]any{"password": "carolpw", "displayname": "Carol C"}, http.StatusCreated)
	if created.Get("name").Str != carol || created.Get("displayname").Str != "Carol C" || created.Get("admin").Bool() {
		t.Errorf("created: %s", created.Raw)
	}
	carolCli, err := tryLogin(ctx, hs.url(), "carol", "carolpw", "")
	if err != nil {
		t.Fatalf("login of the created user: %v", err)
	}
	if u := admin(root, "PUT", "v2/users/"+carol, map[string]any{"admin": true}, http.StatusOK); !u.Get("admin").Bool() {
		t.Errorf("made admin: %s", u.Raw)
	}
	admin(carolCli, "GET", "v1/server_version", nil, http.StatusOK)
	list := admin(root, "GET", "v2/users?limit=2", nil, http.StatusOK)
	if list.Get("total").Int() != 4 || len(list.Get("users").Array()) != 2 || list.Get("next_token").Str != "2" {
		t.Errorf("users: %s", list.Raw)
	}
	if found := admin(root, "GET", "v2/users?name=carol", nil, http.StatusOK); found.Get("total").Int() != 1 {
		t.Errorf("users named carol: %s", found.Raw)
	}
	admin(root, "POST", "v1/reset_password/"+carol, map[string]any{"new_password": "newpw"}, http.StatusOK)
	if _, err := carolCli.Whoami(ctx); !errors.Is(err, mautrix.MUnknownToken) {
		t.Errorf("carol's device after the reset: %v", err)
	}
	if _, err := tryLogin(ctx, hs.url(), "carol", "newpw", ""); err != nil {
		t.Errorf("login with the reset password: %v", err)
	}

	room := createRoomWith(ctx, t, bob, "public_chat")
	if j := admin(root, "GET", "v1/users/"+bob.UserID.String()+"/joined_rooms", nil, http.StatusOK); j.Get("joined_rooms.0").Str != room.String() {
		t.Errorf("bob's rooms: %s", j.Raw)
	}
	if rooms := admin(root, "GET", "v1/rooms", nil, http.StatusOK); rooms.Get("total_rooms").Int() != 1 || rooms.Get("rooms.0.joined_members").Int() != 1 {
		t.Errorf("rooms: %s", rooms.Raw)
	}
	if info := admin(root, "GET", "v1/rooms/"+room.String(), nil, http.StatusOK); info.Get("creator").Str != bob.UserID.String() {
		t.Errorf("room: %s", info.Raw)
	}
	admin(root, "GET", "v1/rooms/!nosuch:"+d.serverName, nil, http.StatusNotFound)

	if u := admin(root, "PUT", "v2/users/"+bob.UserID.String(), map[string]any{"deactivated": true}, http.StatusOK); !u.Get("deactivated").Bool() {
		t.Errorf("deactivated: %s", u.Raw)
	}
	if _, err := tryLogin(ctx, hs.url(), "bob", password, ""); err == nil {
		t.Error("a deactivated user logged in")
	}
	admin(root, "GET", "v2/users/@nobody:"+d.serverName, nil, http.StatusNotFound)
	admin(root, "GET", "v2/users/@remote:elsewhere.example", nil, http.StatusBadRequest)
}

// withAdmin starts a process of a deployment of o with a registration shared secret,
// the configuration keys extra, and a server admin, root, made by ganglion
// register-user.
func withAdmin(t *testing.T, o deploymentOptions, extra map[string]any) (context.Context, *deployment, *process, *mautrix.Client) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	t.Cleanup(cancel)
	d := newDeployment(t, o)
	d.shared["registration_shared_secret"] = "s3cret"
	maps.Copy(d.shared, extra)
	hs := d.startMain()
	out, err := exec.CommandContext(ctx, ganglionBin, "register-user", "-c", hs.files[0], "-u", "root", "-p", "rootpw", "-admin").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "registered @root:"+d.serverName) {
		t.Fatalf("register-user: %v %s", err, out)
	}
	root, err := tryLogin(ctx, hs.url(), "root", "rootpw", "")
	if err != nil {
		t.Fatal(err)
	}
	return ctx, d, hs, root
}

// adminCall calls the admin API at path as c and fails the test unless it answers want.
func adminCall(ctx context.Context, t *testing.T, hs *process, c *mautrix.Client, method, path string, body any, want int) gjson.Result {
	t.Helper()
	var raw []byte
	if body != nil {
		raw, _ = json.Marshal(body)
	}
	status, code, text := rawRequest(ctx, t, method, hs.url()+"/_synapse/admin/"+path, c.AccessToken, raw)
	if status != want {
		t.Fatalf("%s %s: %d %s %s, want %d", method, path, status, code, text, want)
	}
	return gjson.Parse(text)
}
