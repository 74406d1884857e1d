package userstreams

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zaptest"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/accounts"
	"github.com/ganglionhq/ganglion/persist/pgtest"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
	"github.com/ganglionhq/ganglion/streams/natstest"
)

const alice, bob = "@alice:test", "@bob:test"

// accountsCase prepares batches of the accounts stream against a real database and
// projects what they decide, as the writer does between batches.
type accountsCase struct {
	t   *testing.T
	db  *persist.DB
	st  *Accounts
	now time.Time
	seq uint64
	ids int
}

func newAccountsCase(t *testing.T) *accountsCase {
	t.Helper()
	db, err := persist.Open(context.Background(), pgtest.DSN(t), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	c := &accountsCase{t: t, db: db, now: time.Unix(1_800_000_000, 0)}
	c.st = &Accounts{Store: accounts.Store{Pool: db.Pool}, Now: func() time.Time { return c.now }}
	return c
}

// write is a write by user with a new ID, keyed by key.
func (c *accountsCase) write(user, key, op string, body any) *schemas.StreamWrite {
	c.t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		c.t.Fatal(err)
	}
	c.ids++
	return &schemas.StreamWrite{V: schemas.StreamWriteVersion, ID: "w" + strconv.Itoa(c.ids), Stream: schemas.StreamAccounts,
		Op: op, Key: key, User: user, Body: raw}
}

func (c *accountsCase) userWrite(user, op string, body any) *schemas.StreamWrite {
	return c.write(user, user, op, body)
}

// batch prepares writes as one batch and projects the records they make.
func (c *accountsCase) batch(writes ...*schemas.StreamWrite) []Outcome {
	c.t.Helper()
	out, err := c.st.Prepare(context.Background(), writes)
	if err != nil {
		c.t.Fatal(err)
	}
	if len(out) != len(writes) {
		c.t.Fatalf("%d outcomes for %d writes", len(out), len(writes))
	}
	var recs []streams.RawMessage
	for _, o := range out {
		for _, r := range o.Records {
			c.seq++
			recs = append(recs, streams.RawMessage{Seq: c.seq, Writer: "w", Data: r.Data})
		}
	}
	if err := pgx.BeginFunc(context.Background(), c.db.Pool, func(tx pgx.Tx) error {
		return c.st.Project(context.Background(), tx, recs)
	}); err != nil {
		c.t.Fatal(err)
	}
	return out
}

// kinds lists the kinds of an outcome's records.
func kinds(t *testing.T, o Outcome) []string {
	t.Helper()
	var out []string
	for _, r := range o.Records {
		rec, err := schemas.DecodeAccounts(r.Data)
		if err != nil {
			t.Fatalf("record %s: %v", r.Data, err)
		}
		out = append(out, rec.Kind)
	}
	return out
}

// wantAccepted checks that o made one record of kind.
func wantAccepted(t *testing.T, what string, o Outcome, kind string) {
	t.Helper()
	if o.Answer != nil && o.Answer.Error != nil {
		t.Fatalf("%s refused: %+v", what, o.Answer.Error)
	}
	if k := kinds(t, o); len(k) != 1 || k[0] != kind {
		t.Fatalf("%s made records %v, want one %s", what, k, kind)
	}
}

// wantRefused checks that o refused its write with status and code, recording nothing.
func wantRefused(t *testing.T, what string, o Outcome, status int, code string) {
	t.Helper()
	if o.Answer == nil || o.Answer.Error == nil || o.Answer.Error.Status != status || o.Answer.Error.Code != code || len(o.Records) != 0 {
		t.Fatalf("%s: %+v with %d records, want %d %s", what, o.Answer, len(o.Records), status, code)
	}
}

// wantNothing checks that o succeeded without a record.
func wantNothing(t *testing.T, what string, o Outcome) {
	t.Helper()
	if o.Answer != nil && o.Answer.Error != nil || len(o.Records) != 0 {
		t.Fatalf("%s: %+v with %d records, want success and none", what, o.Answer, len(o.Records))
	}
}

func device(id, token string) *NewDevice {
	h := sha256.Sum256([]byte(token))
	return &NewDevice{ID: id, TokenHash: h[:]}
}

