//go:build goolm

// This file needs mautrix-go's pure-Go Olm (the goolm build tag, set by the test task).

package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// encryptedRoom is the state mautrix's OlmMachine asks about: one encrypted room whose
// history members share.
type encryptedRoom struct{ room id.RoomID }

func (s encryptedRoom) IsEncrypted(_ context.Context, r id.RoomID) (bool, error) {
	return r == s.room, nil
}
func (s encryptedRoom) GetEncryptionEvent(context.Context, id.RoomID) (*event.EncryptionEventContent, error) {
	return &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}, nil
}
func (s encryptedRoom) GetHistoryVisibility(context.Context, id.RoomID) (*event.HistoryVisibilityEventContent, error) {
	return &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityShared}, nil
}
func (s encryptedRoom) FindSharedRooms(context.Context, id.UserID) ([]id.RoomID, error) {
	return []id.RoomID{s.room}, nil
}

// cryptoDevice is one client device with its own Olm machine (memory store) following
// /sync in the background: device lists, to-device messages, key counts, and the
// room's encrypted timeline, which it decrypts as the keys arrive.
type cryptoDevice struct {
	name string
	c    *mautrix.Client
	mach *crypto.OlmMachine
	room id.RoomID

	mu      sync.Mutex
	plain   map[id.EventID]string
	pending []*event.Event
	// failed is why each pending event did not decrypt, for a failure's report.
	failed  map[id.EventID]error
	syncErr error
	// synced is closed after the first sync, then forgotten.
	synced chan struct{}
}

func newCryptoDevice(ctx context.Context, t *testing.T, name string, c *mautrix.Client, room id.RoomID) *cryptoDevice {
	t.Helper()
	d := &cryptoDevice{name: name, c: c, room: room, plain: map[id.EventID]string{}, failed: map[id.EventID]error{}}
	d.mach = crypto.NewOlmMachine(c, nil, crypto.NewMemoryStore(nil), encryptedRoom{room})
	if err := d.mach.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.mach.ShareKeys(ctx, 0); err != nil {
		t.Fatalf("%s: upload keys: %v", name, err)
	}
	return d
}

// follow syncs until ctx ends or the server refuses the device.
func (d *cryptoDevice) follow(ctx context.Context) {
	since := ""
	for ctx.Err() == nil {
		resp, err := d.c.SyncRequest(ctx, 1000, since, syncFilter, false, event.PresenceOnline)
		if err != nil {
			d.mu.Lock()
			d.syncErr = err
			d.mu.Unlock()
			var he mautrix.HTTPError
			if errors.As(err, &he) && he.Response != nil && he.Response.StatusCode == http.StatusUnauthorized {
				return
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		d.mach.ProcessSyncResponse(ctx, resp, since)
		since = resp.NextBatch
		if d.synced != nil {
			close(d.synced)
			d.synced = nil
		}
		var evs []*event.Event
		if jr := resp.Rooms.Join[d.room]; jr != nil {
			evs = jr.Timeline.Events
		}
		d.received(ctx, evs)
	}
}

// received decrypts the encrypted events among evs, and those whose keys were missing
// before.
func (d *cryptoDevice) received(ctx context.Context, evs []*event.Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, ev := range evs {
		if ev.Type != event.EventEncrypted {
			continue
		}
		ev.RoomID = d.room
		ev.Type.Class = event.MessageEventType
		if err := ev.Content.ParseRaw(ev.Type); err == nil {
			d.pending = append(d.pending, ev)
		}
	}
	still := d.pending[:0]
	for _, ev := range d.pending {
		body, err := d.decrypt(ctx, ev)
		if err != nil {
			still = append(still, ev)
			d.failed[ev.ID] = fmt.Errorf("from %s: %w", ev.Sender, err)
			continue
		}
		d.plain[ev.ID] = body
	}
	d.pending = still
}

func (d *cryptoDevice) decrypt(ctx context.Context, ev *event.Event) (string, error) {
	dec, err := d.mach.DecryptMegolmEvent(ctx, ev)
	if err != nil {
		return "", err
	}
	body, _ := dec.Content.Raw["body"].(string)
	return body, nil
}

// undecrypted says which of want the device has not decrypted, and why (its last
// sync error too), for a failure's report.
func (d *cryptoDevice) undecrypted(want map[id.EventID]string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for ev, body := range want {
		if d.plain[ev] != body {
			out = append(out, fmt.Sprintf("%s (%s): %v", ev, body, d.failed[ev]))
		}
	}
	slices.Sort(out)
	return fmt.Sprintf("%d undecrypted %v; last sync error %v", len(out), out, d.syncErr)
}

// decrypted returns what the device has decrypted so far.
func (d *cryptoDevice) decrypted() map[id.EventID]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[id.EventID]string, len(d.plain))
	for k, v := range d.plain {
		out[k] = v
	}
	return out
}

