package persist

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/ganglionhq/ganglion/persist/projtest"
)

// syncRoom is a room of real signed events, projected in log batches at the sequences a
// test chooses, as a writer would.
type syncRoom struct {
	*projtest.Room
	t  *testing.T
	db *DB
}

func newSyncRoom(t *testing.T, db *DB, roomID string) *syncRoom {
	return &syncRoom{Room: projtest.NewRoom(t, roomID, "test"), t: t, db: db}
}

// syncName sets the room name to n.
func syncName(label, sender, n string) projtest.Event {
	return projtest.State(label, "m.room.name", sender, map[string]string{"name": n})
}

// batch appends one log message at seq.
func (r *syncRoom) batch(seq uint64, evs ...projtest.Event) {
	r.t.Helper()
	if err := r.db.Project(context.Background(), projtest.Writer, []BatchAt{{Seq: seq, Batch: r.Batch(evs...)}}); err != nil {
		r.t.Fatal(err)
	}
}

// syncLabels names events by their test labels, in the order given.
func syncLabels(rooms ...*syncRoom) func([]StoredEvent) []string {
	return func(evs []StoredEvent) []string {
		out := make([]string, 0, len(evs))
		for _, e := range evs {
			l := ""
			for _, r := range rooms {
				if l = r.Label(e.EventID); l != "" {
					break
				}
			}
			out = append(out, l)
		}
		return out
	}
}

// syncFixture is two rooms with interleaved history:
//
//	seq 1  r1: create, alice join, name "one"
//	seq 2  r2: create, carol join
//	seq 3  r1: bob invited
//	seq 4  r1: bob joins
//	seq 5  r2: bob invited
//	seq 6  r1: m1, m2, name "two"
//	seq 7  r2: c1
//	seq 8  r1: m3
//	seq 9  r1: bob leaves
//	seq 10 r1: m4, name "three"
func syncFixture(t *testing.T) (db *DB, r1, r2 *syncRoom) {
	db = openTestDB(t)
	r1 = newSyncRoom(t, db, "!one:test")
	r2 = newSyncRoom(t, db, "!two:test")
	const alice, bob, carol = "@alice:test", "@bob:test", "@carol:test"
	r1.batch(1, projtest.State("create1", "m.room.create", alice, map[string]string{"room_version": "11"}),
		projtest.Member("alice", alice, alice, "join"), syncName("name-one", alice, "one"))
	r2.batch(2, projtest.State("create2", "m.room.create", carol, map[string]string{"room_version": "11"}),
		projtest.Member("carol", carol, carol, "join"))
	r1.batch(3, projtest.Member("bob-invite", bob, alice, "invite"))
	r1.batch(4, projtest.Member("bob-join", bob, bob, "join"))
	r2.batch(5, projtest.Member("bob-invite2", bob, carol, "invite"))
	r1.batch(6, projtest.Message("m1", alice), projtest.Message("m2", bob), syncName("name-two", alice, "two"))
	r2.batch(7, projtest.Message("c1", carol))
	r1.batch(8, projtest.Message("m3", alice))
	r1.batch(9, projtest.Member("bob-leave", bob, bob, "leave"))
	r1.batch(10, projtest.Message("m4", alice), syncName("name-three", alice, "three"))
	return db, r1, r2
}

