package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/ganglionhq/ganglion/schemas"
)

var toDeviceType = event.Type{Type: "org.example.test", Class: event.ToDeviceEventType}

// sendToDevice sends one message of content {"n": n} to each (user, device) of to,
// with transaction id txn, and returns the status and errcode.
func sendToDevice(ctx context.Context, t *testing.T, from *mautrix.Client, txn string, n int, to map[id.UserID][]string) (int, string) {
	t.Helper()
	messages := map[id.UserID]map[string]any{}
	for u, devices := range to {
		messages[u] = map[string]any{}
		for _, d := range devices {
			messages[u][d] = map[string]any{"n": n}
		}
	}
	body, _ := json.Marshal(map[string]any{"messages": messages})
	status, code, _ := rawRequest(ctx, t, http.MethodPut, from.BuildClientURL("v3", "sendToDevice", toDeviceType.Type, txn), from.AccessToken, body)
	return status, code
}

// toDeviceSync syncs from since and returns the response with the numbers of its
// to-device messages (toDeviceNumbers).
func toDeviceSync(ctx context.Context, t *testing.T, c *mautrix.Client, since string, timeout int, sender id.UserID) (*mautrix.RespSync, []int) {
	t.Helper()
	resp, err := c.SyncRequest(ctx, timeout, since, "", false, "")
	if err != nil {
		t.Fatalf("sync of %s: %v", c.DeviceID, err)
	}
	return resp, toDeviceNumbers(t, resp, sender)
}

// toDeviceNumbers are the numbers of a sync's to-device messages, in order; each
// message must be of the test's type and from sender.
func toDeviceNumbers(t *testing.T, resp *mautrix.RespSync, sender id.UserID) []int {
	t.Helper()
	var ns []int
	for _, ev := range resp.ToDevice.Events {
		if ev.Type.Type != toDeviceType.Type || ev.Sender != sender {
			t.Errorf("to-device message %s from %s, want %s from %s", ev.Type.Type, ev.Sender, toDeviceType.Type, sender)
		}
		n, _ := ev.Content.Raw["n"].(float64)
		ns = append(ns, int(n))
	}
	return ns
}

func wantNumbers(t *testing.T, what string, got []int, want ...int) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) && !(len(got) == 0 && len(want) == 0) {
		t.Errorf("%s: got %v, want %v", what, got, want)
	}
}

// inboxHeld is what a device's inbox holds: rows in Postgres, messages in its subject
// of the log.
func (d *deployment) inboxHeld(ctx context.Context, user id.UserID, device id.DeviceID) (rows int, logged uint64) {
	d.t.Helper()
	d.query(ctx, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, "SELECT count(*) FROM device_inbox WHERE user_id = $1 AND device_id = $2", user, device).Scan(&rows)
	})
	topo := d.topology()
	subj := topo.UserStreamSubject(schemas.StreamToDevice, user.String(), device.String())
	st, err := d.js.Stream(ctx, topo.UserStreamName(schemas.StreamToDevice))
	if err != nil {
		d.t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		d.t.Fatal(err)
	}
	return rows, info.State.Subjects[subj]
}

// waitInboxEmpty waits until a device's inbox is gone from Postgres and from the log.
func (d *deployment) waitInboxEmpty(ctx context.Context, user id.UserID, device id.DeviceID) {
	d.t.Helper()
	d.waitInbox(ctx, user, device, 0)
}