// send encrypts a message for the room's members, sharing a new group session first
// when the current one is missing, expired or stale (a device list changed).
func (d *cryptoDevice) send(ctx context.Context, members []id.UserID, body string) (id.EventID, error) {
	content := map[string]any{"msgtype": "m.text", "body": body}
	enc, err := d.mach.EncryptMegolmEvent(ctx, d.room, event.EventMessage, content)
	if crypto.IsShareError(err) {
		if err = d.mach.ShareGroupSession(ctx, d.room, members); err != nil {
			return "", fmt.Errorf("%s: share group session: %w", d.name, err)
		}
		enc, err = d.mach.EncryptMegolmEvent(ctx, d.room, event.EventMessage, content)
	}
	if err != nil {
		return "", fmt.Errorf("%s: encrypt: %w", d.name, err)
	}
	resp, err := d.c.SendMessageEvent(ctx, d.room, event.EventEncrypted, enc)
	if err != nil {
		return "", fmt.Errorf("%s: send: %w", d.name, err)
	}
	return resp.EventID, nil
}

// knows reports whether the device's machine lists user's device (or, with present
// false, no longer lists it).
func (d *cryptoDevice) knows(ctx context.Context, user id.UserID, device id.DeviceID) bool {
	devs, err := d.mach.CryptoStore.GetDevices(ctx, user)
	_, ok := devs[device]
	return err == nil && ok
}

// waitUntil polls cond for up to a minute.
func waitUntil(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitUntilOr(ctx, t, what, cond, func() string { return "" })
}

