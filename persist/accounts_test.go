package persist

import (
	"context"
	"crypto/sha256"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zaptest"
	"golang.org/x/crypto/bcrypt"

	"github.com/ganglionhq/ganglion/persist/accounts"
	"github.com/ganglionhq/ganglion/persist/pgtest"
	"github.com/ganglionhq/ganglion/schemas"
)

func openTestDB(t *testing.T) *DB {
	t.Helper()
	db, err := Open(context.Background(), pgtest.DSN(t), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	db.BcryptCost = bcrypt.MinCost
	t.Cleanup(db.Close)
	return db
}

func tokenHash(tok string) []byte {
	h := sha256.Sum256([]byte(tok))
	return h[:]
}

// lastSeq numbers the records tests project: positions only ever grow.
var lastSeq atomic.Uint64

// project stores accounts records as the accounts stream's writer does, each at a new
// position.
func project(t *testing.T, db *DB, recs ...schemas.AccountsRecord) {
	t.Helper()
	ptrs := make([]*schemas.AccountsRecord, len(recs))
	seqs := make([]uint64, len(recs))
	for i := range recs {
		r := &recs[i]
		seqs[i] = lastSeq.Add(1)
		r.V, r.TS, r.Write = schemas.AccountsVersion, time.Now().UnixMilli(), "write-"+strconv.FormatUint(seqs[i], 10)
		ptrs[i] = r
	}
	if err := pgx.BeginFunc(context.Background(), db.Pool, func(tx pgx.Tx) error {
		return accounts.Project(context.Background(), tx, ptrs, seqs)
	}); err != nil {
		t.Fatal(err)
	}
}

// newUser projects the creation of user with password (none when empty).
func newUser(t *testing.T, db *DB, user, password string) {
	t.Helper()
	r := schemas.AccountsRecord{Kind: schemas.AccountUserCreated, User: user}
	if password != "" {
		h, err := db.HashPassword(context.Background(), password)
		if err != nil {
			t.Fatal(err)
		}
		r.PasswordHash = string(h)
	}
	project(t, db, r)
}

func TestUsersAndPasswords(t *testing.T) {
	t.Parallel()
	db := openTestDB(t)
	ctx := context.Background()

	newUser(t, db, "@alice:test", "wonderland")
	if ok, err := db.UserExists(ctx, "@alice:test"); err != nil || !ok {
		t.Fatalf("UserExists(alice) = %v, %v", ok, err)
	}
	if ok, err := db.UserExists(ctx, "@bob:test"); err != nil || ok {
		t.Fatalf("UserExists(bob) = %v, %v", ok, err)
	}
	if err := db.CheckPassword(ctx, "@alice:test", "wonderland"); err != nil {
		t.Fatalf("right password: %v", err)
	}
	if err := db.CheckPassword(ctx, "@alice:test", "other"); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	if err := db.CheckPassword(ctx, "@bob:test", "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown user: %v", err)
	}
	var stored string
	if err := db.Pool.QueryRow(ctx, "SELECT password_hash FROM users WHERE user_id = '@alice:test'").Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stored, "wonderland") || !strings.HasPrefix(stored, "$2") {
		t.Fatalf("stored password is not a bcrypt hash: %q", stored)
	}
	// A changed password replaces the old one.
	h, err := db.HashPassword(ctx, "looking-glass")
	if err != nil {
		t.Fatal(err)
	}
	project(t, db, schemas.AccountsRecord{Kind: schemas.AccountPasswordChanged, User: "@alice:test", PasswordHash: string(h)})
	if err := db.CheckPassword(ctx, "@alice:test", "wonderland"); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("old password after a change: %v", err)
	}
	if err := db.CheckPassword(ctx, "@alice:test", "looking-glass"); err != nil {
		t.Fatalf("new password: %v", err)
	}

	// An account without a password exists but cannot log in with one.
	newUser(t, db, "@nopass:test", "")
	if err := db.CheckPassword(ctx, "@nopass:test", ""); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("password-less account: %v", err)
	}

	// bcrypt reads 72 bytes; longer passwords are accepted and checked on that prefix.
	long := strings.Repeat("p", 100)
	newUser(t, db, "@long:test", long)
	if err := db.CheckPassword(ctx, "@long:test", long); err != nil {
		t.Fatalf("long password: %v", err)
	}
	if err := db.CheckPassword(ctx, "@long:test", strings.Repeat("p", 71)); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("71-byte prefix of the long password: %v", err)
	}
}

