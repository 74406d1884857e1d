package userstreams_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/matrix-org/gomatrixserverlib"
	"go.uber.org/zap/zaptest"
	"golang.org/x/crypto/bcrypt"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/accounts"
	"github.com/ganglionhq/ganglion/persist/e2ekeys"
	"github.com/ganglionhq/ganglion/persist/pgtest"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
	"github.com/ganglionhq/ganglion/streams/natstest"
)

// fixture runs device_lists writers over real NATS and Postgres.
type fixture struct {
	t      *testing.T
	ctx    context.Context
	env    *natstest.Env
	db     *persist.DB
	client *streams.IntentClient
	n      atomic.Int64
}

func openDB(t *testing.T) *persist.DB {
	t.Helper()
	db, err := persist.Open(context.Background(), pgtest.DSN(t), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	db.BcryptCost = bcrypt.MinCost
	t.Cleanup(db.Pool.Close)
	return db
}

// newFixture starts one device_lists writer per name, sharing the stream by user.
func newFixture(t *testing.T, writers ...string) *fixture {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	env := natstest.Start(t)
	db := openDB(t)
	waiters := &streams.Waiters{}
	for _, name := range writers {
		w, err := userstreams.New(userstreams.Config{Name: name, Stream: &userstreams.DeviceLists{DB: db},
			Topology: env.Topology, JS: env.JS, NC: env.NC, DB: db, Waiters: waiters, Log: zaptest.NewLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { defer close(done); _ = w.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	return &fixture{t: t, ctx: ctx, env: env, db: db, client: &streams.IntentClient{Topology: env.Topology, JS: env.JS, NC: env.NC,
		StreamWriters: map[string][]string{schemas.StreamDeviceLists: writers}, Waiters: waiters, Log: zaptest.NewLogger(t)}}
}

// write sends one write as user's device and returns the writer's answer.
func (f *fixture) write(user, device, key, op string, body any) *schemas.IntentResult {
	f.t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		f.t.Fatal(err)
	}
	w := &schemas.StreamWrite{V: schemas.StreamWriteVersion, ID: fmt.Sprintf("%s-%d", f.t.Name(), f.n.Add(1)), Stream: schemas.StreamDeviceLists,
		Op: op, Key: key, User: user, Device: device, Body: raw}
	res, err := f.client.Write(f.ctx, w)
	if err != nil {
		f.t.Fatalf("%s: %v", op, err)
	}
	return res
}

// device is a user's device with its signing key.
type device struct {
	user, id string
	priv     ed25519.PrivateKey
	pub      string
}

func (f *fixture) newDevice(user, id string) *device {
	f.t.Helper()
	// The user and device as the accounts stream's writer would store them.
	kind := schemas.AccountDeviceCreated
	if exists, _, err := (accounts.Store{Pool: f.db.Pool}).User(f.ctx, user); err != nil {
		f.t.Fatal(err)
	} else if !exists {
		kind = schemas.AccountUserCreated
	}
	seq := uint64(f.n.Add(1))
	rec := &schemas.AccountsRecord{V: schemas.AccountsVersion, Kind: kind, User: user, Device: id, TokenHash: []byte(user + id),
		TS: time.Now().UnixMilli(), Write: fmt.Sprint("device-", seq)}
	if err := pgx.BeginFunc(f.ctx, f.db.Pool, func(tx pgx.Tx) error {
		return accounts.Project(f.ctx, tx, []*schemas.AccountsRecord{rec}, []uint64{seq})
	}); err != nil {
		f.t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(nil)
	return &device{user: user, id: id, priv: priv, pub: base64.RawStdEncoding.EncodeToString(pub)}
}

// sign signs obj as the device and returns it in canonical JSON.
func (d *device) sign(t *testing.T, obj any) json.RawMessage {
	t.Helper()
	raw, _ := json.Marshal(obj)
	signed, err := gomatrixserverlib.SignJSON(d.user, gomatrixserverlib.KeyID("ed25519:"+d.id), d.priv, raw)
	if err != nil {
		t.Fatal(err)
	}
	canonical, _ := gomatrixserverlib.CanonicalJSON(signed)
	return canonical
}

func (d *device) keys(t *testing.T) json.RawMessage {
	return d.sign(t, map[string]any{"user_id": d.user, "device_id": d.id,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + d.id: d.pub, "curve25519:" + d.id: d.pub}})
}

// upload stores the device's keys, n one-time keys and a fallback key named fb.
func (f *fixture) upload(d *device, n int, fb string) {
	f.t.Helper()
	otks := map[string]json.RawMessage{}
	for i := range n {
		otks[fmt.Sprintf("signed_curve25519:%s%03d", d.id, i)] = d.sign(f.t, map[string]any{"key": fmt.Sprintf("k%d", i)})
	}
	up := userstreams.KeysUpload{DeviceKeys: d.keys(f.t), OneTimeKeys: otks}
	if fb != "" {
		up.FallbackKeys = map[string]json.RawMessage{"signed_curve25519:" + fb: d.sign(f.t, map[string]any{"key": fb, "fallback": true})}
	}
	if res := f.write(d.user, d.id, d.user, userstreams.OpKeysUpload, up); res.Error != nil {
		f.t.Fatalf("upload: %+v", res.Error)
	}
}

func (f *fixture) claim(claimer, user, dev string) map[string]json.RawMessage {
	f.t.Helper()
	res := f.write(claimer, "C", user, userstreams.OpKeysClaim, userstreams.KeysClaim{Devices: map[string]string{dev: "signed_curve25519"}})
	var keys userstreams.ClaimedKeys
	if res.Error != nil || json.Unmarshal(res.Body, &keys) != nil {
		f.t.Fatalf("claim: %+v", res)
	}
	return keys[dev]
}

// TestConcurrentClaimsHandOutEachKeyOnce: many claims at once, on two writers sharing
// the stream by user, hand out every one-time key exactly once, then the fallback key,
// which stays until it is replaced.
func TestConcurrentClaimsHandOutEachKeyOnce(t *testing.T) {
	f := newFixture(t, "w1", "w2")
	var devs []*device
	for _, u := range []string{"@alice:t", "@bob:t", "@carol:t", "@dan:t"} {
		d := f.newDevice(u, "D")
		f.upload(d, 20, "FB")
		devs = append(devs, d)
	}
	if owners := map[string]bool{}; true {
		for _, d := range devs {
			owners[streams.ShardOwner(d.user, []string{"w1", "w2"})] = true
		}
		if len(owners) != 2 {
			t.Fatalf("the users do not spread over both writers: %v", owners)
		}
	}
	var mu sync.Mutex
	got := map[string]map[string]int{}
	for _, d := range devs {
		got[d.user] = map[string]int{}
	}
	var wg sync.WaitGroup
	for _, d := range devs {
		for range 30 {
			wg.Go(func() {
				keys := f.claim("@eve:t", d.user, d.id)
				mu.Lock()
				defer mu.Unlock()
				for id := range keys {
					got[d.user][id]++
				}
			})
		}
	}
	wg.Wait()
	for _, d := range devs {
		if got[d.user]["signed_curve25519:FB"] != 10 {
			t.Errorf("%s: fallback handed out %d times, want 10", d.user, got[d.user]["signed_curve25519:FB"])
		}
		for i := range 20 {
			id := fmt.Sprintf("signed_curve25519:D%03d", i)
			if got[d.user][id] != 1 {
				t.Errorf("%s: one-time key %s handed out %d times", d.user, id, got[d.user][id])
			}
		}
		c, err := e2ekeys.Store{DB: f.db.Pool}.Counts(f.ctx, d.user, d.id)
		if err != nil || c.OneTimeKeys["signed_curve25519"] != 0 || len(c.UnusedFallback) != 0 {
			t.Errorf("%s: counts after the claims %+v, %v", d.user, c, err)
		}
	}
	// A new fallback key is unused again; the same key uploaded again stays used.
	alice := devs[0]
	fb := map[string]json.RawMessage{"signed_curve25519:FB": alice.sign(t, map[string]any{"key": "FB", "fallback": true})}
	f.write(alice.user, alice.id, alice.user, userstreams.OpKeysUpload, userstreams.KeysUpload{FallbackKeys: fb})
	if c, _ := (e2ekeys.Store{DB: f.db.Pool}).Counts(f.ctx, alice.user, alice.id); len(c.UnusedFallback) != 0 {
		t.Errorf("the same fallback key again made it unused: %+v", c)
	}
	fb = map[string]json.RawMessage{"signed_curve25519:FB2": alice.sign(t, map[string]any{"key": "FB2", "fallback": true})}
	f.write(alice.user, alice.id, alice.user, userstreams.OpKeysUpload, userstreams.KeysUpload{FallbackKeys: fb})
	if c, _ := (e2ekeys.Store{DB: f.db.Pool}).Counts(f.ctx, alice.user, alice.id); !slices.Equal(c.UnusedFallback, []string{"signed_curve25519"}) {
		t.Errorf("a new fallback key is not unused: %+v", c)
	}
	if keys := f.claim("@eve:t", alice.user, alice.id); keys["signed_curve25519:FB2"] == nil {
		t.Errorf("claim after the new fallback key: %v", keys)
	}
}

// TestUploadsAreCheckedAgainstWhatIsStored: identity keys never change, a one-time key
// ID stays bound to its key, and identical uploads record nothing.
func TestUploadsAreCheckedAgainstWhatIsStored(t *testing.T) {
	f := newFixture(t, "w1")
	d := f.newDevice("@alice:t", "D")
	f.upload(d, 2, "")
	// The same keys again: nothing new.
	res := f.write(d.user, d.id, d.user, userstreams.OpKeysUpload, userstreams.KeysUpload{DeviceKeys: d.keys(t)})
	if res.Error != nil || changes(t, f.db, d.user) != 1 {
		t.Errorf("the same device keys again: %+v, %d changes", res.Error, changes(t, f.db, d.user))
	}
	other := &device{user: d.user, id: d.id}
	pub, priv, _ := ed25519.GenerateKey(nil)
	other.priv, other.pub = priv, base64.RawStdEncoding.EncodeToString(pub)
	res = f.write(d.user, d.id, d.user, userstreams.OpKeysUpload, userstreams.KeysUpload{DeviceKeys: other.keys(t)})
	if res.Error == nil || res.Error.Status != 400 || res.Error.Code != "M_INVALID_PARAM" {
		t.Errorf("new identity keys for an existing device: %+v", res.Error)
	}
	res = f.write(d.user, d.id, d.user, userstreams.OpKeysUpload, userstreams.KeysUpload{OneTimeKeys: map[string]json.RawMessage{
		"signed_curve25519:D000": d.sign(t, map[string]any{"key": "another"})}})
	if res.Error == nil || res.Error.Status != 400 {
		t.Errorf("another key under a stored one-time key ID: %+v", res.Error)
	}
	res = f.write(d.user, d.id, d.user, userstreams.OpKeysUpload, userstreams.KeysUpload{OneTimeKeys: map[string]json.RawMessage{
		"signed_curve25519:D000": d.sign(t, map[string]any{"key": "k0"})}})
	if res.Error != nil {
		t.Errorf("the same one-time key again: %+v", res.Error)
	}
}

// changes counts the device-list changes recorded for user.
func changes(t *testing.T, db *persist.DB, user string) int {
	t.Helper()
	var n int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM device_list_changes WHERE user_id = $1`, user).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDeviceDeletedGoesThroughTheStream: deleting a device removes its keys and what
// was signed of it, and records a device-list change with Synapse's row.
func TestDeviceDeletedGoesThroughTheStream(t *testing.T) {
	f := newFixture(t, "w1")
	d := f.newDevice("@alice:t", "D")
	keep := f.newDevice("@alice:t", "K")
	f.upload(d, 5, "FB")
	f.upload(keep, 5, "FB")
	before := changes(t, f.db, d.user)
	res := f.write(d.user, keep.id, d.user, userstreams.OpDeviceDeleted, userstreams.DeviceOp{Devices: []string{d.id}})
	if res.Error != nil {
		t.Fatal(res.Error)
	}
	for _, table := range []string{"e2e_device_keys", "e2e_one_time_keys", "e2e_fallback_keys"} {
		var gone, kept int
		err := f.db.Pool.QueryRow(f.ctx, `SELECT count(*) FILTER (WHERE device_id = 'D'), count(*) FILTER (WHERE device_id = 'K')
			FROM `+table+` WHERE user_id = $1`, d.user).Scan(&gone, &kept)
		if err != nil || gone != 0 || kept == 0 {
			t.Errorf("%s after deleting D: %d rows of D, %d of K, %v", table, gone, kept, err)
		}
	}
	if changes(t, f.db, d.user) != before+1 {
		t.Errorf("device-list changes: %d, want %d", changes(t, f.db, d.user), before+1)
	}
	msgs := readStream(t, f)
	last := msgs[len(msgs)-1]
	row, err := json.Marshal((&userstreams.DeviceLists{}).Row(last))
	if err != nil || string(row) != `["@alice:t",false,true]` {
		t.Errorf("replication row of the deletion: %s, %v", row, err)
	}
}

func readStream(t *testing.T, f *fixture) []streams.RawMessage {
	t.Helper()
	var out []streams.RawMessage
	topo := f.env.Topology
	_, err := streams.ReadStream(f.ctx, f.env.JS, topo.UserStreamName(schemas.StreamDeviceLists),
		topo.UserStreamWildcard(schemas.StreamDeviceLists), false, streams.LogRange{}, func(msgs []streams.RawMessage) error {
			out = append(out, msgs...)
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestReplayRebuildsEveryKeyTable is DESIGN invariant 4 for the device_lists stream:
// keys, claims, cross-signing keys, signatures, a deleted device and key backups,
// replayed into an empty database, give the same rows.
func TestReplayRebuildsEveryKeyTable(t *testing.T) {
	f := newFixture(t, "w1", "w2")
	alice := f.newDevice("@alice:t", "A1")
	alice2 := f.newDevice("@alice:t", "A2")
	bob := f.newDevice("@bob:t", "B1")
	for _, d := range []*device{alice, alice2, bob} {
		f.upload(d, 3, "FB")
	}
	f.claim("@bob:t", alice.user, alice.id)
	f.claim("@bob:t", alice.user, alice.id)
	master := newCrossKey(t, alice.user, "master", nil)
	ssk := newCrossKey(t, alice.user, "self_signing", master)
	res := f.write(alice.user, alice.id, alice.user, userstreams.OpCrossSigningUpload,
		userstreams.CrossSigningUpload{Master: master.obj, SelfSigning: ssk.obj})
	if res.Error != nil {
		t.Fatal(res.Error)
	}
	// The self-signing key signs alice's second device.
	var dk map[string]any
	_ = json.Unmarshal(alice2.keys(t), &dk)
	delete(dk, "signatures")
	signed := ssk.sign(t, alice.user, dk)
	res = f.write(alice.user, alice.id, alice.user, userstreams.OpSignaturesUpload,
		userstreams.SignaturesUpload{alice.user: {alice2.id: signed}})
	if res.Error != nil || string(res.Body) != `{"failures":{}}` {
		t.Fatalf("signature upload: %+v %s", res.Error, res.Body)
	}
	f.write(bob.user, bob.id, bob.user, userstreams.OpDeviceDeleted, userstreams.DeviceOp{Devices: []string{bob.id}})
	res = f.write(alice.user, alice.id, alice.user, userstreams.OpBackupCreate, userstreams.BackupOp{Algorithm: "m.megolm_backup.v1", AuthData: json.RawMessage(`{"public_key":"x"}`)})
	if string(res.Body) != `{"version":"1"}` {
		t.Fatalf("backup version: %s", res.Body)
	}
	res = f.write(alice.user, alice.id, alice.user, userstreams.OpBackupKeysPut, userstreams.BackupOp{Version: "1", Keys: []schemas.BackupKey{
		{Room: "!r:t", Session: "s1", FirstMessageIndex: 3, SessionData: json.RawMessage(`{"a":1}`)},
		{Room: "!r:t", Session: "s2", SessionData: json.RawMessage(`{"a":2}`)}}})
	if string(res.Body) != `{"etag":"1","count":2}` {
		t.Fatalf("backup keys: %s", res.Body)
	}
	tables := []string{
		"SELECT user_id, device_id, key_json, stream_id FROM e2e_device_keys ORDER BY 1, 2",
		"SELECT user_id, device_id, algorithm, key_id, key_json, stream_id FROM e2e_one_time_keys ORDER BY 1, 2, 3, 4",
		"SELECT user_id, device_id, algorithm, key_id, key_json, used, stream_id FROM e2e_fallback_keys ORDER BY 1, 2, 3",
		"SELECT user_id, key_type, key_json, stream_id FROM e2e_cross_signing_keys ORDER BY 1, 2",
		"SELECT user_id, key_id, target_user_id, target_id, signature, stream_id FROM e2e_cross_signing_signatures ORDER BY 1, 2, 3, 4",
		"SELECT stream_id, user_id, device_id, viewer FROM device_list_changes ORDER BY 1, 2, 3, 4",
		"SELECT user_id, version, algorithm, auth_data, etag, deleted, stream_id FROM e2e_room_keys_versions ORDER BY 1, 2",
		"SELECT user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data, stream_id FROM e2e_room_keys ORDER BY 1, 2, 3, 4",
		"SELECT stream_name, instance_name, stream_id FROM stream_positions WHERE stream_name = 'device_lists' ORDER BY 1, 2",
	}
	replayed := openDB(t)
	if _, _, err := userstreams.Replay(f.ctx, f.env.JS, f.env.Topology, replayed, &userstreams.DeviceLists{DB: replayed}); err != nil {
		t.Fatal(err)
	}
	for _, q := range tables {
		a, b := dump(t, f.db, q), dump(t, replayed, q)
		if len(a) == 0 {
			t.Errorf("nothing to compare in %q", q)
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s:\noriginal %v\nreplayed %v", q, a, b)
		}
	}
}

func dump(t *testing.T, db *persist.DB, q string) [][]string {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) ([]string, error) {
		vals, err := row.Values()
		s := make([]string, len(vals))
		for i, v := range vals {
			s[i] = fmt.Sprint(v)
		}
		return s, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// crossKey is a cross-signing key pair and its key object.
type crossKey struct {
	priv ed25519.PrivateKey
	pub  string
	obj  json.RawMessage
}

// newCrossKey makes a cross-signing key of user, signed by signer when given.
func newCrossKey(t *testing.T, user, usage string, signer *crossKey) *crossKey {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(nil)
	k := &crossKey{priv: priv, pub: base64.RawStdEncoding.EncodeToString(pub)}
	obj := map[string]any{"user_id": user, "usage": []string{usage}, "keys": map[string]string{"ed25519:" + k.pub: k.pub}}
	if signer == nil {
		raw, _ := json.Marshal(obj)
		k.obj = raw
	} else {
		k.obj = signer.sign(t, user, obj)
	}
	return k
}

// sign signs obj with the key as user.
func (k *crossKey) sign(t *testing.T, user string, obj any) json.RawMessage {
	t.Helper()
	raw, _ := json.Marshal(obj)
	signed, err := gomatrixserverlib.SignJSON(user, gomatrixserverlib.KeyID("ed25519:"+k.pub), k.priv, raw)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}
