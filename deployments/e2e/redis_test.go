package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"maunium.net/go/mautrix/id"
)

const redisAddr = "127.0.0.1:6379"

// channelLog records everything published on one Redis channel, in order.
type channelLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *channelLog) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.msgs...)
}

// subscribe listens on channel from now until the test ends.
func subscribe(ctx context.Context, t *testing.T, channel string) (*channelLog, *redis.Client) {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { rc.Close() })
	sub := rc.Subscribe(ctx, channel)
	// The first reply confirms the subscription; without it, early messages are lost.
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatalf("subscribe to %s: %v", channel, err)
	}
	l := &channelLog{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := sub.ReceiveMessage(context.Background())
			if err != nil {
				return // closed at cleanup
			}
			l.mu.Lock()
			l.msgs = append(l.msgs, m.Payload)
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { sub.Close(); <-done })
	return l, rc
}

// waitFor polls the channel log until ok accepts it.
func (l *channelLog) waitFor(ctx context.Context, ok func([]string) bool) ([]string, error) {
	for {
		msgs := l.snapshot()
		if ok(msgs) {
			return msgs, nil
		}
		select {
		case <-ctx.Done():
			return msgs, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// evRow is a decoded ["ev",[...]] row with its token.
type evRow struct {
	token                                    int64
	eventID, roomID, typ                     string
	stateKey, redacts, relatesTo, membership *string
	rejected, outlier                        bool
}

// replicationTrace checks the events-stream commands published by one writer instance
// against Synapse's wire format and returns its events rows with the tokens they got.
type replicationTrace struct {
	instance string
	evs      []evRow
	// positions are the POSITION commands as [prev, new].
	positions [][2]int64
	// announced is the last token the instance published (RDATA or POSITION).
	announced int64
	pending   []evRow
	started   bool
	errs      []string
}

func (r *replicationTrace) fail(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *replicationTrace) add(msg string) {
	name, payload, ok := strings.Cut(msg, " ")
	if !ok || strings.ContainsAny(msg, "\r\n") {
		r.fail("%q: not NAME<space>payload on one line", msg)
		return
	}
	switch name {
	case "REPLICATE":
		if payload != "" {
			r.fail("%q: REPLICATE takes no payload", msg)
		}
	case "POSITION":
		f := strings.Split(payload, " ")
		if len(f) != 4 {
			r.fail("%q: POSITION has 4 fields", msg)
			return
		}
		if f[0] != "events" {
			return // other streams are traced by their own tests; receivers batch per stream
		}
		if f[1] != r.instance {
			r.fail("%q: want instance %s", msg, r.instance)
			return
		}
		prev, err1 := strconv.ParseInt(f[2], 10, 64)
		next, err2 := strconv.ParseInt(f[3], 10, 64)
		if err1 != nil || err2 != nil || prev > next {
			r.fail("%q: tokens must be integers with prev <= new", msg)
			return
		}
		if len(r.pending) > 0 {
			r.fail("%q: POSITION inside an RDATA batch (receivers drop the batch)", msg)
		}
		if r.started && prev != r.announced {
			r.fail("%q: prev is not the last announced token %d", msg, r.announced)
		}
		if !r.started && prev != next {
			r.fail("%q: a first announcement has prev == new", msg)
		}
		r.positions = append(r.positions, [2]int64{prev, next})
		r.started, r.announced = true, next
	case "RDATA":
		f := strings.SplitN(payload, " ", 4)
		if len(f) != 4 {
			r.fail("%q: RDATA has 4 fields", msg)
			return
		}
		if f[0] != "events" {
			return // other streams are traced by their own tests; receivers batch per stream
		}
		if f[1] != r.instance {
			r.fail("%q: want instance %s", msg, r.instance)
			return
		}
		if !r.started {
			r.fail("%q: RDATA before any POSITION (receivers drop it)", msg)
		}
		row := []byte(f[3])
		var compact bytes.Buffer
		if err := json.Compact(&compact, row); err != nil || !bytes.Equal(compact.Bytes(), row) {
			r.fail("%q: row is not compact JSON", msg)
			return
		}
		for _, b := range row {
			if b >= 0x80 {
				r.fail("%q: row JSON is not ASCII-escaped", msg)
				return
			}
		}
		var typed []json.RawMessage
		if err := json.Unmarshal(row, &typed); err != nil || len(typed) != 2 {
			r.fail("%q: row is not [type, data]", msg)
			return
		}
		var kind string
		var data []json.RawMessage
		_ = json.Unmarshal(typed[0], &kind)
		if err := json.Unmarshal(typed[1], &data); err != nil {
			r.fail("%q: row data is not an array", msg)
			return
		}
		var ev evRow
		switch {
		case kind == "ev" && len(data) == 9:
			targets := []any{&ev.eventID, &ev.roomID, &ev.typ, &ev.stateKey, &ev.redacts, &ev.relatesTo, &ev.membership, &ev.rejected, &ev.outlier}
			for i, tgt := range targets {
				if err := json.Unmarshal(data[i], tgt); err != nil {
					r.fail("%q: ev field %d: %v", msg, i, err)
					return
				}
			}
			for _, s := range []string{ev.eventID, ev.roomID, ev.typ} {
				if s == "" {
					r.fail("%q: ev row with an empty id or type", msg)
				}
			}
		case kind == "state" && len(data) == 4:
			// Current-state deltas are optional; when sent they come after the ev rows
			// of their token, which the ordering check below sees through pending.
		default:
			r.fail("%q: unknown row type %q with %d fields", msg, kind, len(data))
			return
		}
		if f[2] == "batch" {
			if kind == "ev" {
				r.pending = append(r.pending, ev)
			}
			return
		}
		token, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			r.fail("%q: token is neither an integer nor batch", msg)
			return
		}
		if token <= r.announced {
			r.fail("%q: token %d does not move past the last announced %d (receivers drop it)", msg, token, r.announced)
		}
		if kind == "ev" {
			r.pending = append(r.pending, ev)
		}
		for _, p := range r.pending {
			p.token = token
			r.evs = append(r.evs, p)
		}
		r.pending, r.announced = nil, token
	default:
		r.fail("%q: unexpected command %s", msg, name)
	}
}

// Redis replication: the writer publishes POSITION and RDATA for the events stream on
// the channel named exactly the server name, in Synapse's wire format, one ev row per
// event with the token of its log position, and answers REPLICATE with its position.
func TestRedisReplication(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{redis: map[string]any{"enabled": true, "host": "127.0.0.1", "port": 6379}})
	// Subscribed before the process starts, so its first announcement is seen too.
	log, rc := subscribe(ctx, t, d.serverName)
	hs := d.startMain()
	alice := newUser(ctx, t, hs.url(), "alice")
	room := createRoomWith(ctx, t, alice, "")
	var sent []id.EventID
	for i := range 5 {
		ev, err := sendText(ctx, alice, room, fmt.Sprintf("r%d", i), fmt.Sprintf("message %d", i))
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, ev)
	}
	trace := func(msgs []string) *replicationTrace {
		tr := &replicationTrace{instance: "master"}
		for _, m := range msgs {
			tr.add(m)
		}
		return tr
	}
	hasEvent := func(tr *replicationTrace, ev id.EventID) bool {
		for _, r := range tr.evs {
			if r.eventID == ev.String() {
				return true
			}
		}
		return false
	}
	msgs, err := log.waitFor(ctx, func(msgs []string) bool { return hasEvent(trace(msgs), sent[len(sent)-1]) })
	if err != nil {
		t.Fatalf("no RDATA for %s on channel %s: %v; got %q", sent[len(sent)-1], d.serverName, err, msgs)
	}

	// Ask every writer for its position, as a (re)connecting Synapse worker does.
	if err := rc.Publish(ctx, d.serverName, "REPLICATE ").Err(); err != nil {
		t.Fatal(err)
	}
	// Our REPLICATE is the first one after what was already seen (the emitter sent
	// its own when it connected).
	seen, mark := len(msgs), -1
	msgs, err = log.waitFor(ctx, func(msgs []string) bool {
		for i := seen; mark < 0 && i < len(msgs); i++ {
			if msgs[i] == "REPLICATE " {
				mark = i
			}
		}
		if mark < 0 {
			return false
		}
		for _, m := range msgs[mark:] {
			if strings.HasPrefix(m, "POSITION events ") {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("no POSITION after REPLICATE: %v; got %q", err, msgs)
	}

	tr := trace(msgs)
	for _, e := range tr.errs {
		t.Error(e)
	}
	if len(tr.pending) > 0 {
		t.Errorf("an RDATA batch of %d rows never got its token", len(tr.pending))
	}
	var answer string
	for _, m := range msgs[mark:] {
		if strings.HasPrefix(m, "POSITION events ") {
			answer = m
			break
		}
	}
	var last int64
	for _, r := range tr.evs {
		last = max(last, r.token)
	}
	if want := fmt.Sprintf("POSITION events master %d %d", last, last); answer != want {
		t.Errorf("answer to REPLICATE is %q, want %q (the token of the last row)", answer, want)
	}

	// One ev row per stored event, with the event's fields and its log sequence.
	d.query(ctx, func(conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, `SELECT event_id, room_id, seq, type, state_key, membership FROM events`)
		if err != nil {
			return err
		}
		defer rows.Close()
		byID := map[string]evRow{}
		for _, r := range tr.evs {
			if _, dup := byID[r.eventID]; dup {
				t.Errorf("two ev rows for %s", r.eventID)
			}
			byID[r.eventID] = r
		}
		n := 0
		for rows.Next() {
			var want evRow
			if err := rows.Scan(&want.eventID, &want.roomID, &want.token, &want.typ, &want.stateKey, &want.membership); err != nil {
				return err
			}
			n++
			got, ok := byID[want.eventID]
			if !ok {
				t.Errorf("no ev row for stored event %s (%s)", want.eventID, want.typ)
				continue
			}
			if got.token != want.token || got.roomID != want.roomID || got.typ != want.typ ||
				!sameString(got.stateKey, want.stateKey) || !sameString(got.membership, want.membership) ||
				got.redacts != nil || got.relatesTo != nil || got.rejected || got.outlier {
				t.Errorf("ev row %+v does not match the stored event %+v", got, want)
			}
		}
		if n != len(byID) {
			t.Errorf("%d ev rows for %d stored events", len(byID), n)
		}
		return rows.Err()
	})
	for _, ev := range sent {
		if !hasEvent(tr, ev) {
			t.Errorf("no ev row for sent message %s", ev)
		}
	}
}

func sameString(a, b *string) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

// Redis is never needed for correctness: with Redis configured at a port where nothing
// listens, sends succeed and /sync and /messages see them.
func TestSendsWithRedisDown(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{redis: map[string]any{"enabled": true, "host": "127.0.0.1", "port": freePort(t)}})
	hs := d.startMain()
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")
	room := createRoomWith(ctx, t, alice, "", bob)
	converse(ctx, t, [2]party{{"alice", alice, alice}, {"bob", bob, bob}}, []id.RoomID{room}, 10)
}