// waitInbox waits until a device's inbox holds n messages in Postgres and in the log:
// what it synced past is deleted behind its /sync.
func (d *deployment) waitInbox(ctx context.Context, user id.UserID, device id.DeviceID, n int) {
	d.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rows, logged := d.inboxHeld(ctx, user, device)
		if rows == n && logged == uint64(n) {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("inbox of %s holds %d rows and %d log messages, want %d", device, rows, logged, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestToDevice: two users with two devices each. A message reaches the device it names
// and no other, "*" reaches every device of the user, a transaction id delivers once
// however often it is retried, messages are deleted (rows and log) once their device
// syncs past them, 1,200 messages arrive in order in two syncs whose token stops at the
// last one given, and every malformed request gets the spec's error.
func TestToDevice(t *testing.T) {
	ctx, d, hs := mainProcess(t, deploymentOptions{externalNATS: true})
	alice := newUser(ctx, t, hs.url(), "alice")
	alice2 := login(ctx, t, hs.url(), "alice", "")
	bob1 := newUser(ctx, t, hs.url(), "bob")
	bob2 := login(ctx, t, hs.url(), "bob", "")
	bob := bob1.UserID

	tokens := map[*mautrix.Client]string{}
	for _, c := range []*mautrix.Client{alice2, bob1, bob2} {
		r, err := c.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		tokens[c] = r.NextBatch
	}
	// held is how many messages the last sync that brought any brought: the device has
	// not synced past them yet.
	held := map[*mautrix.Client]int{}
	// next is one sync, answered at once: for what should have arrived, or nothing.
	next := func(c *mautrix.Client) []int {
		t.Helper()
		r, ns := toDeviceSync(ctx, t, c, tokens[c], 0, alice.UserID)
		tokens[c] = r.NextBatch
		held[c] = len(ns)
		return ns
	}
	// await long-polls until n messages arrived: a write is answered before this
	// process's sync feed shows it, and sends may become visible one by one.
	await := func(c *mautrix.Client, n int) []int {
		t.Helper()
		var all []int
		for deadline := time.Now().Add(20 * time.Second); len(all) < n && time.Now().Before(deadline); {
			r, ns := toDeviceSync(ctx, t, c, tokens[c], 2000, alice.UserID)
			tokens[c] = r.NextBatch
			all = append(all, ns...)
			if len(ns) > 0 {
				held[c] = len(ns)
			}
		}
		return all
	}

	// To one device; then to every device of bob's; mautrix's own call works too.
	if s, c := sendToDevice(ctx, t, alice, "one", 1, map[id.UserID][]string{bob: {bob1.DeviceID.String()}}); s != http.StatusOK {
		t.Fatalf("send to one device: %d %s", s, c)
	}
	if s, c := sendToDevice(ctx, t, alice, "all", 2, map[id.UserID][]string{bob: {"*"}}); s != http.StatusOK {
		t.Fatalf("send to every device: %d %s", s, c)
	}
	if _, err := alice.SendToDevice(ctx, toDeviceType, &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{
		bob: {bob2.DeviceID: {Raw: map[string]any{"n": 3}}}}}); err != nil {
		t.Fatalf("mautrix SendToDevice: %v", err)
	}
	wantNumbers(t, "bob's first device", await(bob1, 2), 1, 2)
	wantNumbers(t, "bob's second device", await(bob2, 2), 2, 3)
	wantNumbers(t, "alice's other device", next(alice2))

	// Held until the device syncs past them, then gone from Postgres and the log.
	if held[bob1] == 0 {
		t.Fatal("no sync brought bob's first device anything")
	}
	d.waitInbox(ctx, bob, bob1.DeviceID, held[bob1]) // what it synced past goes behind its sync
	wantNumbers(t, "bob's first device again", next(bob1))
	d.waitInboxEmpty(ctx, bob, bob1.DeviceID)

	// Retries of a transaction id: at once, and after the device synced past it.
	for range 3 {
		if s, c := sendToDevice(ctx, t, alice, "retry", 4, map[id.UserID][]string{bob: {"*"}}); s != http.StatusOK {
			t.Fatalf("send retried: %d %s", s, c)
		}
	}
	wantNumbers(t, "a retried transaction", await(bob1, 1), 4)
	wantNumbers(t, "a retried transaction, bob's second device", await(bob2, 1), 4)
	wantNumbers(t, "past the retried transaction", next(bob1))
	d.waitInboxEmpty(ctx, bob, bob1.DeviceID)
	if s, _ := sendToDevice(ctx, t, alice, "retry", 4, map[id.UserID][]string{bob: {"*"}}); s != http.StatusOK {
		t.Fatalf("late retry: %d", s)
	}
	// The same transaction id from alice's other device is another transaction.
	if s, _ := sendToDevice(ctx, t, alice2, "retry", 5, map[id.UserID][]string{bob: {bob1.DeviceID.String()}}); s != http.StatusOK {
		t.Fatalf("send from another device: %d", s)
	}
	wantNumbers(t, "a late retry, and another device's transaction", await(bob1, 1), 5)

	// Unknown users and devices, and remote users, are skipped.
	if s, c := sendToDevice(ctx, t, alice, "unknown", 6, map[id.UserID][]string{id.UserID("@nobody:" + d.serverName): {"*"},
		bob: {"NODEVICE"}, "@carol:remote.example": {"X"}}); s != http.StatusOK {
		t.Fatalf("send to unknown recipients: %d %s", s, c)
	}

	// A long-poll wakes for a to-device message.
	woken := longPoll(ctx, t, bob2, 30000, tokens[bob2], "", false, "")
	time.Sleep(200 * time.Millisecond)
	sendToDevice(ctx, t, alice, "wake", 7, map[id.UserID][]string{bob: {bob2.DeviceID.String()}})
	select {
	case r := <-woken:
		if r != nil {
			wantNumbers(t, "long-poll woken by a to-device message", toDeviceNumbers(t, r, alice.UserID), 7)
			tokens[bob2] = r.NextBatch
		}
	case <-time.After(20 * time.Second):
		t.Fatal("long-poll not woken by a to-device message")
	}

	// 1,200 messages to one device: in order, 1,000 in the first sync, whose token stops
	// at its last message, the other 200 after it (in the next sync, once this process's
	// feed shows the last ones).
	const many = 1200
	for i := range many {
		if s, c := sendToDevice(ctx, t, alice, fmt.Sprintf("many-%d", i), 100+i, map[id.UserID][]string{bob: {bob2.DeviceID.String()}}); s != http.StatusOK {
			t.Fatalf("send %d: %d %s", i, s, c)
		}
	}
	first := next(bob2)
	second := await(bob2, many-len(first))
	if len(first) != 1000 || len(first)+len(second) != many {
		t.Errorf("%d messages arrived as %d in the first sync and %d after, want 1000 and %d", many, len(first), len(second), many-1000)
	}
	for i, n := range append(first, second...) {
		if n != 100+i {
			t.Fatalf("message %d is number %d: out of order", i, n)
		}
	}
	wantNumbers(t, "after the many", next(bob2))
	d.waitInboxEmpty(ctx, bob, bob2.DeviceID)

	// Malformed requests.
	url := alice.BuildClientURL("v3", "sendToDevice", toDeviceType.Type, "bad")
	for _, tc := range []struct {
		what   string
		body   string
		status int
		code   string
	}{
		{"not JSON", `{"messages":`, 400, "M_NOT_JSON"},
		{"no messages", `{}`, 400, "M_MISSING_PARAM"},
		{"messages not an object", `{"messages":[]}`, 400, "M_BAD_JSON"},
		{"devices not an object", `{"messages":{"` + bob.String() + `":[1]}}`, 400, "M_BAD_JSON"},
		{"content not an object", `{"messages":{"` + bob.String() + `":{"X":"text"}}}`, 400, "M_BAD_JSON"},
		{"a bad user ID", `{"messages":{"bob":{"X":{}}}}`, 400, "M_INVALID_PARAM"},
		{"content too large", `{"messages":{"` + bob.String() + `":{"X":{"k":"` + strings.Repeat("x", 70000) + `"}}}}`, 413, "M_TOO_LARGE"},
		{"body too large", `{"messages":{"` + bob.String() + `":{"X":{"k":"` + strings.Repeat("x", 800<<10) + `"}}}}`, 413, "M_TOO_LARGE"},
	} {
		if s, c, body := rawRequest(ctx, t, http.MethodPut, url, alice.AccessToken, []byte(tc.body)); s != tc.status || c != tc.code {
			t.Errorf("%s: %d %s (%s), want %d %s", tc.what, s, c, body, tc.status, tc.code)
		}
	}
	if s, c, _ := rawRequest(ctx, t, http.MethodPut, alice.BuildClientURL("v3", "sendToDevice", "m.x", strings.Repeat("t", 1100)),
		alice.AccessToken, []byte(`{"messages":{}}`)); s != 400 || c != "M_INVALID_PARAM" {
		t.Errorf("transaction id too long: %d %s", s, c)
	}
	if s, c, _ := rawRequest(ctx, t, http.MethodPut, url, "", []byte(`{"messages":{}}`)); s != 401 || c != "M_MISSING_TOKEN" {
		t.Errorf("without a token: %d %s", s, c)
	}
	wantNumbers(t, "after the malformed requests", next(bob1))

	// Devices that go take their inboxes with them: a logout, then a logout of all.
	gone1, gone2 := bob1.DeviceID, bob2.DeviceID
	sendToDevice(ctx, t, alice, "last", 9, map[id.UserID][]string{bob: {"*"}})
	for _, dev := range []id.DeviceID{gone1, gone2} {
		d.waitInbox(ctx, bob, dev, 1) // before it goes
	}
	if _, err := bob1.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	d.waitInboxEmpty(ctx, bob, gone1)
	if rows, _ := d.inboxHeld(ctx, bob, gone2); rows != 1 {
		t.Errorf("inbox of the device still there: %d rows", rows)
	}
	if _, err := bob2.LogoutAll(ctx); err != nil {
		t.Fatal(err)
	}
	d.waitInboxEmpty(ctx, bob, gone2)
}

// TestToDeviceBound: a device that never syncs holds the newest messages up to
// max_to_device_messages_per_device; the oldest are dropped, and the drop logged.
func TestToDeviceBound(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{externalNATS: true})
	d.shared["max_to_device_messages_per_device"] = 5
	hs := d.startMain()
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")
	for i := range 8 {
		sendToDevice(ctx, t, alice, fmt.Sprint(i), i, map[id.UserID][]string{bob.UserID: {bob.DeviceID.String()}})
	}
	d.waitInbox(ctx, bob.UserID, bob.DeviceID, 5) // sends are answered before their projection
	// An initial sync, then long-polls for what this process's feed did not show yet.
	r, ns := toDeviceSync(ctx, t, bob, "", 0, alice.UserID)
	for deadline := time.Now().Add(20 * time.Second); len(ns) < 5 && time.Now().Before(deadline); {
		var more []int
		r, more = toDeviceSync(ctx, t, bob, r.NextBatch, 2000, alice.UserID)
		ns = append(ns, more...)
	}
	wantNumbers(t, "a full inbox", ns, 3, 4, 5, 6, 7)
	hs.waitLogged("dropped its oldest messages")
}

// checkToDeviceAcross: a message sent through one gateway reaches the recipient's device
// syncing on the other, once: a retry of its transaction through the first gateway
// delivers nothing more.
func checkToDeviceAcross(ctx context.Context, t *testing.T, c streamClients) {
	first, err := c.bob.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	txn, marker := "across-"+randomLetters(8), rand.IntN(1_000_000)
	to := map[id.UserID][]string{c.bob.UserID: {c.bob.DeviceID.String()}}
	if s, code := sendToDevice(ctx, t, at(c.alice, c.bob.HomeserverURL.String()), txn, marker, to); s != http.StatusOK {
		t.Fatalf("send: %d %s", s, code)
	}
	since := syncUntil(ctx, t, c.bob, first.NextBatch, "a to-device message sent through the other gateway", func(r *mautrix.RespSync) bool {
		return slices.Contains(toDeviceNumbers(t, r, c.alice.UserID), marker)
	})
	if s, code := sendToDevice(ctx, t, c.alice, txn, marker, to); s != http.StatusOK {
		t.Fatalf("retry: %d %s", s, code)
	}
	if r, ns := toDeviceSync(ctx, t, c.bob, since, 1000, c.alice.UserID); len(ns) != 0 {
		t.Errorf("after a retry: %v (next %s)", ns, r.NextBatch)
	}
}

// toDeviceRedisCheck sends a message to every device of bob's; Synapse's to_device row
// is [entity], the local user whose inbox changed.
var toDeviceRedisCheck = redisStreamCheck{
	stream: "to_device",
	act: func(ctx context.Context, t *testing.T, alice, bob *mautrix.Client, _ id.RoomID) {
		if s, code := sendToDevice(ctx, t, alice, "redis", 1, map[id.UserID][]string{bob.UserID: {"*"}}); s != http.StatusOK {
			t.Fatalf("send: %d %s", s, code)
		}
	},
	row: func(f []json.RawMessage, _, bob *mautrix.Client, _ id.RoomID) (bool, error) {
		var entity string
		if len(f) != 1 || json.Unmarshal(f[0], &entity) != nil {
			return false, errors.New("want [entity]")
		}
		return entity == bob.UserID.String(), nil
	},
}
