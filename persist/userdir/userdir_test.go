package userdir_test

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/pgtest"
	"github.com/ganglionhq/ganglion/persist/userdir"
)

func open(t testing.TB) (context.Context, userdir.Store) {
	ctx := context.Background()
	db, err := persist.Open(ctx, pgtest.DSN(t), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return ctx, userdir.Store{Pool: db.Pool}
}

func ptr[T any](v T) *T { return &v }

func join(room, user, name string) userdir.Change {
	return userdir.Change{Room: room, User: user, Membership: true, Joined: true, DisplayName: ptr(name)}
}

func TestSearchVisibilityAndOrder(t *testing.T) {
	ctx, s := open(t)
	changes := []userdir.Change{
		join("!private", "@me:hs", "Me"), join("!private", "@annie:hs", "Ann Smith"),
		join("!private", "@ann:other", "Ann"),
		join("!hidden", "@anne:hs", "Anne Hidden"),
		{Room: "!public", PublicJoin: ptr(true)}, join("!public", "@annabel:hs", "Annabel"),
		{Room: "!readable", WorldReadable: ptr(true)}, join("!readable", "@ann:hs", "Someone"),
		join("!left", "@me:hs", "Me"), join("!left", "@anna:hs", "Anna"),
		{Room: "!left", User: "@me:hs", Membership: true},
	}
	if err := s.Apply(ctx, changes, "main", 10); err != nil {
		t.Fatal(err)
	}
	// Applying the same changes again changes nothing.
	if err := s.Apply(ctx, changes, "main", 10); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		term string
		all  bool
		want []string
	}{
		// Exact localpart or name first (@ann:hs, then the remote Ann), then local,
		// then by rank (Ann Smith has the word itself) and name. @anne:hs shares no
		// room; @anna:hs only one @me left.
		{"ann", false, []string{"@ann:hs", "@ann:other", "@annie:hs", "@annabel:hs"}},
		{"smith", false, []string{"@annie:hs"}},
		{"ann smi", false, []string{"@annie:hs"}},
		{"other", false, []string{"@ann:other"}},
		{"hidden", false, nil},
		{"hidden", true, []string{"@anne:hs"}},
		{"!!", false, nil},
	} {
		found, _, err := s.Search(ctx, userdir.Query{Searcher: "@me:hs", All: c.all, Term: c.term, Limit: 10, ServerName: "hs"})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range found {
			got = append(got, r.UserID)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("search %q (all %v): %v, want %v", c.term, c.all, got, c.want)
		}
	}
	// Searching all users finds local users in no room, by user ID or profile name.
	if _, err := s.Pool.Exec(ctx, `INSERT INTO users (user_id, created_at, stream_id) VALUES ('@loner:hs', now(), 1), ('@hermit:hs', now(), 1);
		INSERT INTO profiles (user_id, displayname, stream_id) VALUES ('@hermit:hs', 'Quiet Annika', 1)`); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		term string
		all  bool
		want []string
	}{
		{"loner", true, []string{"@loner:hs"}},
		{"loner", false, nil},
		{"annika", true, []string{"@hermit:hs"}},
		{"quiet ann", true, []string{"@hermit:hs"}},
		{"hermit", false, nil},
	} {
		found, _, err := s.Search(ctx, userdir.Query{Searcher: "@me:hs", All: c.all, Term: c.term, Limit: 10, ServerName: "hs"})
		var got []string
		for _, r := range found {
			got = append(got, r.UserID)
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("search %q (all %v) for users in no room: %v %v, want %v", c.term, c.all, got, err, c.want)
		}
	}
	if found, _, err := s.Search(ctx, userdir.Query{Searcher: "@me:hs", All: true, Term: "annika", Limit: 10}); err != nil ||
		len(found) != 1 || found[0].DisplayName == nil || *found[0].DisplayName != "Quiet Annika" {
		t.Errorf("a user in no room's profile: %+v %v", found, err)
	}

	// A deactivated user is not found any more, even by those sharing a room.
	if _, err := s.Pool.Exec(ctx, `INSERT INTO users (user_id, created_at, deactivated, stream_id) VALUES ('@annie:hs', now(), true, 1)`); err != nil {
		t.Fatal(err)
	}
	if found, _, err := s.Search(ctx, userdir.Query{Searcher: "@me:hs", Term: "smith", Limit: 10, ServerName: "hs"}); err != nil || len(found) != 0 {
		t.Errorf("a deactivated user found: %v %v", found, err)
	}
	if found, limited, err := s.Search(ctx, userdir.Query{Searcher: "@me:hs", Term: "ann", Limit: 2, ServerName: "hs"}); err != nil ||
		len(found) != 2 || !limited {
		t.Errorf("limit 2: %v limited %v %v", found, limited, err)
	}
}

