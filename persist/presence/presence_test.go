package presence

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/pgtest"
	"github.com/ganglionhq/ganglion/schemas"
)

func rec(user, state string, lastActive int64) *schemas.PresenceRecord {
	return &schemas.PresenceRecord{V: schemas.PresenceVersion, User: user, State: state, LastActiveTS: lastActive}
}

func users(items []Item) []string {
	var out []string
	for _, it := range items {
		out = append(out, it.User+"="+it.State)
	}
	slices.Sort(out)
	return out
}

// Who sees whose presence: the user and everyone joined to a common room; a projection
// never moves a user back to an older record.
func TestStore(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := persist.Open(ctx, pgtest.DSN(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// a and b share !r1, a and c share nothing (c left !r1, and is alone in !r2), d
	// is invited to !r1.
	_, err = db.Pool.Exec(ctx, `INSERT INTO current_state (room_id, type, state_key, event_id, seq, idx, membership) VALUES
		('!r1:h', 'm.room.member', '@a:h', '$1', 1, 0, 'join'), ('!r1:h', 'm.room.member', '@b:h', '$2', 1, 1, 'join'),
		('!r1:h', 'm.room.member', '@c:h', '$3', 1, 2, 'leave'), ('!r1:h', 'm.room.member', '@d:h', '$4', 1, 3, 'invite'),
		('!r1:h', 'm.room.name', '', '$5', 1, 4, NULL), ('!r2:h', 'm.room.member', '@c:h', '$6', 2, 0, 'join')`)
	if err != nil {
		t.Fatal(err)
	}
	project := func(recs []*schemas.PresenceRecord, seqs []uint64) {
		t.Helper()
		if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return Project(ctx, tx, recs, seqs) }); err != nil {
			t.Fatal(err)
		}
	}
	msg := "hi"
	b := rec("@b:h", schemas.PresenceOnline, 7)
	b.StatusMsg = &msg
	project([]*schemas.PresenceRecord{rec("@a:h", schemas.PresenceOnline, 1), rec("@a:h", schemas.PresenceUnavailable, 2),
		b, rec("@c:h", schemas.PresenceOnline, 3), rec("@d:h", schemas.PresenceOnline, 4)}, []uint64{1, 2, 3, 4, 5})
	// An older record of a projected again (recovery, replay) changes nothing.
	project([]*schemas.PresenceRecord{rec("@a:h", schemas.PresenceOnline, 1)}, []uint64{1})
	s := Store{Pool: db.Pool}

	a, err := s.Get(ctx, "@a:h")
	if err != nil || a.State != schemas.PresenceUnavailable || a.Pos != 2 {
		t.Fatalf("a: %+v, %v", a, err)
	}
	if got, err := s.Get(ctx, "@b:h"); err != nil || got.StatusMsg == nil || *got.StatusMsg != msg || got.LastActiveTS != 7 {
		t.Fatalf("b: %+v, %v", got, err)
	}
	if _, err := s.Get(ctx, "@nobody:h"); err != ErrNotFound {
		t.Fatalf("unknown user: %v", err)
	}
	if got, err := s.Visible(ctx, "@a:h", true); err != nil || !slices.Equal(users(got), []string{"@a:h=unavailable", "@b:h=online"}) {
		t.Fatalf("visible to a: %v, %v", users(got), err)
	}
	project([]*schemas.PresenceRecord{rec("@b:h", schemas.PresenceOffline, 8)}, []uint64{6})
	if got, err := s.Visible(ctx, "@a:h", false); err != nil || !slices.Equal(users(got), []string{"@a:h=unavailable"}) {
		t.Fatalf("visible to a, offline left out: %v, %v", users(got), err)
	}
	if got, err := s.Changed(ctx, "@a:h", 2, 6); err != nil || !slices.Equal(users(got), []string{"@b:h=offline"}) {
		t.Fatalf("changed for a in (2, 6]: %v, %v", users(got), err)
	}
	if got, err := s.Changed(ctx, "@a:h", 0, 5); err != nil || !slices.Equal(users(got), []string{"@a:h=unavailable"}) {
		t.Fatalf("changed for a in (0, 5]: %v, %v", users(got), err)
	}
	if got, err := s.Changed(ctx, "@c:h", 0, 6); err != nil || !slices.Equal(users(got), []string{"@c:h=online"}) {
		t.Fatalf("changed for c: %v, %v", users(got), err)
	}
	for _, tc := range []struct {
		a, b string
		want bool
	}{{"@a:h", "@b:h", true}, {"@b:h", "@a:h", true}, {"@a:h", "@c:h", false}, {"@a:h", "@d:h", false}, {"@a:h", "@x:h", false}} {
		if got, err := s.SharesRoom(ctx, tc.a, tc.b); err != nil || got != tc.want {
			t.Errorf("%s shares a room with %s: %v, %v", tc.a, tc.b, got, err)
		}
	}
	rooms, err := s.JoinedRooms(ctx, []string{"@a:h", "@c:h", "@d:h"})
	if err != nil || len(rooms) != 2 || !slices.Equal(rooms["@a:h"], []string{"!r1:h"}) || !slices.Equal(rooms["@c:h"], []string{"!r2:h"}) {
		t.Fatalf("joined rooms: %v, %v", rooms, err)
	}
	members, err := s.JoinedMembers(ctx, []string{"!r1:h", "!r2:h"})
	slices.Sort(members)
	if err != nil || !slices.Equal(members, []string{"@a:h", "@b:h", "@c:h"}) {
		t.Fatalf("joined members: %v, %v", members, err)
	}
	notOffline, err := s.NotOffline(ctx)
	if err != nil || !slices.Equal(users(notOffline), []string{"@a:h=unavailable", "@c:h=online", "@d:h=online"}) {
		t.Fatalf("not offline: %v, %v", users(notOffline), err)
	}
	got, err := s.Users(ctx, []string{"@b:h", "@nobody:h"})
	if err != nil || !slices.Equal(users(got), []string{"@b:h=offline"}) {
		t.Fatalf("users: %v, %v", users(got), err)
	}
}