// TestAccountsUserIDsAreUnique: of two registrations of one user ID in one batch, the
// first creates the user and the second is refused as Synapse refuses a taken user ID;
// once projected, the user ID stays taken for later batches.
func TestAccountsUserIDsAreUnique(t *testing.T) {
	t.Parallel()
	c := newAccountsCase(t)
	out := c.batch(
		c.userWrite(alice, OpRegister, Register{PasswordHash: "$2a$04$x", Device: device("D1", "t1")}),
		c.userWrite(alice, OpRegister, Register{}),
		c.userWrite(bob, OpRegister, Register{}),
	)
	wantAccepted(t, "the first registration", out[0], schemas.AccountUserCreated)
	wantRefused(t, "the second registration of one user ID in one batch", out[1], 400, "M_USER_IN_USE")
	wantAccepted(t, "another user's registration", out[2], schemas.AccountUserCreated)
	wantRefused(t, "a registration of a stored user", c.batch(c.userWrite(alice, OpRegister, Register{}))[0], 400, "M_USER_IN_USE")

	if ok, err := c.db.UserExists(context.Background(), alice); err != nil || !ok {
		t.Fatalf("alice after her registration: %v, %v", ok, err)
	}
	h := sha256.Sum256([]byte("t1"))
	if u, d, _, err := c.db.LookupToken(context.Background(), h[:], ""); err != nil || u != alice || d != "D1" {
		t.Fatalf("alice's first token: %s %s %v", u, d, err)
	}

	// A write keyed by another user would be decided by the wrong writer.
	wantRefused(t, "a write keyed by someone else", c.batch(c.write(alice, bob, OpRegister, Register{}))[0], 400, "M_INVALID_PARAM")
	wantRefused(t, "a device without a token hash", c.batch(c.userWrite("@carol:test", OpRegister,
		Register{Device: &NewDevice{ID: "D"}}))[0], 400, "M_BAD_JSON")
	wantRefused(t, "an unknown operation", c.batch(c.userWrite(alice, "promote", struct{}{}))[0], 400, "M_UNRECOGNIZED")
	wantRefused(t, "a body with a field the writer does not know", c.batch(c.userWrite(alice, OpSetPassword,
		map[string]string{"password": "plain"}))[0], 400, "M_BAD_JSON")
}

// TestAccountsDevices: a login makes a device, or a new token for a known one (in
// Postgres or earlier in the batch); renaming an unknown device is 404, a deletion
// skips the devices that do not exist.
func TestAccountsDevices(t *testing.T) {
	t.Parallel()
	c := newAccountsCase(t)
	c.batch(c.userWrite(alice, OpRegister, Register{Device: device("D1", "t1")}))
	out := c.batch(
		c.userWrite(alice, OpLogin, device("D1", "t1b")),
		c.userWrite(alice, OpLogin, device("D2", "t2")),
		c.userWrite(alice, OpLogin, device("D2", "t2b")),
		c.userWrite(bob, OpLogin, device("B1", "b1")),
	)
	wantAccepted(t, "a login as a stored device", out[0], schemas.AccountTokenAdded)
	wantAccepted(t, "a login as a new device", out[1], schemas.AccountDeviceCreated)
	wantAccepted(t, "a login as a device made earlier in the batch", out[2], schemas.AccountTokenAdded)
	wantRefused(t, "a login of an unknown user", out[3], 404, "M_NOT_FOUND")

	out = c.batch(
		c.userWrite(alice, OpRenameDevice, RenameDevice{Device: "D9", DisplayName: new("x")}),
		c.userWrite(alice, OpRenameDevice, RenameDevice{Device: "D2", DisplayName: new("laptop")}),
		c.userWrite(alice, OpRenameDevice, RenameDevice{Device: "D2"}),
		c.userWrite(alice, OpDeleteDevices, DeleteDevices{Devices: []string{"D9", "D1"}}),
		c.userWrite(alice, OpDeleteDevices, DeleteDevices{Devices: []string{"D1"}}),
		c.userWrite(alice, OpRenameDevice, RenameDevice{Device: "D1", DisplayName: new("x")}),
	)
	wantRefused(t, "renaming an unknown device", out[0], 404, "M_NOT_FOUND")
	wantAccepted(t, "renaming a device", out[1], schemas.AccountDeviceRenamed)
	wantNothing(t, "a rename without a name, which keeps it", out[2])
	wantAccepted(t, "deleting devices", out[3], schemas.AccountDevicesDeleted)
	if got := deleted(t, out[3]); len(got) != 1 || got[0] != "D1" {
		t.Fatalf("deleted %v, want [D1] (an unknown device is skipped)", got)
	}
	wantNothing(t, "deleting a device deleted earlier in the batch", out[4])
	if got := deleted(t, out[4]); len(got) != 0 {
		t.Fatalf("deleting a deleted device answered %v, want []", got)
	}
	wantRefused(t, "renaming a device deleted earlier in the batch", out[5], 404, "M_NOT_FOUND")
	if devs, err := c.db.Devices(context.Background(), alice); err != nil || len(devs) != 1 || devs[0].DisplayName != "laptop" {
		t.Fatalf("alice's devices: %+v, %v", devs, err)
	}

	out = c.batch(
		c.userWrite(alice, OpLogin, device("D3", "t3")),
		c.userWrite(alice, OpDeleteDevices, DeleteDevices{All: true}),
		c.userWrite(alice, OpDeleteDevices, DeleteDevices{All: true}),
	)
	if got := deleted(t, out[1]); len(got) != 2 || got[0] != "D2" || got[1] != "D3" {
		t.Fatalf("logout/all deleted %v, want [D2 D3]", got)
	}
	wantNothing(t, "logout/all with no device left", out[2])
	if got := deleted(t, out[2]); got == nil || len(got) != 0 {
		t.Fatalf("logout/all with no device left answered %v, want []", got)
	}
	if devs, err := c.db.Devices(context.Background(), alice); err != nil || len(devs) != 0 {
		t.Fatalf("devices after logout/all: %v, %v", devs, err)
	}
}

