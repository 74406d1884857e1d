package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"

	"github.com/ganglionhq/ganglion/persist"
)

// TestReplayRebuildsEveryTable is DESIGN invariant 4 with real processes: users
// register and log in devices (one with a refresh token), upload and delete media,
// report content, delete a room, get an OpenID token, set profiles, pushers, aliases,
// filters, account data, tags, push rules, receipts, presence and end-to-end keys (a
// backup included), send a to-device message, forget a room and log out; the process
// stops, the database is dropped and made again, `ganglion replay` rebuilds it from the
// log, and every table equals the original row for row. The restarted process then
// takes the old access tokens.
func TestReplayRebuildsEveryTable(t *testing.T) {
	ctx, d, hs, root := withAdmin(t, deploymentOptions{}, nil)
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")
	carol := newUser(ctx, t, hs.url(), "carol")
	anon, err := mautrix.NewClient(hs.url(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	// A generated localpart, and an account that registered without logging in.
	generated, err := anon.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Password: password})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "dave", Password: password, InhibitLogin: true}); err != nil {
		t.Fatal(err)
	}

	// Devices: a second device of alice, a login as a known device (its old token
	// stops working), a logout, and carol's logout of everything.
	replaced := login(ctx, t, hs.url(), "alice", "")
	alice2 := login(ctx, t, hs.url(), "alice", replaced.DeviceID.String())
	bobGone := login(ctx, t, hs.url(), "bob", "")
	if _, err := bobGone.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	carolGone := login(ctx, t, hs.url(), "carol", "")
	if _, err := carolGone.LogoutAll(ctx); err != nil {
		t.Fatal(err)
	}
	revoked := []*mautrix.Client{replaced, bobGone, carolGone, carol}
	// A refreshable token of bob's, refreshed once: its expiry and refresh token.
	raw, _ := json.Marshal(map[string]any{"type": "m.login.password", "refresh_token": true,
		"identifier": map[string]any{"type": "m.id.user", "user": "bob"}, "password": password})
	status, _, text := rawRequest(ctx, t, http.MethodPost, hs.url()+"/_matrix/client/v3/login", "", raw)
	var refreshable struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.Unmarshal([]byte(text), &refreshable); err != nil || status != http.StatusOK {
		t.Fatalf("login with a refresh token: %d %s", status, text)
	}
	raw, _ = json.Marshal(map[string]string{"refresh_token": refreshable.RefreshToken})
	if status, _, text := rawRequest(ctx, t, http.MethodPost, hs.url()+"/_matrix/client/v3/refresh", "", raw); status != http.StatusOK {
		t.Fatalf("refresh: %d %s", status, text)
	}

	// Profiles.
	if err := alice.SetDisplayName(ctx, "Alice A."); err != nil {
		t.Fatal(err)
	}
	if err := bob.SetAvatarURL(ctx, id.ContentURI{Homeserver: d.serverName, FileID: "bob"}); err != nil {
		t.Fatal(err)
	}

	// Pushers: bob takes a pushkey of alice's; alice's second device sets one; alice
	// deletes one.
	for _, set := range []struct {
		c   *mautrix.Client
		key string
	}{{alice, "k1"}, {alice, "k2"}, {bob, "k1"}, {alice2, "k3"}} {
		if err := set.c.SetPusher(ctx, httpPusher("app", set.key, false)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.MakeRequest(ctx, http.MethodPost, alice.BuildClientURL("v3", "pushers", "set"),
		map[string]any{"kind": nil, "app_id": "app", "pushkey": "k2"}, nil); err != nil {
		t.Fatal(err)
	}

	// Rooms and aliases: one claimed by createRoom, one added and one deleted, one
	// released by a refused create.
	lobby, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "lobby", Visibility: "public"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, lobby.RoomID); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.CreateAlias(ctx, id.RoomAlias("#hall:"+d.serverName), lobby.RoomID); err != nil {
		t.Fatal(err)
	}
	// A thread reply and a redacted one: relations, one gone with its redaction. Alice
	// sends them: her push rules change later, and a rebuild evaluates with the rules
	// stored at its end, so only bob's notifications are rebuilt the same.
	threadRoot, err := alice.SendText(ctx, lobby.RoomID, "a thread")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		reply, err := alice.SendMessageEvent(ctx, lobby.RoomID, event.EventMessage, relatesTo(threadRoot.EventID, "m.thread", textContent("reply")))
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			if _, err := alice.RedactEvent(ctx, lobby.RoomID, reply.EventID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := alice.CreateAlias(ctx, id.RoomAlias("#gone:"+d.serverName), lobby.RoomID); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.DeleteAlias(ctx, id.RoomAlias("#gone:"+d.serverName)); err != nil {
		t.Fatal(err)
	}
	_, err = alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "refused", InitialState: []*event.Event{{
		Type: event.StateMember, StateKey: new(bob.UserID.String()), Content: event.Content{Raw: map[string]any{"membership": "join"}},
	}}})
	wantError(t, "a create the room's writer refuses", err, http.StatusForbidden, "M_FORBIDDEN")
	hello, err := sendText(ctx, alice, lobby.RoomID, "t1", "hello")
	if err != nil {
		t.Fatal(err)
	}
	// Receipts, public and private.
	if err := bob.SendReceipt(ctx, lobby.RoomID, hello, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	if err := alice.SendReceipt(ctx, lobby.RoomID, hello, event.ReceiptTypeReadPrivate, nil); err != nil {
		t.Fatal(err)
	}

	// A room bob leaves and forgets.
	private := createRoomWith(ctx, t, alice, "private_chat", bob)
	if _, err := bob.LeaveRoom(ctx, private); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.ForgetRoom(ctx, private); err != nil {
		t.Fatal(err)
	}

	// Reports of an event and of a room.
	if err := call(ctx, bob, http.MethodPost, map[string]any{"reason": "rude", "score": -50}, nil, "rooms", lobby.RoomID, "report", hello); err != nil {
		t.Fatal(err)
	}
	if err := call(ctx, alice, http.MethodPost, map[string]any{"reason": "off topic"}, nil, "rooms", lobby.RoomID, "report"); err != nil {
		t.Fatal(err)
	}

	// A room an admin deletes, blocked and purged, with a receipt and a tag in it.
	condemned := createRoomWith(ctx, t, bob, "public_chat")
	last, err := sendText(ctx, bob, condemned, "c1", "soon gone")
	if err != nil {
		t.Fatal(err)
	}
	if err := bob.SendReceipt(ctx, condemned, last, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	if err := bob.AddTag(ctx, condemned, "u.gone", 0.1); err != nil {
		t.Fatal(err)
	}
	adminCall(ctx, t, hs, root, http.MethodDelete, "v1/rooms/"+condemned.String(), map[string]any{"block": true}, http.StatusOK)

	// An OpenID token.
	if err := call(ctx, alice, http.MethodPost, map[string]any{}, nil, "user", alice.UserID, "openid", "request_token"); err != nil {
		t.Fatal(err)
	}

	// Media: an upload, and a reservation of which one is filled and one is not.
	if _, err := alice.UploadBytesWithName(ctx, []byte("replayed media"), "text/plain", "notes.txt"); err != nil {
		t.Fatal(err)
	}
	// An upload an admin deletes: its content becomes an orphan.
	doomed, err := alice.UploadBytesWithName(ctx, []byte("deleted media"), "text/plain", "gone.txt")
	if err != nil {
		t.Fatal(err)
	}
	adminCall(ctx, t, hs, root, http.MethodDelete, "v1/media/"+d.serverName+"/"+doomed.ContentURI.FileID, nil, http.StatusOK)
	for _, content := range [][]byte{[]byte("later"), nil} {
		created, err := bob.CreateMXC(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if content != nil {
			if _, err := bob.UploadMedia(ctx, mautrix.ReqUploadMedia{MXC: created.ContentURI, ContentBytes: content, ContentType: "text/plain"}); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Filters, account data and tags.
	for _, f := range []*mautrix.Filter{
		{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 20}}},
		{Presence: &mautrix.FilterPart{NotTypes: []event.Type{event.EphemeralEventPresence}}},
	} {
		if _, err := alice.CreateFilter(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bob.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{IncludeLeave: true}}); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetAccountData(ctx, "org.example.settings", map[string]any{"theme": "dark"}); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetRoomAccountData(ctx, lobby.RoomID, "org.example.room", map[string]any{"pinned": true}); err != nil {
		t.Fatal(err)
	}
	if err := bob.AddTag(ctx, lobby.RoomID, "m.favourite", 0.5); err != nil {
		t.Fatal(err)
	}
	// Push rules.
	if err := alice.PutPushRule(ctx, "global", pushrules.SenderRule, string(bob.UserID),
		&mautrix.ReqPutPushRule{Actions: []*pushrules.PushAction{{Action: pushrules.ActionDontNotify}}}); err != nil {
		t.Fatal(err)
	}
	if err := bob.SetPushRuleEnabled(ctx, "global", pushrules.OverrideRule, ".m.rule.suppress_notices", false); err != nil {
		t.Fatal(err)
	}
	// Presence.
	if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "replayed"}); err != nil {
		t.Fatal(err)
	}

	// A to-device message waiting for bob's device, and the transaction id alice's device
	// sent it with.
	if s, code := sendToDevice(ctx, t, alice, "replayed", 1, map[id.UserID][]string{bob.UserID: {bob.DeviceID.String()}}); s != http.StatusOK {
		t.Fatalf("send to device: %d %s", s, code)
	}

	// End-to-end keys: device, one-time and fallback keys (one of them claimed),
	// cross-signing keys and a signature, a key backup with a session.
	ak, bk := newKeyDevice(alice), newKeyDevice(bob)
	for _, k := range []*keyDevice{ak, bk} {
		if err := call(ctx, k.c, http.MethodPost, map[string]any{"device_keys": k.deviceKeys(t),
			"one_time_keys": k.oneTimeKeys(t, "r", 2),
			"fallback_keys": map[string]any{"signed_curve25519:F": k.sign(t, map[string]any{"key": "fallback", "fallback": true})},
		}, nil, "keys", "upload"); err != nil {
			t.Fatal(err)
		}
	}
	if err := call(ctx, bob, http.MethodPost, map[string]any{"one_time_keys": map[string]any{
		alice.UserID.String(): map[string]string{alice.DeviceID.String(): "signed_curve25519"}}}, nil, "keys", "claim"); err != nil {
		t.Fatal(err)
	}
	cross := newCrossKeys(t, alice.UserID)
	if err := call(ctx, alice, http.MethodPost, cross.upload(), nil, "keys", "device_signing", "upload"); err != nil {
		t.Fatal(err)
	}
	devObj := ak.deviceKeys(t)
	delete(devObj, "signatures")
	if err := call(ctx, alice, http.MethodPost, map[string]any{alice.UserID.String(): map[string]any{
		alice.DeviceID.String(): cross.signWith(t, "self_signing", devObj)}}, nil, "keys", "signatures", "upload"); err != nil {
		t.Fatal(err)
	}
	if err := backupCall(ctx, alice, http.MethodPost, "", map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
		"auth_data": map[string]any{"public_key": "abc"}}, nil, "version"); err != nil {
		t.Fatal(err)
	}
	if err := backupCall(ctx, alice, http.MethodPut, "1", sessionKey(0, 0, true, "replayed"), nil, "keys", lobby.RoomID.String(), "s1"); err != nil {
		t.Fatal(err)
	}

	d.waitEvaluated(ctx)
	hs.stop()
	original := dumpTables(ctx, t, d.dsn)
	recreateDatabase(ctx, t, d.dsn)
	replay := exec.CommandContext(ctx, ganglionBin, "replay", "-c", hs.files[0])
	replay.Dir = d.dir
	if out, err := replay.CombinedOutput(); err != nil {
		t.Fatalf("ganglion replay: %v\n%s", err, out)
	}
	rebuilt := dumpTables(ctx, t, d.dsn)
	for table, rows := range original {
		t.Logf("%s: %d rows", table, len(rows))
	}

	for _, table := range slices.Sorted(maps.Keys(original)) {
		want, got := original[table], rebuilt[table]
		switch {
		case len(want) == 0:
			t.Errorf("table %s is empty: add its data to this test's setup, or say in persist.NotRebuilt why it is not rebuilt", table)
		case !slices.Equal(want, got):
			t.Errorf("table %s differs after replay\noriginal (%d rows):\n  %s\nrebuilt (%d rows):\n  %s",
				table, len(want), strings.Join(want, "\n  "), len(got), strings.Join(got, "\n  "))
		}
	}
	for table := range rebuilt {
		if _, ok := original[table]; !ok {
			t.Errorf("table %s exists only after replay", table)
		}
	}

	// The restarted process takes the old tokens and knows the rebuilt accounts.
	hs.restart()
	for _, c := range []*mautrix.Client{alice, alice2, bob} {
		who, err := at(c, hs.url()).Whoami(ctx)
		if err != nil || who.UserID != c.UserID || who.DeviceID != c.DeviceID {
			t.Errorf("%s's token after the replay: %+v, %v", c.UserID, who, err)
		}
	}
	for _, c := range revoked {
		_, err := at(c, hs.url()).Whoami(ctx)
		wantError(t, "a token revoked before the replay", err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	}
	login(ctx, t, hs.url(), "dave", "")
	p, err := carol.GetProfile(ctx, alice.UserID)
	if err != nil || p.DisplayName != "Alice A." {
		t.Errorf("alice's profile after the replay: %+v, %v", p, err)
	}
	if resolved, err := bob.ResolveAlias(ctx, id.RoomAlias("#hall:"+d.serverName)); err != nil || resolved.RoomID != lobby.RoomID {
		t.Errorf("#hall after the replay: %+v, %v", resolved, err)
	}
	// The numbering of generated localparts went on past the rebuilt ones.
	next, err := anon.RegisterDummy(ctx, &mautrix.ReqRegister[any]{InhibitLogin: true})
	if err != nil || next.UserID == generated.UserID {
		t.Errorf("a generated registration after the replay: %+v, %v (the first was %s)", next, err, generated.UserID)
	}
}

