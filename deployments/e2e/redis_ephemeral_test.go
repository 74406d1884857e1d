package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// streamRows parses the RDATA rows of one stream from a channel log, checking Synapse's
// wire format: a POSITION of the stream before any RDATA, integer tokens that move
// forward, compact ASCII JSON rows.
func streamRows(t *testing.T, msgs []string, stream, instance string) [][]json.RawMessage {
	t.Helper()
	var rows [][]json.RawMessage
	var announced int64
	started := false
	for _, m := range msgs {
		name, payload, _ := strings.Cut(m, " ")
		f := strings.SplitN(payload, " ", 4)
		if name != "POSITION" && name != "RDATA" || len(f) < 4 || f[0] != stream {
			continue
		}
		if f[1] != instance {
			t.Errorf("%q: want instance %s", m, instance)
			continue
		}
		if name == "POSITION" {
			next, err := strconv.ParseInt(f[3], 10, 64)
			if err != nil {
				t.Errorf("%q: token is not an integer", m)
			}
			started, announced = true, max(announced, next)
			continue
		}
		if !started {
			t.Errorf("%q: RDATA before any POSITION of %s (receivers drop it)", m, stream)
		}
		token, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil || token <= announced {
			t.Errorf("%q: token %q does not move past %d", m, f[2], announced)
		}
		announced = max(announced, token)
		for _, b := range []byte(f[3]) {
			if b >= 0x80 {
				t.Errorf("%q: row JSON is not ASCII-escaped", m)
			}
		}
		var row []json.RawMessage
		if err := json.Unmarshal([]byte(f[3]), &row); err != nil {
			t.Errorf("%q: row is not a JSON array", m)
			continue
		}
		rows = append(rows, row)
	}
	return rows
}

// Redis replication of the typing and receipts streams: POSITION, then RDATA rows in
// Synapse's formats, [room_id, [user_ids]] and [room_id, receipt_type, user_id,
// event_id, thread_id|null, data].
func TestRedisTypingAndReceipts(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{redis: map[string]any{"enabled": true, "host": "127.0.0.1", "port": 6379}})
	log, _ := subscribe(ctx, t, d.serverName)
	hs := d.startMain()
	alice := newUser(ctx, t, hs.url(), "alice")
	room := createRoomWith(ctx, t, alice, "")
	ev, err := sendText(ctx, alice, room, "t1", "hello")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.UserTyping(ctx, room, true, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := alice.SendReceipt(ctx, room, ev, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}

	typingRow := fmt.Sprintf(`["%s",["%s"]]`, room, alice.UserID)
	receiptPrefix := fmt.Sprintf(`["%s","m.read","%s","%s",null,{"ts":`, room, alice.UserID, ev)
	msgs, err := log.waitFor(ctx, func(msgs []string) bool {
		var typing, receipt bool
		for _, m := range msgs {
			typing = typing || strings.HasPrefix(m, "RDATA typing master ") && strings.HasSuffix(m, " "+typingRow)
			receipt = receipt || strings.HasPrefix(m, "RDATA receipts master ") && strings.Contains(m, " "+receiptPrefix)
		}
		return typing && receipt
	})
	if err != nil {
		t.Fatalf("no typing and receipt rows: %v; got %q", err, msgs)
	}
	for _, r := range streamRows(t, msgs, "typing", "master") {
		var roomID string
		var users []id.UserID
		if len(r) != 2 || json.Unmarshal(r[0], &roomID) != nil || json.Unmarshal(r[1], &users) != nil {
			t.Errorf("typing row %s", r)
		}
	}
	for _, r := range streamRows(t, msgs, "receipts", "master") {
		var data struct {
			TS int64 `json:"ts"`
		}
		if len(r) != 6 || json.Unmarshal(r[5], &data) != nil || data.TS == 0 {
			t.Errorf("receipt row %s", r)
		}
	}
}
