package replay_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap/zaptest"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/pgtest"
	"github.com/ganglionhq/ganglion/processors/persister"
	"github.com/ganglionhq/ganglion/processors/replay"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
	"github.com/ganglionhq/ganglion/streams/natstest"
)

// TestReplayRebuildsTheProjections is DESIGN invariant 4: two writers build rooms with
// state changes, memberships, messages and a redaction; replaying their log into an
// empty database yields the same rows.
func TestReplayRebuildsTheProjections(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env := natstest.Start(t)
	original := openDB(t)
	_, key, _ := ed25519.GenerateKey(nil)
	clients := map[string]*streams.IntentClient{}
	for _, name := range []string{"w1", "w2"} {
		p := persister.New(persister.Config{Name: name, ServerName: "test", KeyID: "ed25519:t", Key: key,
			Topology: env.Topology, JS: env.JS, NC: env.NC, DB: original, Log: zaptest.NewLogger(t)})
		done := make(chan struct{})
		go func() { defer close(done); _ = p.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		clients[name] = &streams.IntentClient{Topology: env.Topology, JS: env.JS, NC: env.NC,
			Shards: streams.StaticShards{name}, Waiters: &streams.Waiters{}, Log: zaptest.NewLogger(t)}
	}
	n := 0
	submit := func(w, room string, in schemas.Intent) []string {
		t.Helper()
		n++
		in.V, in.ID, in.RoomID = schemas.IntentVersion, fmt.Sprintf("i%d", n), room
		res, err := clients[w].Submit(ctx, &in)
		if err != nil || res.Error != nil {
			t.Fatalf("intent %d: %v %+v", n, err, res)
		}
		return res.EventIDs
	}
	state := func(typ, key string, content any) schemas.ProtoEvent {
		raw, _ := json.Marshal(content)
		return schemas.ProtoEvent{Type: typ, StateKey: &key, Content: raw}
	}
	for _, w := range []string{"w1", "w2"} {
		room := "!" + w + ":test"
		submit(w, room, schemas.Intent{Kind: schemas.KindCreateRoom, Sender: "@alice:test", CreateRoom: &schemas.CreateRoom{
			RoomVersion: "11", Events: []schemas.ProtoEvent{
				state("m.room.create", "", map[string]string{"room_version": "11"}),
				state("m.room.member", "@alice:test", map[string]string{"membership": "join"}),
				state("m.room.join_rules", "", map[string]string{"join_rule": "public"}),
			}}})
		join := state("m.room.member", "@bob:test", map[string]string{"membership": "join"})
		submit(w, room, schemas.Intent{Kind: schemas.KindClientEvent, Sender: "@bob:test", Event: &join})
		var last []string
		for i := range 5 {
			raw, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": fmt.Sprint(i)})
			last = submit(w, room, schemas.Intent{Kind: schemas.KindClientEvent, Sender: "@bob:test", DeviceID: "D", TxnID: fmt.Sprint(i),
				Event: &schemas.ProtoEvent{Type: "m.room.message", Content: raw}})
		}
		name := state("m.room.name", "", map[string]string{"name": w})
		submit(w, room, schemas.Intent{Kind: schemas.KindClientEvent, Sender: "@alice:test", Event: &name})
		submit(w, room, schemas.Intent{Kind: schemas.KindClientEvent, Sender: "@bob:test",
			Event: &schemas.ProtoEvent{Type: "m.room.redaction", Content: json.RawMessage(`{}`), Redacts: last[0]}})
		leave := state("m.room.member", "@bob:test", map[string]string{"membership": "leave"})
		submit(w, room, schemas.Intent{Kind: schemas.KindClientEvent, Sender: "@bob:test", Event: &leave})
	}

	rebuilt := openDB(t)
	st, err := replay.Run(ctx, env.JS, env.Topology, rebuilt, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Events != 2*12 || len(st.Positions) != 2 {
		t.Fatalf("replay stats %+v, want 24 events from 2 writers", st)
	}
	queries := []string{
		`SELECT event_id, room_id, seq, idx, type, state_key, sender, membership, depth, origin_server_ts, json,
			redacted_by, device_id, txn_id FROM events ORDER BY seq, idx`,
		`SELECT room_id, type, state_key, event_id, seq, idx, membership FROM current_state ORDER BY 1, 2, 3`,
		`SELECT room_id, room_version, creator, last_seq, last_event_id, depth FROM rooms ORDER BY 1`,
		`SELECT intent_id, room_id, seq, event_ids FROM intent_results ORDER BY 1`,
		`SELECT stream_name, instance_name, stream_id FROM stream_positions ORDER BY 1, 2`,
	}
	for _, q := range queries {
		want, got := dump(t, original, q), dump(t, rebuilt, q)
		if len(want) == 0 || !reflect.DeepEqual(want, got) {
			t.Errorf("%s\noriginal: %v\nrebuilt:  %v", q, want, got)
		}
	}
	// Replaying again changes nothing.
	if _, err := replay.Run(ctx, env.JS, env.Topology, rebuilt, zaptest.NewLogger(t)); err != nil {
		t.Fatal(err)
	}
	q := `SELECT count(*) FROM events`
	if want, got := dump(t, original, q), dump(t, rebuilt, q); !reflect.DeepEqual(want, got) {
		t.Errorf("after a second replay: %v events, want %v", got, want)
	}

	// A log that holds a batch twice: the rebuild's copy meets the event already there,
	// falls back to inserting, and makes the rows that inserting all along makes.
	log, err := env.JS.Stream(ctx, env.Topology.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := log.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last, err := log.GetMsg(ctx, info.State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	again := nats.NewMsg(last.Subject)
	again.Data = last.Data
	again.Header.Set(streams.HeaderWriter, last.Header.Get(streams.HeaderWriter))
	if _, err := env.JS.PublishMsg(ctx, again); err != nil {
		t.Fatal(err)
	}
	twice := openDB(t)
	for _, db := range []*persist.DB{twice, rebuilt} { // a copy, then an insert
		if st, err := replay.Run(ctx, env.JS, env.Topology, db, zaptest.NewLogger(t)); err != nil || st.Events != 2*12+1 {
			t.Fatalf("replay of a log holding a batch twice: %+v, %v", st, err)
		}
	}
	for _, q := range queries {
		if want, got := dump(t, rebuilt, q), dump(t, twice, q); len(want) == 0 || !reflect.DeepEqual(want, got) {
			t.Errorf("%s, a batch twice in the log\ninserted: %v\ncopied:   %v", q, want, got)
		}
	}
}

func openDB(t *testing.T) *persist.DB {
	t.Helper()
	db, err := persist.Open(context.Background(), pgtest.DSN(t), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

// dump returns every row of a query as text, for comparing two databases.
func dump(t *testing.T, db *persist.DB, q string) [][]string {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out [][]string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		row := make([]string, len(vals))
		for i, v := range vals {
			row[i] = fmt.Sprint(v)
		}
		out = append(out, row)
	}
	return out
}
