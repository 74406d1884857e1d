package persister

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"go.uber.org/zap/zaptest"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/pgtest"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
	"github.com/ganglionhq/ganglion/streams/natstest"
)

// cluster is a test's bus and database with event writers on them.
type cluster struct {
	t    testing.TB
	env  *natstest.Env
	db   *persist.DB
	key  ed25519.PrivateKey
	seen atomic.Int64
	// writers by name, for their metrics.
	writers map[string]*Persister
}

func newCluster(t testing.TB) *cluster { return newClusterOn(t, pgtest.DSN(t)) }

// newClusterOn is newCluster with the database at dsn.
func newClusterOn(t testing.TB, dsn string) *cluster {
	env := natstest.Start(t)
	ctx := context.Background()
	db, err := persist.Open(ctx, dsn, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	_, key, _ := ed25519.GenerateKey(nil)
	return &cluster{t: t, env: env, db: db, key: key, writers: map[string]*Persister{}}
}

// writer starts an event writer called name and returns a client whose intents all go
// to it (its own one-writer shard map), as a mis-configured deployment would.
func (c *cluster) writer(name string, delay time.Duration, tune ...func(*Config)) *streams.IntentClient {
	ctx, cancel := context.WithCancel(context.Background())
	cfg := Config{
		Name: name, ServerName: "test", KeyID: "ed25519:t", Key: c.key,
		Topology: c.env.Topology, JS: c.env.JS, NC: c.env.NC, DB: c.db,
		Log: zaptest.NewLogger(c.t), ProjectionDelay: delay,
	}
	for _, f := range tune {
		f(&cfg)
	}
	p := New(cfg)
	c.writers[name] = p
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	c.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && ctx.Err() == nil {
			c.t.Errorf("writer %s: %v", name, err)
		}
	})
	return &streams.IntentClient{Topology: c.env.Topology, JS: c.env.JS, NC: c.env.NC,
		Shards: streams.StaticShards{name}, Waiters: &streams.Waiters{}, Log: zaptest.NewLogger(c.t)}
}

// settled waits until every writer projected what it answered: answers come at the
// append, projections behind them.
func (c *cluster) settled() {
	for _, p := range c.writers {
		p.flushProjections(context.Background())
	}
}

func (c *cluster) nextID() string {
	return fmt.Sprintf("intent-%d", c.seen.Add(1))
}

