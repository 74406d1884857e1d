package accounts_test

import (
	"context"
	"encoding/json"
	mathrand "math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zaptest"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/accounts"
	"github.com/ganglionhq/ganglion/persist/pgtest"
	"github.com/ganglionhq/ganglion/schemas"
)

// TestPushersProjectTheSameInAnyOrder: records of different users' writers (which
// project in their own time) leave the pushers as projecting them in log order does:
// a set without append takes the pushkey from every other user, also from a set
// projected after it, and a device's deletion or new token takes its pushers.
func TestPushersProjectTheSameInAnyOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	users := []string{"@a:test", "@b:test", "@c:test"}
	var setup []*schemas.AccountsRecord
	for _, u := range users {
		setup = append(setup, &schemas.AccountsRecord{V: 1, Kind: schemas.AccountUserCreated, Write: "reg" + u, User: u,
			Device: "D", TokenHash: make([]byte, 32)})
		setup[len(setup)-1].TokenHash[0] = byte(len(setup))
	}
	// a has a second device, E.
	setup = append(setup, &schemas.AccountsRecord{V: 1, Kind: schemas.AccountDeviceCreated, Write: "devE", User: users[0],
		Device: "E", TokenHash: append(make([]byte, 31), 77)})
	setFrom := func(device, write, user, key string, appendTo bool) *schemas.AccountsRecord {
		return &schemas.AccountsRecord{V: 1, Kind: schemas.AccountPusherSet, Write: write, User: user, Device: device, TS: 1000,
			Append: appendTo, Pusher: &schemas.Pusher{Kind: "http", AppID: "app", Pushkey: key, AppDisplayName: "App",
				DeviceDisplayName: "Phone", Lang: "en", Data: json.RawMessage(`{"url":"http://gw/_matrix/push/v1/notify"}`)}}
	}
	set := func(write, user, key string, appendTo bool) *schemas.AccountsRecord {
		return setFrom("D", write, user, key, appendTo)
	}
	newToken := make([]byte, 32)
	newToken[0] = 99
	// The log order. Each user's records keep their order whatever the projection
	// order, since one writer appends and projects them.
	logOrder := []*schemas.AccountsRecord{
		set("a1", users[0], "k1", false), // a takes k1
		set("b1", users[1], "k2", false), // b takes k2
		set("a2", users[0], "k2", true),  // a shares k2: b's claim is older
		set("c1", users[2], "k1", false), // c takes k1 from a
		set("a3", users[0], "k3", true),
		set("c2", users[2], "k3", false), // c takes k3 from a
		set("a4", users[0], "k3", true),  // a shares k3 again
		{V: 1, Kind: schemas.AccountTokenAdded, Write: "b2", User: users[1], Device: "D", TokenHash: newToken}, // b's pushers go
		{V: 1, Kind: schemas.AccountDevicesDeleted, Write: "c3", User: users[2], Devices: []string{"D"}},       // c's too
		setFrom("D", "a5", users[0], "k9", false),                                                              // a sets k9 from D,
		setFrom("E", "a6", users[0], "k9", false),                                                              // then from E,
		{V: 1, Kind: schemas.AccountDevicesDeleted, Write: "a7", User: users[0], Devices: []string{"E"}},       // and E goes with it
	}
	perUser := map[string][]*schemas.AccountsRecord{}
	for _, r := range logOrder {
		perUser[r.User] = append(perUser[r.User], r)
	}
	rng := mathrand.New(mathrand.NewPCG(1, 2))
	seqOf := map[*schemas.AccountsRecord]uint64{}
	for i, r := range logOrder {
		seqOf[r] = uint64(10 + i)
	}
	project := func(db *persist.DB, recs []*schemas.AccountsRecord) {
		t.Helper()
		seqs := make([]uint64, len(recs))
		for i, r := range recs {
			seqs[i] = seqOf[r]
		}
		if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return accounts.Project(ctx, tx, recs, seqs) }); err != nil {
			t.Fatal(err)
		}
	}
	fresh := func() *persist.DB {
		db, err := persist.Open(ctx, pgtest.DSN(t), zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(db.Close)
		for i, r := range setup {
			seqOf[r] = uint64(1 + i)
		}
		project(db, setup)
		return db
	}
	pushers := func(db *persist.DB) string {
		t.Helper()
		rows, err := db.Pool.Query(ctx, `SELECT user_id, pushkey, stream_id FROM pushers ORDER BY 1, 2`)
		if err != nil {
			t.Fatal(err)
		}
		all, err := pgx.CollectRows(rows, pgx.RowToMap)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := json.Marshal(all)
		return string(data)
	}

	inOrder := fresh()
	for _, r := range logOrder {
		project(inOrder, []*schemas.AccountsRecord{r})
	}
	want := pushers(inOrder)
	if wantLeft := `[{"pushkey":"k2","stream_id":12,"user_id":"@a:test"},{"pushkey":"k3","stream_id":16,"user_id":"@a:test"}]`; want != wantLeft {
		t.Fatalf("projecting in log order left %s, want %s", want, wantLeft)
	}
	for range 8 {
		db := fresh()
		// Another order of projection: each user's records in order, users interleaved
		// anyhow, as their writers' projections may commit.
		next := map[string]int{}
		for done := 0; done < len(logOrder); {
			u := users[rng.IntN(len(users))]
			if next[u] < len(perUser[u]) {
				project(db, []*schemas.AccountsRecord{perUser[u][next[u]]})
				next[u]++
				done++
			}
		}
		if got := pushers(db); got != want {
			t.Fatalf("projected out of log order: %s\nin log order: %s", got, want)
		}
		// Projecting everything again (recovery, replay into a database that has it)
		// changes nothing.
		project(db, logOrder)
		if got := pushers(db); got != want {
			t.Fatalf("projected again: %s\nbefore: %s", got, want)
		}
	}
}
