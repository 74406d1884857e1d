package userstreams

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/pgtest"
	rulesdb "github.com/ganglionhq/ganglion/persist/pushrules"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/schemas/pushrules"
	"github.com/ganglionhq/ganglion/streams"
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