func submit(t testing.TB, ic *streams.IntentClient, in *schemas.Intent) *schemas.IntentResult {
	t.Helper()
	in.V = schemas.IntentVersion
	res, err := ic.Submit(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func state(typ, key string, content any) schemas.ProtoEvent {
	raw, _ := json.Marshal(content)
	return schemas.ProtoEvent{Type: typ, StateKey: &key, Content: raw}
}

const (
	roomID = "!room:test"
	alice  = "@alice:test"
	bob    = "@bob:test"
)

// createBareRoom creates a room of just its create event and alice's join.
func (c *cluster) createBareRoom(ic *streams.IntentClient, room string) {
	res := submit(c.t, ic, &schemas.Intent{Kind: schemas.KindCreateRoom, ID: c.nextID(), RoomID: room, Sender: alice,
		CreateRoom: &schemas.CreateRoom{RoomVersion: "11", Events: []schemas.ProtoEvent{
			state("m.room.create", "", map[string]string{"room_version": "11"}),
			state("m.room.member", alice, map[string]string{"membership": "join"}),
		}}})
	if res.Error != nil {
		c.t.Fatal(res.Error)
	}
}

func (c *cluster) createRoom(ic *streams.IntentClient) {
	res := submit(c.t, ic, &schemas.Intent{Kind: schemas.KindCreateRoom, ID: c.nextID(), RoomID: roomID, Sender: alice,
		CreateRoom: &schemas.CreateRoom{RoomVersion: "11", Events: []schemas.ProtoEvent{
			state("m.room.create", "", map[string]string{"room_version": "11"}),
			state("m.room.member", alice, map[string]string{"membership": "join"}),
			state("m.room.power_levels", "", map[string]any{"users": map[string]int{alice: 100}, "state_default": 50, "ban": 50}),
			state("m.room.join_rules", "", map[string]string{"join_rule": "public"}),
		}}})
	if res.Error != nil || len(res.EventIDs) != 4 {
		c.t.Fatalf("createRoom: %+v", res)
	}
}

func (c *cluster) message(ic *streams.IntentClient, sender, body string) *schemas.IntentResult {
	raw, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": body})
	return submit(c.t, ic, &schemas.Intent{Kind: schemas.KindClientEvent, ID: c.nextID(), RoomID: roomID, Sender: sender,
		Event: &schemas.ProtoEvent{Type: "m.room.message", Content: raw}})
}

func (c *cluster) member(ic *streams.IntentClient, sender, target, membership string) *schemas.IntentResult {
	ev := state("m.room.member", target, map[string]string{"membership": membership})
	return submit(c.t, ic, &schemas.Intent{Kind: schemas.KindClientEvent, ID: c.nextID(), RoomID: roomID, Sender: sender, Event: &ev})
}

func wantError(t *testing.T, res *schemas.IntentResult, status int, code string) {
	t.Helper()
	if res.Error == nil || res.Error.Status != status || res.Error.Code != code {
		t.Fatalf("want %d %s, got %+v", status, code, res)
	}
}

func TestAuthRulesAndDedup(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	w := c.writer("w1", 0)
	c.createRoom(w)

	wantError(t, c.message(w, bob, "not a member"), 403, "M_FORBIDDEN")
	if res := c.member(w, bob, bob, "join"); res.Error != nil {
		t.Fatalf("bob joins a public room: %+v", res.Error)
	}
	// Bob (power 0) may not set state that needs 50.
	topic := state("m.room.topic", "", map[string]string{"topic": "x"})
	res := submit(t, w, &schemas.Intent{Kind: schemas.KindClientEvent, ID: c.nextID(), RoomID: roomID, Sender: bob, Event: &topic})
	wantError(t, res, 403, "M_FORBIDDEN")
	// Below the redact level, users may redact only their own events.
	mine, theirs := c.message(w, bob, "bob's"), c.message(w, alice, "alice's")
	redact := func(target string) *schemas.IntentResult {
		return submit(t, w, &schemas.Intent{Kind: schemas.KindClientEvent, ID: c.nextID(), RoomID: roomID, Sender: bob,
			Event: &schemas.ProtoEvent{Type: "m.room.redaction", Content: json.RawMessage(`{}`), Redacts: target}})
	}
	wantError(t, redact(theirs.EventIDs[0]), 403, "M_FORBIDDEN")
	if res := redact(mine.EventIDs[0]); res.Error != nil {
		t.Fatalf("redacting one's own event: %+v", res.Error)
	}
	// Banned users cannot come back.
	if res := c.member(w, alice, bob, "ban"); res.Error != nil {
		t.Fatalf("ban: %+v", res.Error)
	}
	wantError(t, c.member(w, bob, bob, "join"), 403, "M_FORBIDDEN")

	// The same intent twice yields the same event, stored once.
	raw, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": "once"})
	in := &schemas.Intent{Kind: schemas.KindClientEvent, ID: "txn-fixed", RoomID: roomID, Sender: alice,
		Event: &schemas.ProtoEvent{Type: "m.room.message", Content: raw}}
	first := submit(t, w, in)
	again := submit(t, w, in)
	if first.Error != nil || len(first.EventIDs) != 1 || again.EventIDs[0] != first.EventIDs[0] {
		t.Fatalf("dedup: first %+v again %+v", first, again)
	}
	var n int
	c.settled()
	if err := c.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE txn_id IS NULL AND json LIKE '%"once"%'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("event stored %d times (%v)", n, err)
	}
	wantError(t, submit(t, w, &schemas.Intent{Kind: schemas.KindClientEvent, ID: c.nextID(), RoomID: "!nowhere:test", Sender: alice,
		Event: &schemas.ProtoEvent{Type: "m.room.message", Content: raw}}), 404, "M_NOT_FOUND")
}

// TestSecondWriterCannotFork runs two writers on one room, as a mis-configured shard
// map would. Appends expect the room's last log sequence, so the stale writer fails,
// catches up from the log and builds on the real tip: the room stays one chain.
func TestSecondWriterCannotFork(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	w1 := c.writer("w1", 0)
	w2 := c.writer("w2", 0)
	c.createRoom(w1)
	for i := range 10 {
		// Alternate writers: each time one of them holds a stale view of the room.
		w := w1
		if i%2 == 1 {
			w = w2
		}
		if res := c.message(w, alice, fmt.Sprint(i)); res.Error != nil {
			t.Fatalf("message %d: %+v", i, res.Error)
		}
	}
	c.settled()
	rows, err := c.db.Pool.Query(context.Background(), `SELECT event_id, json FROM events WHERE room_id = $1 ORDER BY seq, idx`, roomID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	ver := gomatrixserverlib.MustGetRoomVersion("11")
	prev, depth, count := "", int64(0), 0
	for rows.Next() {
		var id, js string
		if err := rows.Scan(&id, &js); err != nil {
			t.Fatal(err)
		}
		pdu, err := ver.NewEventFromTrustedJSONWithEventID(id, []byte(js), false)
		if err != nil {
			t.Fatal(err)
		}
		if prev != "" && (len(pdu.PrevEventIDs()) != 1 || pdu.PrevEventIDs()[0] != prev) {
			t.Fatalf("event %s does not follow %s: prev_events %v", id, prev, pdu.PrevEventIDs())
		}
		if pdu.Depth() != depth+1 {
			t.Fatalf("event %s has depth %d after %d", id, pdu.Depth(), depth)
		}
		prev, depth = id, pdu.Depth()
		count++
	}
	if count != 14 {
		t.Fatalf("want 14 events in one chain, got %d", count)
	}
}

// BenchmarkSequentialMessage measures one intent at a time through a writer: publish,
// build, append, project, answer. It is the floor under a client's sequential sends.
func BenchmarkSequentialMessage(b *testing.B) {
	c := newCluster(b)
	w := c.writer("w1", 0)
	c.createRoom(w)
	raw, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": "hello"})
	b.ResetTimer()
	for i := range b.N {
		res, err := w.Submit(context.Background(), &schemas.Intent{V: schemas.IntentVersion, Kind: schemas.KindClientEvent,
			ID: fmt.Sprintf("b%d", i), RoomID: roomID, Sender: alice, Event: &schemas.ProtoEvent{Type: "m.room.message", Content: raw}})
		if err != nil || res.Error != nil {
			b.Fatal(err, res)
		}
	}
}

// TestRedactionsInBothFormats creates a v10 and a v11 room and redacts a message in each:
// v10 carries "redacts" at the top level, v11 inside content (the protocol library
// reads only the top level). Both must be authorised and projected as redactions.
func TestRedactionsInBothFormats(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	w := c.writer("w1", 0)
	for _, version := range []string{"10", "11"} {
		room := "!v" + version + ":test"
		create := map[string]string{"room_version": version}
		if version == "10" {
			create["creator"] = alice
		}
		res := submit(t, w, &schemas.Intent{Kind: schemas.KindCreateRoom, ID: c.nextID(), RoomID: room, Sender: alice,
			CreateRoom: &schemas.CreateRoom{RoomVersion: version, Events: []schemas.ProtoEvent{
				state("m.room.create", "", create),
				state("m.room.member", alice, map[string]string{"membership": "join"}),
				state("m.room.power_levels", "", map[string]any{"users": map[string]int{alice: 100}, "redact": 50}),
			}}})
		if res.Error != nil {
			t.Fatalf("v%s create: %+v", version, res.Error)
		}
		raw, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": "secret"})
		msg := submit(t, w, &schemas.Intent{Kind: schemas.KindClientEvent, ID: c.nextID(), RoomID: room, Sender: alice,
			Event: &schemas.ProtoEvent{Type: "m.room.message", Content: raw}})
		red := submit(t, w, &schemas.Intent{Kind: schemas.KindClientEvent, ID: c.nextID(), RoomID: room, Sender: alice,
			Event: &schemas.ProtoEvent{Type: "m.room.redaction", Content: json.RawMessage(`{"reason":"oops"}`), Redacts: msg.EventIDs[0]}})
		if msg.Error != nil || red.Error != nil {
			t.Fatalf("v%s: message %+v redaction %+v", version, msg.Error, red.Error)
		}
		c.settled()
		ev, err := c.db.GetEvent(context.Background(), msg.EventIDs[0])
		if err != nil {
			t.Fatal(err)
		}
		if ev.RedactedBy != red.EventIDs[0] {
			t.Fatalf("v%s: message redacted by %q, want %q", version, ev.RedactedBy, red.EventIDs[0])
		}
		if bytes.Contains(ev.JSON, []byte("secret")) {
			t.Fatalf("v%s: redacted event still carries its content: %s", version, ev.JSON)
		}
	}
}

// TestLargeEventsSplitAcrossAppends sends many near-limit events to one room at once:
// together they exceed what NATS carries in one message, so the writer must split the
// room's batch across appends rather than fail it.
func TestLargeEventsSplitAcrossAppends(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	w := c.writer("w1", 0)
	c.createRoom(w)
	const n = 30
	body := strings.Repeat("x", 60000)
	var big []*schemas.Intent
	for i := range n {
		big = append(big, textMessage(fmt.Sprintf("big-%d", i), roomID, body))
	}
	submitAll(t, w, big)
	var count int
	c.settled()
	if err := c.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type = 'm.room.message'`).Scan(&count); err != nil || count != n {
		t.Fatalf("%d messages stored (%v), want %d", count, err, n)
	}
	// Each intent was handled on its first delivery: no append failed on the way.
	if m := c.writers["w1"].Metrics.Snapshot(); m.Failed != 0 || m.Retried != 0 {
		t.Fatalf("intents failed and were retried: %+v", m)
	}
}

// TestRoomsReloadAfterEviction keeps two rooms in memory while five are busy: every
// evicted room is loaded again from Postgres and carries on as one chain.
func TestRoomsReloadAfterEviction(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	w := c.writer("w1", 0, func(cfg *Config) { cfg.MaxRooms = 2 })
	rooms := []string{"!a:test", "!b:test", "!c:test", "!d:test", "!e:test"}
	for _, room := range rooms {
		c.createBareRoom(w, room)
	}
	raw, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": "x"})
	for i := range 3 * len(rooms) {
		res := submit(t, w, &schemas.Intent{Kind: schemas.KindClientEvent, ID: c.nextID(), RoomID: rooms[i%len(rooms)],
			Sender: alice, Event: &schemas.ProtoEvent{Type: "m.room.message", Content: raw}})
		if res.Error != nil {
			t.Fatalf("message %d: %+v", i, res.Error)
		}
	}
	if n := len(c.writers["w1"].rooms); n > 2 {
		t.Errorf("%d rooms in memory, MaxRooms is 2", n)
	}
	// Each room is one chain: 2 initial events and 3 messages, depths 1 to 5.
	var bad int
	c.settled()
	if err := c.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM (
		SELECT room_id, array_agg(depth ORDER BY seq, idx) AS depths FROM events GROUP BY room_id) r
		WHERE r.depths <> ARRAY[1,2,3,4,5]::bigint[]`).Scan(&bad); err != nil || bad != 0 {
		t.Fatalf("%d rooms do not form one chain of depths 1..5 (%v)", bad, err)
	}
	if m := c.writers["w1"].Metrics.Snapshot(); m.Failed != 0 {
		t.Fatalf("intents failed after reloads: %+v", m)
	}
}
