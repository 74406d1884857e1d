package userstreams

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zaptest"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/pgtest"
	rulesdb "github.com/ganglionhq/ganglion/persist/pushrules"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/schemas/pushrules"
	"github.com/ganglionhq/ganglion/streams"
	"github.com/ganglionhq/ganglion/streams/natstest"
)

func pushRuleWrite(t *testing.T, user, op string, c pushrules.Change) *schemas.StreamWrite {
	t.Helper()
	body, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return &schemas.StreamWrite{V: schemas.StreamWriteVersion, ID: op + c.RuleID, Stream: schemas.StreamPushRules, Op: op,
		Key: user, User: user, Body: body}
}

func overrideRule(id, before, after string) pushrules.Change {
	return pushrules.Change{Kind: pushrules.KindOverride, RuleID: id, Before: before, After: after,
		Conditions: json.RawMessage(`[]`), Actions: json.RawMessage(`["notify"]`)}
}

func overrideIDs(s pushrules.State) []string {
	var out []string
	for _, r := range s.Rules[pushrules.KindOverride] {
		out = append(out, r.RuleID)
	}
	return out
}

// The writer applies each change of a batch to the state the changes before it left,
// whoever's they are, refuses those that cannot apply, and projects the latest state
// per user, never an older one.
func TestPushRulesStream(t *testing.T) {
	ctx := context.Background()
	db, err := persist.Open(ctx, pgtest.DSN(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	st := &PushRules{Store: rulesdb.Store{Pool: db.Pool}}
	const alice, bob = "@alice:example.org", "@bob:example.org"
	off := false

	prepare := func(batch ...*schemas.StreamWrite) []Outcome {
		t.Helper()
		out, err := st.Prepare(ctx, batch)
		if err != nil || len(out) != len(batch) {
			t.Fatalf("prepare: %d outcomes, %v", len(out), err)
		}
		return out
	}
	seq := uint64(0)
	project := func(outs ...Outcome) []streams.RawMessage {
		t.Helper()
		var recs []streams.RawMessage
		for _, o := range outs {
			for _, r := range o.Records {
				seq++
				recs = append(recs, streams.RawMessage{Seq: seq, Data: r.Data})
			}
		}
		if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return st.Project(ctx, tx, recs) }); err != nil {
			t.Fatal(err)
		}
		return recs
	}
	stateOf := func(o Outcome) pushrules.State {
		t.Helper()
		if o.Answer != nil || len(o.Records) != 1 {
			t.Fatalf("outcome %+v", o)
		}
		r, err := pushrules.Decode(o.Records[0].Data)
		if err != nil {
			t.Fatal(err)
		}
		return r.Rules
	}

	out := prepare(
		pushRuleWrite(t, alice, pushrules.OpPut, overrideRule("a", "", "")),
		pushRuleWrite(t, bob, pushrules.OpPut, overrideRule("x", "", "")),
		pushRuleWrite(t, alice, pushrules.OpPut, overrideRule("b", "", "a")),
		pushRuleWrite(t, alice, pushrules.OpDelete, pushrules.Change{Kind: pushrules.KindOverride, RuleID: "nope"}),
		pushRuleWrite(t, alice, pushrules.OpEnabled, pushrules.Change{Kind: pushrules.KindOverride, RuleID: "b", Enabled: &off}),
		pushRuleWrite(t, alice, "move", overrideRule("a", "", "")),
		&schemas.StreamWrite{V: 1, ID: "bad", Stream: schemas.StreamPushRules, Op: pushrules.OpPut, Key: alice, User: alice, Body: json.RawMessage(`[]`)},
	)
	if got := overrideIDs(stateOf(out[2])); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("the second change of the batch saw %v", got)
	}
	for i, code := range map[int]string{3: "M_NOT_FOUND", 5: "M_UNKNOWN", 6: "M_BAD_JSON"} {
		if out[i].Answer == nil || out[i].Answer.Error == nil || out[i].Answer.Error.Code != code || len(out[i].Records) != 0 {
			t.Errorf("write %d: %+v, want refused with %s", i, out[i], code)
		}
	}
	last := stateOf(out[4])
	if r := last.Rules[pushrules.KindOverride]; len(r) != 2 || r[1].Enabled {
		t.Errorf("latest state %+v", r)
	}
	if rec := out[4].Records[0]; !reflect.DeepEqual(rec.Key, []string{alice}) || !reflect.DeepEqual(rec.Wake, []string{alice}) {
		t.Errorf("record key %v wake %v", rec.Key, rec.Wake)
	}
	recs := project(out...)
	if row, _ := json.Marshal(st.Row(recs[len(recs)-1])); string(row) != `["@alice:example.org"]` {
		t.Errorf("row %s", row)
	}

	got, pos, err := st.Store.Get(ctx, alice)
	if err != nil || pos != seq || !reflect.DeepEqual(overrideIDs(got), []string{"a", "b"}) || got.Rules[pushrules.KindOverride][1].Enabled {
		t.Fatalf("projected %+v at %d (want %d), %v", got, pos, seq, err)
	}
	// A later batch starts from the projection.
	out = prepare(pushRuleWrite(t, alice, pushrules.OpPut, overrideRule("c", "b", "")))
	if got := overrideIDs(stateOf(out[0])); !reflect.DeepEqual(got, []string{"a", "c", "b"}) {
		t.Errorf("next batch built on %v", got)
	}
	project(out...)

	// Replaying the first records again moves nothing back.
	if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return st.Project(ctx, tx, recs) }); err != nil {
		t.Fatal(err)
	}
	got, pos, err = st.Store.Get(ctx, alice)
	if err != nil || pos != seq || len(got.Rules[pushrules.KindOverride]) != 3 {
		t.Errorf("after replaying older records: %+v at %d, %v", got, pos, err)
	}
	// Someone who never changed anything has the defaults.
	if got, pos, err := st.Store.Get(ctx, "@carol:example.org"); err != nil || pos != 0 || got.Rules != nil {
		t.Errorf("carol: %+v at %d, %v", got, pos, err)
	}
}