func TestTermWords(t *testing.T) {
	if got := userdir.TermWords(" Ann-Marie  O'Brien:hs1 "); !slices.Equal(got, []string{"ann", "marie", "o", "brien", "hs1"}) {
		t.Errorf("words %v", got)
	}
}

// syllables make names: 40 × 40 × 40 = 64,000 three-syllable words.
var syllables = []string{"ba", "be", "bi", "bo", "da", "de", "di", "do", "ka", "ke", "ki", "ko", "la", "le", "li", "lo",
	"ma", "me", "mi", "mo", "na", "ne", "ni", "no", "ra", "re", "ri", "ro", "sa", "se", "si", "so", "ta", "te", "ti", "to",
	"va", "ve", "vi", "vo"}

func name(r *rand.Rand) string {
	return syllables[r.IntN(40)] + syllables[r.IntN(40)] + syllables[r.IntN(40)]
}

// BenchmarkSearch100k is issue 10's directory target (p99 ≤ 20 ms with 100,000 users):
// 100,000 users with a first and a last name, each in two of 20,000 rooms, a tenth of
// them public; searches of a name prefix of 3 to 5 letters and of a full first name with
// the start of a last name, by random users. It reports the p50 and p99 of the searches.
func BenchmarkSearch100k(b *testing.B) {
	ctx, s := open(b)
	r := rand.New(rand.NewPCG(1, 2))
	const users, rooms = 100_000, 20_000
	var dirRows, roomRows, publicRows [][]any
	names := make([]string, users)
	for i := range users {
		names[i] = name(r) + " " + name(r)
		dirRows = append(dirRows, []any{fmt.Sprintf("@u%d:hs", i), names[i]})
		for range 2 {
			roomRows = append(roomRows, []any{fmt.Sprintf("@u%d:hs", i), fmt.Sprintf("!r%d", r.IntN(rooms))})
		}
	}
	slices.SortFunc(roomRows, cmpRow)
	roomRows = slices.CompactFunc(roomRows, func(a, b []any) bool { return cmpRow(a, b) == 0 })
	for i := 0; i < rooms; i += 10 {
		publicRows = append(publicRows, []any{fmt.Sprintf("!r%d", i), true})
	}
	for _, c := range []struct {
		table string
		cols  []string
		rows  [][]any
	}{
		{"user_directory", []string{"user_id", "display_name"}, dirRows},
		{"user_directory_rooms", []string{"user_id", "room_id"}, roomRows},
		{"user_directory_rooms_public", []string{"room_id", "public_join"}, publicRows},
	} {
		if _, err := s.Pool.CopyFrom(ctx, pgx.Identifier{c.table}, c.cols, pgx.CopyFromRows(c.rows)); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := s.Pool.Exec(ctx, `UPDATE user_directory d SET in_public_room = EXISTS (SELECT 1 FROM user_directory_rooms r
		JOIN user_directory_rooms_public p USING (room_id) WHERE r.user_id = d.user_id AND p.public_join)`); err != nil {
		b.Fatal(err)
	}
	if _, err := s.Pool.Exec(ctx, "ANALYZE"); err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	found := 0
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		n := names[r.IntN(users)]
		term := n[:3+r.IntN(3)]
		if i%2 == 1 {
			term = n[:6+2] // the first name and two letters of the last
		}
		t0 := time.Now()
		res, _, err := s.Search(ctx, userdir.Query{Searcher: fmt.Sprintf("@u%d:hs", r.IntN(users)), Term: term, Limit: 10, ServerName: "hs"})
		lat = append(lat, time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
		found += len(res)
	}
	pgtest.ReportLatencies(b, lat, found)
}

func cmpRow(a, b []any) int {
	return cmp.Or(cmp.Compare(a[0].(string), b[0].(string)), cmp.Compare(a[1].(string), b[1].(string)))
}