// login logs localpart in with the test password, as device when it is set.
func login(ctx context.Context, t *testing.T, baseURL, localpart, device string) *mautrix.Client {
	t.Helper()
	cli, err := tryLogin(ctx, baseURL, localpart, password, device)
	if err != nil {
		t.Fatalf("login %s: %v", localpart, err)
	}
	return cli
}

// tryLogin logs localpart in with pw, as device when it is set, else as a new device.
func tryLogin(ctx context.Context, baseURL, localpart, pw, device string) (*mautrix.Client, error) {
	cli, err := mautrix.NewClient(baseURL, "", "")
	if err != nil {
		return nil, err
	}
	_, err = cli.Login(ctx, &mautrix.ReqLogin{
		Type:       mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: localpart},
		Password:   pw, DeviceID: id.DeviceID(device), StoreCredentials: true,
	})
	return cli, err
}

// dumpTables returns every row of every table of the database but notReplayed, each
// as text without the notReplayedColumns, sorted, by table.
func dumpTables(ctx context.Context, t *testing.T, dsn string) map[string][]string {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = 'public' AND table_type = 'BASE TABLE'`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, table := range tables {
		if _, skip := persist.NotRebuilt[table]; skip {
			continue
		}
		rows, err := conn.Query(ctx, "SELECT * FROM "+pgx.Identifier{table}.Sanitize())
		if err != nil {
			t.Fatal(err)
		}
		fields := rows.FieldDescriptions()
		dump := []string{}
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				t.Fatal(err)
			}
			var cols []string
			for i, v := range vals {
				name := fields[i].Name
				if _, skip := persist.NotRebuiltColumns[table+"."+name]; !skip {
					cols = append(cols, fmt.Sprintf("%s=%v", name, v))
				}
			}
			dump = append(dump, strings.Join(cols, " "))
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		slices.Sort(dump)
		out[table] = dump
	}
	return out
}

// recreateDatabase drops the database of dsn and creates it again, empty.
func recreateDatabase(ctx context.Context, t *testing.T, dsn string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	u.Path = "/postgres"
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, q := range []string{"DROP DATABASE " + pgx.Identifier{name}.Sanitize() + " WITH (FORCE)", "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
}
