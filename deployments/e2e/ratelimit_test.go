package e2e

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// wantLimited fails the test unless err is Synapse's 429: M_LIMIT_EXCEEDED with a
// positive retry_after_ms and a Retry-After header.
func wantLimited(t *testing.T, what string, err error) {
	t.Helper()
	var he mautrix.HTTPError
	if !errors.As(err, &he) || he.Response == nil {
		t.Fatalf("%s: got %v, want 429 M_LIMIT_EXCEEDED", what, err)
	}
	code, retryMS := "", 0.0
	if re := he.RespError; re != nil {
		code = re.ErrCode
		retryMS, _ = re.ExtraData["retry_after_ms"].(float64)
	}
	retry, _ := strconv.Atoi(he.Response.Header.Get("Retry-After"))
	if he.Response.StatusCode != http.StatusTooManyRequests || code != "M_LIMIT_EXCEEDED" || retryMS <= 0 || retry <= 0 {
		t.Fatalf("%s: got HTTP %d %s (retry_after_ms %v), Retry-After %q; want 429 M_LIMIT_EXCEEDED with retry_after_ms and Retry-After",
			what, he.Response.StatusCode, code, retryMS, he.Response.Header.Get("Retry-After"))
	}
}

// TestRateLimits drives each rc_* limit past its burst. The rates are so slow that no
// bucket refills during the test.
func TestRateLimits(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	slow := func(burst int) map[string]any { return map[string]any{"per_second": 0.0001, "burst_count": burst} }
	d := newDeployment(t, deploymentOptions{rateLimits: map[string]any{
		"rc_registration": slow(3),
		"rc_message":      slow(3),
		"rc_joins":        map[string]any{"local": slow(2)},
		"rc_invites":      map[string]any{"per_room": slow(2), "per_user": slow(1), "per_issuer": slow(4)},
		"rc_login":        map[string]any{"address": slow(7), "account": slow(2), "failed_attempts": slow(2)},
	}})
	hs := d.startMain()

	// rc_registration, by address: three accounts, then 429.
	register := func(localpart string) (*mautrix.Client, error) {
		c, err := mautrix.NewClient(hs.url(), "", "")
		if err != nil {
			t.Fatal(err)
		}
		res, err := c.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: localpart, Password: password})
		if err != nil {
			return nil, err
		}
		c.SetCredentials(res.UserID, res.AccessToken)
		return c, nil
	}
	var users []*mautrix.Client
	for _, name := range []string{"alice", "bob", "carol"} {
		c, err := register(name)
		if err != nil {
			t.Fatalf("register %s: %v", name, err)
		}
		users = append(users, c)
	}
	alice, bob := users[0], users[1]
	_, err := register("dave")
	wantLimited(t, "fourth registration", err)

	// rc_message, by sender.
	createRoom := func(c *mautrix.Client, preset string) id.RoomID {
		resp, err := c.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: preset})
		if err != nil {
			t.Fatalf("createRoom: %v", err)
		}
		return resp.RoomID
	}
	roomA := createRoom(alice, "private_chat")
	for i := range 3 {
		if _, err := sendText(ctx, alice, roomA, "t"+strconv.Itoa(i), "hello"); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	_, err = sendText(ctx, alice, roomA, "t3", "hello")
	wantLimited(t, "fourth message", err)

	// rc_joins.local, by joining user.
	j := []id.RoomID{createRoom(alice, "public_chat"), createRoom(alice, "public_chat"), createRoom(alice, "public_chat")}
	for _, room := range j[:2] {
		if _, err := bob.JoinRoomByID(ctx, room); err != nil {
			t.Fatalf("join: %v", err)
		}
	}
	_, err = bob.JoinRoomByID(ctx, j[2])
	wantLimited(t, "third join", err)

	// rc_invites: per room, per invitee, per inviter.
	invite := func(room id.RoomID, user string) error {
		_, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: id.UserID("@" + user + ":" + d.serverName)})
		return err
	}
	for _, u := range []string{"x1", "x2"} {
		if err := invite(roomA, u); err != nil {
			t.Fatalf("invite %s: %v", u, err)
		}
	}
	wantLimited(t, "third invite into one room", invite(roomA, "x3"))
	if err := invite(j[0], "y"); err != nil {
		t.Fatalf("invite y: %v", err)
	}
	wantLimited(t, "second invite of one user", invite(j[1], "y"))
	if err := invite(j[2], "z"); err != nil { // alice's fourth invite
		t.Fatalf("invite z: %v", err)
	}
	wantLimited(t, "fifth invite by one user", invite(j[1], "w"))

	// rc_login: account (successful logins), failed_attempts (by account), address.
	login := func(user, pw string) error {
		c, err := mautrix.NewClient(hs.url(), "", "")
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Login(ctx, &mautrix.ReqLogin{
			Type:       mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user},
			Password:   pw,
		})
		return err
	}
	for i := range 2 {
		if err := login("alice", password); err != nil {
			t.Fatalf("login %d: %v", i, err)
		}
	}
	wantLimited(t, "third login of one account", login("alice", password))
	for range 2 {
		wantError(t, "wrong password", login("bob", "wrong"), http.StatusForbidden, "M_FORBIDDEN")
	}
	wantLimited(t, "login after two failures", login("bob", password))
	// Six attempts from this address so far; the seventh passes, the eighth does not.
	if err := login("carol", password); err != nil {
		t.Fatalf("carol's login: %v", err)
	}
	wantLimited(t, "eighth login from one address", login("carol", password))
}