// waitUntilOr is waitUntil whose failure also says what report tells.
func waitUntilOr(ctx context.Context, t *testing.T, what string, cond func() bool, report func() string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("timed out waiting until %s %s", what, report())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestEncryptionEndToEnd is issue 6's acceptance 1, with mautrix-go's crypto: two users
// with two devices each exchange 50 megolm messages in an encrypted room and every
// device decrypts every one; a third device added later gets the earlier keys from the
// key backup and the later ones by key sharing; a deleted device stops receiving keys.
func TestEncryptionEndToEnd(t *testing.T) {
	ctx, base := clientScenario(t)
	alice1 := newUser(ctx, t, base, "alice")
	bob1 := newUser(ctx, t, base, "bob")
	alice2, bob2 := login(ctx, t, base, alice1.UserID.Localpart(), ""), login(ctx, t, base, bob1.UserID.Localpart(), "")
	members := []id.UserID{alice1.UserID, bob1.UserID}

	created, err := alice1.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob1.UserID},
		InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{
			Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}}})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	if _, err := bob1.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}

	followCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	// A device follows /sync, then fetches the device lists of everyone it shares the
	// room with, as the spec asks of a client after its initial sync: from then on
	// device_lists tells it of every change.
	start := func(d *cryptoDevice) *cryptoDevice {
		synced := make(chan struct{})
		d.synced = synced
		wg.Go(func() { d.follow(followCtx) })
		<-synced
		if _, err := d.mach.FetchKeys(ctx, members, true); err != nil {
			t.Fatalf("%s: fetch device lists: %v", d.name, err)
		}
		return d
	}
	devices := []*cryptoDevice{
		start(newCryptoDevice(ctx, t, "alice1", alice1, room)), start(newCryptoDevice(ctx, t, "alice2", alice2, room)),
		start(newCryptoDevice(ctx, t, "bob1", bob1, room)), start(newCryptoDevice(ctx, t, "bob2", bob2, room)),
	}

	// Each device learns of the others through device_lists before the first message:
	// a group session is shared with the devices its sender knows, as with any server
	// (the later steps wait the same way for alice3).
	for _, d := range devices {
		for _, o := range devices {
			waitUntil(ctx, t, d.name+" knows "+o.name, func() bool { return d.knows(ctx, o.c.UserID, o.c.DeviceID) })
		}
	}
	sent := map[id.EventID]string{}
	for i := range 50 {
		body := fmt.Sprintf("message %d", i)
		evID, err := devices[i%len(devices)].send(ctx, members, body)
		if err != nil {
			t.Fatal(err)
		}
		sent[evID] = body
	}
	decryptedAll := func(d *cryptoDevice, want map[id.EventID]string) func() bool {
		return func() bool {
			got := d.decrypted()
			for ev, body := range want {
				if got[ev] != body {
					return false
				}
			}
			return true
		}
	}
	for _, d := range devices {
		waitUntilOr(ctx, t, d.name+" decrypted all 50 messages", decryptedAll(d, sent), func() string { return d.undecrypted(sent) })
	}

	// Alice backs her keys up; her third device restores them and reads the history.
	backupKey, err := backup.NewMegolmBackupKey()
	if err != nil {
		t.Fatal(err)
	}
	version := makeBackup(ctx, t, devices[0], backupKey)
	alice3 := newCryptoDevice(ctx, t, "alice3", login(ctx, t, base, alice1.UserID.Localpart(), ""), room)
	if v, err := alice3.mach.DownloadAndStoreLatestKeyBackup(ctx, backupKey); err != nil || v != version {
		t.Fatalf("restore the backup: version %q, %v", v, err)
	}
	history, err := alice3.c.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 200)
	if err != nil {
		t.Fatal(err)
	}
	alice3.received(ctx, reverse(history.Chunk))
	if !decryptedAll(alice3, sent)() {
		t.Fatalf("alice3 decrypted %d of the 50 messages from the backup", len(alice3.decrypted()))
	}
	start(alice3)
	devices = append(devices, alice3)

	// Every device learns of alice3 from its device list, and shares new keys with it.
	for _, d := range devices[:4] {
		waitUntil(ctx, t, d.name+" knows alice3", func() bool { return d.knows(ctx, alice1.UserID, alice3.c.DeviceID) })
	}
	later := map[id.EventID]string{}
	for i, d := range devices {
		body := fmt.Sprintf("later %d", i)
		evID, err := d.send(ctx, members, body)
		if err != nil {
			t.Fatal(err)
		}
		later[evID] = body
	}
	for _, d := range devices {
		waitUntil(ctx, t, d.name+" decrypted the later messages", decryptedAll(d, later))
	}

	// Alice deletes her second device (with her password): it stops receiving.
	deleteDevice(ctx, t, alice1, alice2.DeviceID)
	gone := devices[1]
	remaining := []*cryptoDevice{devices[0], devices[2], devices[3], devices[4]}
	for _, d := range remaining {
		waitUntil(ctx, t, d.name+" forgets alice2", func() bool { return !d.knows(ctx, alice1.UserID, alice2.DeviceID) })
	}
	final := map[id.EventID]string{}
	for i, d := range remaining {
		evID, err := d.send(ctx, members, fmt.Sprintf("after the deletion %d", i))
		if err != nil {
			t.Fatal(err)
		}
		final[evID] = fmt.Sprintf("after the deletion %d", i)
	}
	for _, d := range remaining {
		waitUntil(ctx, t, d.name+" decrypted the messages sent after the deletion", decryptedAll(d, final))
	}
	waitUntil(ctx, t, "alice2's sync is refused", func() bool {
		gone.mu.Lock()
		defer gone.mu.Unlock()
		var he mautrix.HTTPError
		return errors.As(gone.syncErr, &he) && he.RespError != nil && he.RespError.ErrCode == "M_UNKNOWN_TOKEN"
	})
	// Even given the events, the deleted device has no key for them.
	msgs, err := bob1.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 20)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range msgs.Chunk {
		if _, ok := final[ev.ID]; !ok {
			continue
		}
		ev.RoomID, ev.Type.Class = room, event.MessageEventType
		if err := ev.Content.ParseRaw(ev.Type); err != nil {
			t.Fatal(err)
		}
		if body, err := gone.decrypt(ctx, ev); err == nil {
			t.Errorf("the deleted device decrypted %q", body)
		}
	}
}

