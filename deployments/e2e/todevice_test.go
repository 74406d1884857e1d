package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
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

// loginDevice logs an existing user in again: a new device of theirs.
func loginDevice(ctx context.Context, t *testing.T, baseURL, localpart string) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(baseURL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Password: password, StoreCredentials: true,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: localpart}}); err != nil {
		t.Fatalf("login %s: %v", localpart, err)
	}
	return cli
}

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
	deadline := time.Now().Add(10 * time.Second)
	for {
		rows, logged := d.inboxHeld(ctx, user, device)
		if rows == 0 && logged == 0 {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("inbox of %s still holds %d rows and %d log messages", device, rows, logged)
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
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{externalNATS: true})
	hs := d.startMain()
	alice := newUser(ctx, t, hs.url(), "alice")
	alice2 := loginDevice(ctx, t, hs.url(), "alice")
	bob1 := newUser(ctx, t, hs.url(), "bob")
	bob2 := loginDevice(ctx, t, hs.url(), "bob")
	bob := bob1.UserID

	tokens := map[*mautrix.Client]string{}
	for _, c := range []*mautrix.Client{alice2, bob1, bob2} {
		r, err := c.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		tokens[c] = r.NextBatch
	}
	next := func(c *mautrix.Client, timeout int) []int {
		t.Helper()
		r, ns := toDeviceSync(ctx, t, c, tokens[c], timeout, alice.UserID)
		tokens[c] = r.NextBatch
		return ns
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
	wantNumbers(t, "bob's first device", next(bob1, 0), 1, 2)
	wantNumbers(t, "bob's second device", next(bob2, 0), 2, 3)
	wantNumbers(t, "alice's other device", next(alice2, 0))

	// Held until the device syncs past them, then gone from Postgres and the log.
	if rows, logged := d.inboxHeld(ctx, bob, bob1.DeviceID); rows != 2 || logged != 2 {
		t.Errorf("before bob's device synced past its messages: %d rows, %d log messages", rows, logged)
	}
	wantNumbers(t, "bob's first device again", next(bob1, 0))
	d.waitInboxEmpty(ctx, bob, bob1.DeviceID)

	// Retries of a transaction id: at once, and after the device synced past it.
	for range 3 {
		if s, c := sendToDevice(ctx, t, alice, "retry", 4, map[id.UserID][]string{bob: {"*"}}); s != http.StatusOK {
			t.Fatalf("send retried: %d %s", s, c)
		}
	}
	wantNumbers(t, "a retried transaction", next(bob1, 0), 4)
	wantNumbers(t, "a retried transaction, bob's second device", next(bob2, 0), 4)
	wantNumbers(t, "past the retried transaction", next(bob1, 0))
	d.waitInboxEmpty(ctx, bob, bob1.DeviceID)
	if s, _ := sendToDevice(ctx, t, alice, "retry", 4, map[id.UserID][]string{bob: {"*"}}); s != http.StatusOK {
		t.Fatalf("late retry: %d", s)
	}
	// The same transaction id from alice's other device is another transaction.
	if s, _ := sendToDevice(ctx, t, alice2, "retry", 5, map[id.UserID][]string{bob: {bob1.DeviceID.String()}}); s != http.StatusOK {
		t.Fatalf("send from another device: %d", s)
	}
	r, ns := toDeviceSync(ctx, t, bob1, tokens[bob1], 0, alice.UserID)
	tokens[bob1] = r.NextBatch
	wantNumbers(t, "a late retry, and another device's transaction", ns, 5)

	// Unknown users and devices, and remote users, are skipped.
	if s, c := sendToDevice(ctx, t, alice, "unknown", 6, map[id.UserID][]string{id.UserID("@nobody:" + d.serverName): {"*"},
		bob: {"NODEVICE"}, "@carol:remote.example": {"X"}}); s != http.StatusOK {
		t.Fatalf("send to unknown recipients: %d %s", s, c)
	}

	// A long-poll wakes for a to-device message.
	woken := make(chan *mautrix.RespSync, 1)
	go func() {
		r, err := bob2.SyncRequest(ctx, 30000, tokens[bob2], "", false, "")
		if err != nil {
			t.Error(err)
		}
		woken <- r
	}()
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
	// at its last message, the other 200 in the next.
	const many = 1200
	for i := range many {
		if s, c := sendToDevice(ctx, t, alice, fmt.Sprintf("many-%d", i), 100+i, map[id.UserID][]string{bob: {bob2.DeviceID.String()}}); s != http.StatusOK {
			t.Fatalf("send %d: %d %s", i, s, c)
		}
	}
	first := next(bob2, 0)
	second := next(bob2, 0)
	if len(first) != 1000 || len(first)+len(second) != many {
		t.Errorf("%d messages arrived in syncs of %d and %d, want 1000 and %d", many, len(first), len(second), many-1000)
	}
	for i, n := range append(first, second...) {
		if n != 100+i {
			t.Fatalf("message %d is number %d: out of order", i, n)
		}
	}
	wantNumbers(t, "after the many", next(bob2, 0))
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
	wantNumbers(t, "after the malformed requests", next(bob1, 0))

	// A device that goes takes its inbox with it.
	sendToDevice(ctx, t, alice, "last", 9, map[id.UserID][]string{bob: {bob1.DeviceID.String()}})
	gone := bob1.DeviceID
	if rows, _ := d.inboxHeld(ctx, bob, gone); rows != 1 {
		t.Fatalf("inbox before the device goes: %d rows", rows)
	}
	if _, err := bob1.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	d.waitInboxEmpty(ctx, bob, gone)
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
	if rows, logged := d.inboxHeld(ctx, bob.UserID, bob.DeviceID); rows != 5 || logged != 5 {
		t.Errorf("a full inbox holds %d rows and %d log messages, want 5", rows, logged)
	}
	_, ns := toDeviceSync(ctx, t, bob, "", 0, alice.UserID)
	wantNumbers(t, "a full inbox", ns, 3, 4, 5, 6, 7)
	hs.waitLogged("dropped its oldest messages")
}

// TestToDeviceReplication: the to_device writer announces its rows on Redis in Synapse's
// format, RDATA to_device <instance> <token> ["<recipient>"], and its positions.
func TestToDeviceReplication(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{redis: map[string]any{"enabled": true, "host": "127.0.0.1", "port": 6379}})
	log, _ := subscribe(ctx, t, d.serverName)
	hs := d.startMain()
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")
	if s, c := sendToDevice(ctx, t, alice, "r", 1, map[id.UserID][]string{bob.UserID: {"*"}}); s != http.StatusOK {
		t.Fatalf("send: %d %s", s, c)
	}
	// Bob has two devices (registration and login): two rows naming him.
	rows := func(msgs []string) (out [][]string, tokens []int64) {
		for _, m := range msgs {
			rest, ok := strings.CutPrefix(m, "RDATA to_device master ")
			if !ok {
				continue
			}
			token, row, _ := strings.Cut(rest, " ")
			var entity []string
			n, err := strconv.ParseInt(token, 10, 64)
			if err != nil || json.Unmarshal([]byte(row), &entity) != nil {
				t.Errorf("%q: not RDATA <token> [entity]", m)
				continue
			}
			out, tokens = append(out, entity), append(tokens, n)
		}
		return out, tokens
	}
	msgs, err := log.waitFor(ctx, func(msgs []string) bool {
		r, _ := rows(msgs)
		return len(r) >= 2 && slices.ContainsFunc(msgs, func(m string) bool { return strings.HasPrefix(m, "POSITION to_device master ") })
	})
	if err != nil {
		t.Fatalf("no to_device rows and position: %v; got %q", err, msgs)
	}
	got, tokens := rows(msgs)
	if len(got) != 2 || fmt.Sprint(got) != fmt.Sprintf("[[%s] [%s]]", bob.UserID, bob.UserID) || tokens[0] >= tokens[1] {
		t.Errorf("to_device rows %v with tokens %v, want two rows naming %s with rising tokens", got, tokens, bob.UserID)
	}
}