func deleted(t *testing.T, o Outcome) []string {
	t.Helper()
	var ans schemas.DevicesDeletedAnswer
	if err := json.Unmarshal(o.Answer.Body, &ans); err != nil {
		t.Fatalf("answer %s: %v", o.Answer.Body, err)
	}
	return ans.Deleted
}

func filterID(t *testing.T, o Outcome) int64 {
	t.Helper()
	if o.Answer == nil || o.Answer.Error != nil {
		t.Fatalf("filter refused: %+v", o.Answer)
	}
	var ans schemas.FilterAnswer
	if err := json.Unmarshal(o.Answer.Body, &ans); err != nil {
		t.Fatalf("answer %s: %v", o.Answer.Body, err)
	}
	return ans.FilterID
}

// TestAccountsFilters: the writer numbers each user's filters from 0, and answers a
// filter equal (as JSON) to a stored one, or to one earlier in the batch, with its ID.
func TestAccountsFilters(t *testing.T) {
	t.Parallel()
	c := newAccountsCase(t)
	c.batch(c.userWrite(alice, OpRegister, Register{}), c.userWrite(bob, OpRegister, Register{}))
	f := func(s string) CreateFilter { return CreateFilter{Filter: json.RawMessage(s)} }
	out := c.batch(
		c.userWrite(alice, OpCreateFilter, f(`{"room":{"timeline":{"limit":10}}}`)),
		c.userWrite(alice, OpCreateFilter, f(`{"presence":{"types":[]}}`)),
		c.userWrite(alice, OpCreateFilter, f(`{ "room" : { "timeline" : { "limit" : 10.0 } } }`)),
		c.userWrite(bob, OpCreateFilter, f(`{"presence":{"types":[]}}`)),
		c.userWrite("@ghost:test", OpCreateFilter, f(`{}`)),
		c.userWrite(alice, OpCreateFilter, f(`[]`)),
	)
	for i, want := range []int64{0, 1, 0, 0} {
		if got := filterID(t, out[i]); got != want {
			t.Errorf("filter %d: id %d, want %d", i, got, want)
		}
	}
	wantNothing(t, "a filter equal to one earlier in the batch", out[2])
	wantRefused(t, "a filter of an unknown user", out[4], 404, "M_NOT_FOUND")
	wantRefused(t, "a filter that is not an object", out[5], 400, "M_BAD_JSON")
	out = c.batch(
		c.userWrite(alice, OpCreateFilter, f(`{"presence": {"types": []}}`)),
		c.userWrite(alice, OpCreateFilter, f(`{"account_data":{"limit":1}}`)),
	)
	if a, b := filterID(t, out[0]), filterID(t, out[1]); a != 1 || b != 2 {
		t.Errorf("after the first batch: a stored filter again got %d (want 1), a new one %d (want 2)", a, b)
	}
	if raw, err := c.db.GetFilter(context.Background(), alice, 2); err != nil || string(raw) != `{"account_data": {"limit": 1}}` {
		t.Errorf("stored filter 2: %s, %v", raw, err)
	}
}