// Concurrent changes through a running writer all survive (each applies to the state
// the one before left), are answered with their position, and replaying the stream
// into an empty database rebuilds the same rows.
func TestPushRulesWriterAndReplay(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env := natstest.Start(t)
	db, err := persist.Open(ctx, pgtest.DSN(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	waiters := &streams.Waiters{}
	st := &PushRules{Store: rulesdb.Store{Pool: db.Pool}}
	w, err := New(Config{Name: "master", Stream: st, Topology: env.Topology, JS: env.JS, NC: env.NC, DB: db, Waiters: waiters,
		Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	client := &streams.IntentClient{Topology: env.Topology, JS: env.JS, NC: env.NC, Waiters: waiters,
		StreamWriters: map[string][]string{schemas.StreamPushRules: {"master"}}, Log: zaptest.NewLogger(t)}

	const alice, n = "@alice:example.org", 20
	var wg sync.WaitGroup
	errs := make(chan error, n+1)
	for i := range n {
		wg.Go(func() {
			wr := pushRuleWrite(t, alice, pushrules.OpPut, overrideRule(fmt.Sprintf("r%02d", i), "", ""))
			wr.IssuedAtMS = time.Now().UnixMilli()
			res, err := client.Write(ctx, wr)
			if err == nil && (res.Error != nil || res.Seq == 0) {
				err = fmt.Errorf("write %d answered %+v", i, res)
			}
			errs <- err
		})
	}
	wg.Wait()
	res, err := client.Write(ctx, pushRuleWrite(t, alice, pushrules.OpDelete, pushrules.Change{Kind: pushrules.KindOverride, RuleID: "nope"}))
	if err != nil || res.Error == nil || res.Error.Status != 404 {
		t.Errorf("deleting an unknown rule: %+v, %v", res, err)
	}
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, pos, err := st.Store.Get(ctx, alice)
	if err != nil || len(got.Rules[pushrules.KindOverride]) != n {
		t.Fatalf("after %d concurrent puts: %v at %d, %v", n, overrideIDs(got), pos, err)
	}

	fresh, err := persist.Open(ctx, pgtest.DSN(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fresh.Close)
	if _, positions, err := Replay(ctx, env.JS, env.Topology, fresh, st); err != nil || positions["master"] != pos {
		t.Fatalf("replay: %v, %v (want master at %d)", positions, err, pos)
	}
	rows := func(db *persist.DB) string {
		var out string
		if err := db.Pool.QueryRow(ctx, `SELECT string_agg(user_id || ' ' || rules::text || ' ' || stream_id, ';') FROM user_push_rules`).Scan(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if a, b := rows(db), rows(fresh); a != b {
		t.Errorf("replayed rows differ:\n%s\n%s", a, b)
	}
}