func TestNextLocalpart(t *testing.T) {
	t.Parallel()
	db := openTestDB(t)
	ctx := context.Background()
	a, err := db.NextLocalpart(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := db.NextLocalpart(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if a == b || strings.Trim(a+b, "0123456789") != "" {
		t.Fatalf("localparts %q, %q: want two different numbers", a, b)
	}
	// A generated user projected from the log (a replay into a fresh database) moves
	// the numbering past it.
	newUser(t, db, "@41:test", "")
	if c, err := db.NextLocalpart(ctx); err != nil || c != "42" {
		t.Fatalf("localpart after @41 was created: %q, %v; want 42", c, err)
	}
}

func TestDevicesAndTokens(t *testing.T) {
	t.Parallel()
	db := openTestDB(t)
	ctx := context.Background()
	alice := "@alice:test"
	phone := "phone"

	project(t, db, schemas.AccountsRecord{Kind: schemas.AccountUserCreated, User: alice, Device: "D1", DisplayName: &phone, TokenHash: tokenHash("t1")})
	u, d, _, err := db.LookupToken(ctx, tokenHash("t1"), "192.0.2.1")
	if err != nil || u != alice || d != "D1" {
		t.Fatalf("LookupToken(t1) = %q, %q, %v", u, d, err)
	}
	if _, _, _, err := db.LookupToken(ctx, tokenHash("nope"), ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown token: %v", err)
	}
	var n int
	if err := db.Pool.QueryRow(ctx, "SELECT count(*) FROM access_tokens WHERE token_hash = $1", []byte("t1")).Scan(&n); err != nil || n != 0 {
		t.Fatalf("raw token found in access_tokens (%d, %v)", n, err)
	}

	project(t, db, schemas.AccountsRecord{Kind: schemas.AccountDeviceCreated, User: alice, Device: "D2", TokenHash: tokenHash("t2")})
	// Logging in again as D1 replaces its token.
	project(t, db, schemas.AccountsRecord{Kind: schemas.AccountTokenAdded, User: alice, Device: "D1", TokenHash: tokenHash("t1b")})
	if _, _, _, err := db.LookupToken(ctx, tokenHash("t1"), ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("replaced token still valid: %v", err)
	}
	if _, d, _, err := db.LookupToken(ctx, tokenHash("t1b"), ""); err != nil || d != "D1" {
		t.Fatalf("new D1 token: %q, %v", d, err)
	}
	laptop := "laptop"
	project(t, db, schemas.AccountsRecord{Kind: schemas.AccountDeviceRenamed, User: alice, Device: "D2", DisplayName: &laptop})
	devs, err := db.Devices(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 2 || devs[0].DeviceID != "D1" || devs[0].DisplayName != "phone" || devs[1].DisplayName != "laptop" || devs[0].LastSeenMS == 0 {
		t.Fatalf("Devices = %+v", devs)
	}

	// A device is seen from an address; one device, someone else's, or all of a user's.
	if d, err := db.GetDevice(ctx, alice, "D1"); err != nil || d.LastSeenIP != "192.0.2.1" || d.DisplayName != "phone" {
		t.Fatalf("GetDevice(D1) = %+v, %v", d, err)
	}
	if d, err := db.GetDevice(ctx, alice, "D2"); err != nil || d.LastSeenIP != "" || d.DisplayName != "laptop" {
		t.Fatalf("GetDevice(D2) = %+v, %v", d, err)
	}
	if _, err := db.GetDevice(ctx, "@bob:test", "D1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another user's device: %v", err)
	}
	if ids, err := db.DeviceIDs(ctx, []string{alice, "@nobody:test"}); err != nil || len(ids) != 1 || strings.Join(ids[alice], ",") != "D1,D2" {
		t.Fatalf("DeviceIDs = %v, %v", ids, err)
	}

	project(t, db, schemas.AccountsRecord{Kind: schemas.AccountDevicesDeleted, User: alice, Devices: []string{"D1"}})
	if _, _, _, err := db.LookupToken(ctx, tokenHash("t1b"), ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("token of deleted device: %v", err)
	}
	if _, _, _, err := db.LookupToken(ctx, tokenHash("t2"), ""); err != nil {
		t.Fatalf("token of the other device: %v", err)
	}
	// A device of a user who does not exist is not stored (and does not fail the
	// projection, which would stall the writer).
	project(t, db, schemas.AccountsRecord{Kind: schemas.AccountDeviceCreated, User: "@ghost:test", Device: "X", TokenHash: tokenHash("tx")})
	if _, _, _, err := db.LookupToken(ctx, tokenHash("tx"), ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("token of a device of nobody: %v", err)
	}
}

func TestUIASessions(t *testing.T) {
	t.Parallel()
	db := openTestDB(t)
	ctx := context.Background()

	s1, err := db.CreateUIASession(ctx, "register")
	if err != nil {
		t.Fatal(err)
	}
	s2, err := db.CreateUIASession(ctx, "register")
	if err != nil {
		t.Fatal(err)
	}
	if s1 == s2 || len(s1) < 20 {
		t.Fatalf("session ids %q, %q", s1, s2)
	}
	if got, err := db.UIASession(ctx, s1, "register"); err != nil || len(got) != 0 {
		t.Fatalf("fresh session = %v, %v", got, err)
	}
	for range 2 {
		got, err := db.CompleteUIAStage(ctx, s1, "register", "m.login.dummy")
		if err != nil || !slices.Equal(got, []string{"m.login.dummy"}) {
			t.Fatalf("CompleteUIAStage = %v, %v", got, err)
		}
	}
	got, err := db.CompleteUIAStage(ctx, s1, "register", "m.login.terms")
	if err != nil || !slices.Equal(got, []string{"m.login.dummy", "m.login.terms"}) {
		t.Fatalf("second stage = %v, %v", got, err)
	}
	if got, err := db.UIASession(ctx, s1, "register"); err != nil || len(got) != 2 {
		t.Fatalf("UIASession = %v, %v", got, err)
	}
	// A session belongs to one kind of operation.
	if _, err := db.UIASession(ctx, s1, "delete_device"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("other kind: %v", err)
	}
	if _, err := db.CompleteUIAStage(ctx, s1, "delete_device", "m.login.dummy"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("complete under other kind: %v", err)
	}
	if _, err := db.CompleteUIAStage(ctx, "nope", "register", "m.login.dummy"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown session: %v", err)
	}
	if err := db.DeleteUIASession(ctx, s1); err != nil {
		t.Fatal(err)
	}
	if _, err := db.UIASession(ctx, s1, "register"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted session: %v", err)
	}

	// Expired sessions cannot be continued and are swept by the next create.
	if _, err := db.Pool.Exec(ctx, "UPDATE uia_sessions SET created_at = now() - interval '49 hours' WHERE session_id = $1", s2); err != nil {
		t.Fatal(err)
	}
	if _, err := db.UIASession(ctx, s2, "register"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired session: %v", err)
	}
	if _, err := db.CompleteUIAStage(ctx, s2, "register", "m.login.dummy"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("complete expired session: %v", err)
	}
	if _, err := db.CreateUIASession(ctx, "register"); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := db.Pool.QueryRow(ctx, "SELECT count(*) FROM uia_sessions WHERE session_id = $1", s2).Scan(&left); err != nil || left != 0 {
		t.Fatalf("expired session not swept: %d, %v", left, err)
	}
}

func TestGetFilter(t *testing.T) {
	t.Parallel()
	db := openTestDB(t)
	ctx := context.Background()
	newUser(t, db, "@alice:test", "")
	project(t, db, schemas.AccountsRecord{Kind: schemas.AccountFilterCreated, User: "@alice:test", FilterID: 0,
		Filter: []byte(`{ "room" : { "timeline" : { "limit" : 10 } } }`)})
	got, err := db.GetFilter(ctx, "@alice:test", 0)
	if err != nil || string(got) != `{"room": {"timeline": {"limit": 10}}}` {
		t.Fatalf("GetFilter = %s, %v", got, err)
	}
	if _, err := db.GetFilter(ctx, "@alice:test", 7); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown filter: %v", err)
	}
	if _, err := db.GetFilter(ctx, "@bob:test", 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another user's filter: %v", err)
	}
}

// TestCheckPasswordSpendsHashWork: whether the account exists or not, a password check
// costs one bcrypt comparison at the configured cost, so its timing does not tell an
// unknown user from a wrong password.
func TestCheckPasswordSpendsHashWork(t *testing.T) {
	t.Parallel()
	db := openTestDB(t)
	db.BcryptCost = bcrypt.MinCost + 1
	ctx := context.Background()
	newUser(t, db, "@alice:test", "wonderland")
	newUser(t, db, "@nopass:test", "")
	var costs []int
	db.compareHash = func(hash, password []byte) error {
		cost, err := bcrypt.Cost(hash)
		if err != nil {
			t.Errorf("compared against %q, not a bcrypt hash: %v", hash, err)
		}
		costs = append(costs, cost)
		return bcrypt.CompareHashAndPassword(hash, password)
	}
	for _, tc := range []struct {
		user, password string
		want           error
	}{
		{"@alice:test", "wonderland", nil},
		{"@alice:test", "wrong", ErrWrongPassword},
		{"@nobody:test", "wonderland", ErrNotFound},
		{"@nobody:test", "", ErrNotFound},
		{"@nopass:test", "", ErrWrongPassword},
	} {
		costs = nil
		if err := db.CheckPassword(ctx, tc.user, tc.password); !errors.Is(err, tc.want) {
			t.Errorf("%s/%q: err = %v, want %v", tc.user, tc.password, err, tc.want)
		}
		if !slices.Equal(costs, []int{db.BcryptCost}) {
			t.Errorf("%s/%q: bcrypt comparisons at costs %v, want one at %d", tc.user, tc.password, costs, db.BcryptCost)
		}
	}
}