// TestAccountsAliases: one room holds an alias; a claim for a room still being
// created holds it for StaleClaim, then lets go; only the creator deletes it.
func TestAccountsAliases(t *testing.T) {
	t.Parallel()
	c := newAccountsCase(t)
	ctx := context.Background()
	alias := func(user, op, a, room string) *schemas.StreamWrite {
		return c.write(user, a, op, AliasChange{Alias: a, Room: room})
	}
	// !exists:test exists; the other rooms are being created, or never were.
	if _, err := c.db.Pool.Exec(ctx, `INSERT INTO rooms (room_id, room_version, creator, last_seq, last_event_id, depth)
		VALUES ('!exists:test', '11', $1, 1, '$e', 1)`, alice); err != nil {
		t.Fatal(err)
	}
	out := c.batch(
		alias(alice, OpCreateAlias, "#a:test", "!exists:test"),
		alias(bob, OpCreateAlias, "#a:test", "!exists:test"),
		alias(alice, OpClaimAlias, "#b:test", "!one:test"),
		alias(bob, OpClaimAlias, "#b:test", "!two:test"),
		alias(alice, OpClaimAlias, "#b:test", "!one:test"),
		alias(alice, OpClaimAlias, "#a:test", "!one:test"),
	)
	wantAccepted(t, "a new alias", out[0], schemas.AccountAliasCreated)
	wantRefused(t, "an alias taken earlier in the batch", out[1], 409, "M_UNKNOWN")
	wantAccepted(t, "a claim", out[2], schemas.AccountAliasClaimed)
	wantRefused(t, "a claim of an alias claimed for another room", out[3], 400, "M_ROOM_IN_USE")
	wantAccepted(t, "the same room's claim again", out[4], schemas.AccountAliasClaimed)
	wantRefused(t, "a claim of an alias an existing room holds", out[5], 400, "M_ROOM_IN_USE")
	if room, creator, err := c.db.ResolveAlias(ctx, "#a:test"); err != nil || room != "!exists:test" || creator != alice {
		t.Fatalf("#a:test resolves to %s by %s (%v)", room, creator, err)
	}
	if _, _, err := c.db.ResolveAlias(ctx, "#b:test"); err != persist.ErrNotFound {
		t.Fatalf("a claim of a room that does not exist resolves: %v", err)
	}

	// A refused create releases its claim; releasing for another room does nothing.
	out = c.batch(
		alias(bob, OpReleaseAlias, "#b:test", "!two:test"),
		alias(alice, OpReleaseAlias, "#b:test", "!one:test"),
		alias(bob, OpClaimAlias, "#b:test", "!two:test"),
	)
	wantNothing(t, "a release by a room that holds nothing", out[0])
	wantAccepted(t, "a release", out[1], schemas.AccountAliasReleased)
	wantAccepted(t, "a claim of a released alias", out[2], schemas.AccountAliasClaimed)

	// The create of !two never comes: within StaleClaim the alias stays held, after it
	// the alias is free. An alias of an existing room never goes stale.
	c.now = c.now.Add(StaleClaim - time.Minute)
	wantRefused(t, "a claim of an alias claimed a while ago", c.batch(alias(alice, OpClaimAlias, "#b:test", "!three:test"))[0], 400, "M_ROOM_IN_USE")
	c.now = c.now.Add(2 * time.Minute)
	out = c.batch(
		alias(alice, OpClaimAlias, "#b:test", "!three:test"),
		alias(bob, OpCreateAlias, "#a:test", "!exists:test"),
	)
	wantAccepted(t, "a claim of an alias whose claim went stale", out[0], schemas.AccountAliasClaimed)
	wantRefused(t, "an alias of an existing room, however old", out[1], 409, "M_UNKNOWN")

	out = c.batch(
		alias(bob, OpDeleteAlias, "#a:test", ""),
		alias(alice, OpDeleteAlias, "#a:test", ""),
		alias(alice, OpDeleteAlias, "#a:test", ""),
		c.write(alice, "#x:test", OpDeleteAlias, AliasChange{Alias: "#a:test"}),
		c.write(alice, "#a:test", OpClaimAlias, AliasChange{Alias: "#a:test"}),
	)
	wantRefused(t, "someone else deletes an alias", out[0], 403, "M_FORBIDDEN")
	wantAccepted(t, "the creator deletes an alias", out[1], schemas.AccountAliasDeleted)
	wantRefused(t, "deleting a deleted alias", out[2], 404, "M_NOT_FOUND")
	wantRefused(t, "a write keyed by another alias", out[3], 400, "M_INVALID_PARAM")
	wantRefused(t, "a claim without a room", out[4], 400, "M_BAD_JSON")
	if _, _, err := c.db.ResolveAlias(ctx, "#a:test"); err != persist.ErrNotFound {
		t.Fatalf("a deleted alias resolves: %v", err)
	}
}