func TestSyncTimelinesCapsEachRoom(t *testing.T) {
	t.Parallel()
	db, r1, r2 := syncFixture(t)
	ctx := context.Background()
	lbl := syncLabels(r1, r2)

	got, err := db.SyncTimelines(ctx, []RoomRange{
		{RoomID: r1.ID, From: Pos{}, To: Pos{Seq: 11}},
		{RoomID: r2.ID, From: Pos{Seq: 6}, To: Pos{Seq: 11}},
		{RoomID: "!absent:test", From: Pos{}, To: Pos{Seq: 11}},
	}, 3, EventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if l := lbl(got[r1.ID]); !slices.Equal(l, []string{"bob-leave", "m4", "name-three"}) {
		t.Errorf("r1 newest 3: %v", l)
	}
	if l := lbl(got[r2.ID]); !slices.Equal(l, []string{"c1"}) {
		t.Errorf("r2 after seq 5: %v", l)
	}
	if _, ok := got["!absent:test"]; ok || len(got) != 2 {
		t.Errorf("rooms returned: %d", len(got))
	}

	// Boundaries inside one log message: [ (6,1), (8,0) ) holds m2 and name-two only.
	got, err = db.SyncTimelines(ctx, []RoomRange{{RoomID: r1.ID, From: Pos{Seq: 6, Idx: 1}, To: Pos{Seq: 8}}}, 10, EventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if l := lbl(got[r1.ID]); !slices.Equal(l, []string{"m2", "name-two"}) {
		t.Errorf("r1 [(6,1), (8,0)): %v", l)
	}
	// A visible position of 7 hides seq 8 and later, and the cap counts from the end.
	got, err = db.SyncTimelines(ctx, []RoomRange{{RoomID: r1.ID, From: Pos{}, To: Pos{Seq: 8}}}, 2, EventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if l := lbl(got[r1.ID]); !slices.Equal(l, []string{"m2", "name-two"}) {
		t.Errorf("r1 up to position 7, limit 2: %v", l)
	}
}

// A filter is applied by Postgres before the limit, '*' is its only wildcard (LIKE's
// '_' and '%' match themselves), and an empty list lets nothing through.
func TestSyncTimelinesFiltered(t *testing.T) {
	t.Parallel()
	db, r1, _ := syncFixture(t)
	ctx := context.Background()
	lbl := syncLabels(r1)
	all := []RoomRange{{RoomID: r1.ID, From: Pos{}, To: Pos{Seq: 11}}}
	list := func(l ...string) *[]string { return &l }
	for _, tc := range []struct {
		name   string
		filter EventFilter
		limit  int
		want   []string
	}{
		{"wildcard type, limit over matches", EventFilter{Types: list("m.room.n*")}, 2, []string{"name-two", "name-three"}},
		{"'_' is not a wildcard", EventFilter{Types: list("m.room_name")}, 10, nil},
		{"'%' is not a wildcard", EventFilter{Types: list("m.room.%")}, 10, nil},
		{"not_types", EventFilter{NotTypes: []string{"m.room.n*", "*.create", "m.room.mem*"}}, 10, []string{"m1", "m2", "m3", "m4"}},
		{"senders", EventFilter{Senders: list("@bob:test"), NotTypes: []string{"m.room.member"}}, 10, []string{"m2"}},
		{"not_senders", EventFilter{NotSenders: []string{"@alice:test"}}, 10, []string{"bob-join", "m2", "bob-leave"}},
		{"empty types", EventFilter{Types: list()}, 10, nil},
		{"not_rooms", EventFilter{NotRooms: []string{r1.ID}}, 10, nil},
		{"rooms", EventFilter{Rooms: list(r1.ID), Types: list("m.room.create")}, 10, []string{"create1"}},
	} {
		got, err := db.SyncTimelines(ctx, all, tc.limit, tc.filter)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if l := lbl(got[r1.ID]); !slices.Equal(l, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, l, tc.want)
		}
	}
}

func TestSyncMembershipsAtAPosition(t *testing.T) {
	t.Parallel()
	db, r1, r2 := syncFixture(t)
	ctx := context.Background()
	show := func(ms []SyncMembership) string {
		var out string
		for _, m := range ms {
			out += fmt.Sprintf("%s=%s@%d.%d(before %q) ", m.RoomID, m.Membership, m.At.Seq, m.At.Idx, m.Before)
		}
		return out
	}
	cases := []struct {
		since, upTo uint64
		want        string
	}{
		// Current memberships; nothing was known at 0.
		{0, 10, `!one:test=leave@9.0(before "") !two:test=invite@5.0(before "") `},
		// At 8, r1's current row (the leave at 9) is not visible yet: the join counts,
		// and at 3 bob was invited. r2's invite came after 3, when bob had nothing.
		{3, 8, `!one:test=join@4.0(before "invite") !two:test=invite@5.0(before "") `},
		// At 4 the r2 invite does not exist yet; r1 did not change after 4.
		{4, 4, `!one:test=join@4.0(before "") `},
		// Before bob's first membership there is nothing.
		{0, 2, ``},
	}
	for _, c := range cases {
		ms, err := db.SyncMemberships(ctx, "@bob:test", c.since, c.upTo)
		if err != nil {
			t.Fatal(err)
		}
		if got := show(ms); got != c.want {
			t.Errorf("since %d, up to %d:\n got %s\nwant %s", c.since, c.upTo, got, c.want)
		}
		for _, m := range ms {
			room := map[string]*syncRoom{r1.ID: r1, r2.ID: r2}[m.RoomID]
			if ev, err := db.GetEvent(ctx, m.EventID); err != nil || ev.RoomID != room.ID || ev.Seq != m.At.Seq {
				t.Errorf("membership event %s: %v", m.EventID, err)
			}
		}
	}
}

func TestSyncStateBeforeABoundary(t *testing.T) {
	t.Parallel()
	db, r1, r2 := syncFixture(t)
	ctx := context.Background()
	lbl := syncLabels(r1, r2)
	state := func(f StateFilter, reqs ...StateRequest) map[string][]StoredEvent {
		t.Helper()
		got, err := db.SyncState(ctx, reqs, f)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}

	// Just before name-two: the name and bob's membership have changed since in
	// current_state, so their earlier values come from the history.
	got := state(StateFilter{},
		StateRequest{RoomID: r1.ID, At: Pos{Seq: 6, Idx: 2}},
		StateRequest{RoomID: r2.ID, At: Pos{Seq: 11}})
	if l := lbl(got[r1.ID]); !slices.Equal(l, []string{"create1", "alice", "name-one", "bob-join"}) {
		t.Errorf("r1 state before (6,2): %v", l)
	}
	if l := lbl(got[r2.ID]); !slices.Equal(l, []string{"create2", "carol", "bob-invite2"}) {
		t.Errorf("r2 current state: %v", l)
	}

	// Only what changed since boundary (4,0): the delta of a limited incremental sync.
	got = state(StateFilter{}, StateRequest{RoomID: r1.ID, At: Pos{Seq: 6, Idx: 2}, Since: Pos{Seq: 4}})
	if l := lbl(got[r1.ID]); !slices.Equal(l, []string{"bob-join"}) {
		t.Errorf("r1 state changes in [(4,0), (6,2)): %v", l)
	}
	// A key set for the first time at or after At is not part of the state.
	got = state(StateFilter{}, StateRequest{RoomID: r1.ID, At: Pos{Seq: 3}})
	if l := lbl(got[r1.ID]); !slices.Equal(l, []string{"create1", "alice", "name-one"}) {
		t.Errorf("r1 state before (3,0): %v", l)
	}
	// Up to the end: the latest values.
	got = state(StateFilter{}, StateRequest{RoomID: r1.ID, At: Pos{Seq: 11}})
	if l := lbl(got[r1.ID]); !slices.Equal(l, []string{"create1", "alice", "bob-leave", "name-three"}) {
		t.Errorf("r1 state at the end: %v", l)
	}

	// Stripped state of an invite: some types, and of the members only the invitee.
	got = state(StateFilter{Types: []string{"m.room.create", "m.room.name", "m.room.member"}, Members: []string{"@bob:test"}},
		StateRequest{RoomID: r2.ID, At: Pos{Seq: 5, Idx: 1}})
	if l := lbl(got[r2.ID]); !slices.Equal(l, []string{"create2", "bob-invite2"}) {
		t.Errorf("r2 invite state: %v", l)
	}
}

func TestProjectedSeqs(t *testing.T) {
	t.Parallel()
	db, _, _ := syncFixture(t)
	got, err := db.ProjectedSeqs(context.Background(), []uint64{11, 6, 2, 42})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, []uint64{2, 6}) {
		t.Fatalf("projected among 11, 6, 2, 42: %v, want [2 6]", got)
	}
}