// makeBackup creates a key backup version trusted by its public key and uploads every
// megolm session d holds for its room, as a client backing up its keys does.
func makeBackup(ctx context.Context, t *testing.T, d *cryptoDevice, key *backup.MegolmBackupKey) id.KeyBackupVersion {
	t.Helper()
	created, err := d.c.CreateKeyBackupVersion(ctx, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
		Algorithm: id.KeyBackupAlgorithmMegolmBackupV1,
		AuthData:  backup.MegolmAuthData{PublicKey: id.Ed25519(base64.RawStdEncoding.EncodeToString(key.PublicKey().Bytes()))},
	})
	if err != nil {
		t.Fatal(err)
	}
	sessions, err := d.mach.CryptoStore.GetGroupSessionsForRoom(ctx, d.room).AsList()
	if err != nil || len(sessions) == 0 {
		t.Fatalf("sessions to back up: %d, %v", len(sessions), err)
	}
	req := &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{d.room: {Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{}}}}
	for _, s := range sessions {
		first := s.Internal.FirstKnownIndex()
		exported, err := s.Internal.Export(first)
		if err != nil {
			t.Fatal(err)
		}
		data, err := backup.EncryptSessionData(key, backup.MegolmSessionData{
			Algorithm: id.AlgorithmMegolmV1, SenderKey: s.SenderKey, SessionKey: string(exported),
			SenderClaimedKeys: backup.SenderClaimedKeys{Ed25519: s.SigningKey}, ForwardingKeyChain: []string{},
		})
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(data)
		req.Rooms[d.room].Sessions[s.ID()] = mautrix.ReqKeyBackupData{FirstMessageIndex: int(first), IsVerified: true, SessionData: raw}
	}
	resp, err := d.c.PutKeysInBackup(ctx, created.Version, req)
	if err != nil || resp.Count != len(sessions) {
		t.Fatalf("back up %d sessions: %+v, %v", len(sessions), resp, err)
	}
	return created.Version
}

// deleteDevice deletes a device of c's user through user-interactive auth with the
// password, as clients do.
func deleteDevice(ctx context.Context, t *testing.T, c *mautrix.Client, device id.DeviceID) {
	t.Helper()
	path := "/_matrix/client/v3/devices/" + string(device)
	status, _, body := rawRequest(ctx, t, http.MethodDelete, c.HomeserverURL.String()+path, c.AccessToken, []byte(`{}`))
	var flow struct {
		Session string `json:"session"`
	}
	if status != http.StatusUnauthorized || json.Unmarshal([]byte(body), &flow) != nil || flow.Session == "" {
		t.Fatalf("device deletion without auth: %d %s", status, body)
	}
	auth, _ := json.Marshal(map[string]any{"auth": map[string]any{"type": "m.login.password", "session": flow.Session, "password": password,
		"identifier": map[string]string{"type": "m.id.user", "user": c.UserID.String()}}})
	if status, _, body := rawRequest(ctx, t, http.MethodDelete, c.HomeserverURL.String()+path, c.AccessToken, auth); status != http.StatusOK {
		t.Fatalf("device deletion: %d %s", status, body)
	}
}

// reverse returns the events of a backwards /messages page in timeline order.
func reverse(evs []*event.Event) []*event.Event {
	out := make([]*event.Event, len(evs))
	for i, ev := range evs {
		out[len(evs)-1-i] = ev
	}
	return out
}