// TestAccountsKnownWrites: a write handled again, in a later batch or twice in one,
// is answered as the first time and records nothing more: a retried registration is
// not refused as taken by itself.
func TestAccountsKnownWrites(t *testing.T) {
	t.Parallel()
	c := newAccountsCase(t)
	reg := c.userWrite(alice, OpRegister, Register{Device: device("D1", "t1")})
	out := c.batch(reg, reg)
	wantAccepted(t, "a registration", out[0], schemas.AccountUserCreated)
	wantNothing(t, "its copy in the same batch", out[1])
	wantNothing(t, "the registration handled again", c.batch(reg)[0])
	filter := c.userWrite(alice, OpCreateFilter, CreateFilter{Filter: json.RawMessage(`{"room":{}}`)})
	c.batch(filter)
	c.batch(c.userWrite(alice, OpCreateFilter, CreateFilter{Filter: json.RawMessage(`{"presence":{}}`)}))
	again := c.batch(filter)[0]
	wantNothing(t, "the filter handled again", again)
	if id := filterID(t, again); id != 0 {
		t.Fatalf("the filter handled again got id %d, want its first answer, 0", id)
	}
}

// TestAccountsWriter runs the stream in a real writer on NATS: a registration sent
// twice with one write ID (a gateway resending it) is answered twice with success, and
// a second registration of the user is refused; replaying the log into an empty
// database rebuilds the same rows.
func TestAccountsWriter(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env := natstest.Start(t)
	c := newAccountsCase(t)
	w, err := New(Config{Name: "w1", Stream: c.st, Topology: env.Topology, JS: env.JS, NC: env.NC, DB: c.db, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	ic := &streams.IntentClient{Topology: env.Topology, JS: env.JS, NC: env.NC, Waiters: &streams.Waiters{},
		StreamWriters: map[string][]string{schemas.StreamAccounts: {"w1"}}, Log: zaptest.NewLogger(t)}
	reg := c.userWrite(alice, OpRegister, Register{Device: device("D1", "t1")})
	for i := range 2 {
		if res, err := ic.Write(ctx, reg); err != nil || res.Error != nil {
			t.Fatalf("registration, copy %d: %+v, %v", i, res, err)
		}
	}
	res, err := ic.Write(ctx, c.userWrite(alice, OpRegister, Register{}))
	if err != nil || res.Error == nil || res.Error.Code != "M_USER_IN_USE" {
		t.Fatalf("a second registration: %+v, %v", res, err)
	}
	for _, wr := range []*schemas.StreamWrite{
		c.userWrite(alice, OpSetProfile, SetProfile{Field: schemas.ProfileDisplayName, Value: new("Alice")}),
		c.userWrite(alice, OpCreateFilter, CreateFilter{Filter: json.RawMessage(`{"room":{}}`)}),
		c.userWrite(alice, OpForgetRoom, ForgetRoom{Room: "!r:test", EventID: "$leave"}),
		c.write(alice, "#a:test", OpClaimAlias, AliasChange{Alias: "#a:test", Room: "!r:test"}),
	} {
		if res, err := ic.Write(ctx, wr); err != nil || res.Error != nil {
			t.Fatalf("%s: %+v, %v", wr.Op, res, err)
		}
	}

	rebuilt, err := persist.Open(ctx, pgtest.DSN(t), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rebuilt.Close)
	if n, _, err := Replay(ctx, env.JS, env.Topology, rebuilt, c.st); err != nil || n != 5 {
		t.Fatalf("replayed %d records (%v), want 5", n, err)
	}
	for _, q := range []string{
		`SELECT user_id, password_hash, created_at, stream_id FROM users`,
		`SELECT user_id, device_id, display_name, created_at, stream_id FROM devices`,
		`SELECT token_hash, user_id, device_id, created_at, stream_id FROM access_tokens`,
		`SELECT user_id, displayname, avatar_url, stream_id FROM profiles`,
		`SELECT user_id, filter_id, filter, stream_id FROM filters`,
		`SELECT user_id, room_id, event_id, stream_id FROM forgotten_rooms`,
		`SELECT alias, room_id, creator, claimed_at, stream_id FROM room_aliases`,
		`SELECT write_id, stream_id, answer FROM account_writes ORDER BY 1`,
		`SELECT stream_name, instance_name, stream_id FROM stream_positions WHERE stream_name = 'accounts'`,
	} {
		if want, got := rows(t, c.db, q), rows(t, rebuilt, q); len(want) == 0 || want != got {
			t.Errorf("%s\noriginal: %s\nrebuilt:  %s", q, want, got)
		}
	}
}

// rows returns a query's rows as JSON, for comparing two databases.
func rows(t *testing.T, db *persist.DB, q string) string {
	t.Helper()
	r, err := db.Pool.Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	all, err := pgx.CollectRows(r, pgx.RowToMap)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) == 0 {
		return ""
	}
	data, _ := json.Marshal(all)
	return string(data)
}
