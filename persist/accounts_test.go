package persist

import (
	"context"
	"crypto/sha256"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap/zaptest"
	"golang.org/x/crypto/bcrypt"

	"github.com/ganglionhq/ganglion/persist/pgtest"
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

func TestUsersAndPasswords(t *testing.T) {
	t.Parallel()
	db := openTestDB(t)
	ctx := context.Background()

	if err := db.CreateUser(ctx, "@alice:test", "wonderland", nil); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateUser(ctx, "@alice:test", "other", nil); !errors.Is(err, ErrUserExists) {
		t.Fatalf("second CreateUser = %v, want ErrUserExists", err)
	}
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

	// An account without a password exists but cannot log in with one.
	if err := db.CreateUser(ctx, "@nopass:test", "", nil); err != nil {
		t.Fatal(err)
	}
	if err := db.CheckPassword(ctx, "@nopass:test", ""); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("password-less account: %v", err)
	}

	// bcrypt reads 72 bytes; longer passwords are accepted and checked on that prefix.
	long := strings.Repeat("p", 100)
	if err := db.CreateUser(ctx, "@long:test", long, nil); err != nil {
		t.Fatal(err)
	}
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
	a, err := db.NextLocalpart(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, err := db.NextLocalpart(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if a == b || strings.Trim(a+b, "0123456789") != "" {
		t.Fatalf("localparts %q, %q: want two different numbers", a, b)
	}
}

func TestDevicesAndTokens(t *testing.T) {
	t.Parallel()
	db := openTestDB(t)
	ctx := context.Background()
	alice := "@alice:test"

	if err := db.CreateUser(ctx, alice, "pw", &NewDevice{DeviceID: "D1", DisplayName: "phone", TokenHash: tokenHash("t1")}); err != nil {
		t.Fatal(err)
	}
	u, d, err := db.LookupToken(ctx, tokenHash("t1"), "192.0.2.1")
	if err != nil || u != alice || d != "D1" {
		t.Fatalf("LookupToken(t1) = %q, %q, %v", u, d, err)
	}
	if _, _, err := db.LookupToken(ctx, tokenHash("nope"), ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown token: %v", err)
	}
	var n int
	if err := db.Pool.QueryRow(ctx, "SELECT count(*) FROM access_tokens WHERE token_hash = $1", []byte("t1")).Scan(&n); err != nil || n != 0 {
		t.Fatalf("raw token found in access_tokens (%d, %v)", n, err)
	}

	if err := db.CreateDevice(ctx, alice, NewDevice{DeviceID: "D2", TokenHash: tokenHash("t2")}); err != nil {
		t.Fatal(err)
	}
	// Logging in again as D1 replaces its token.
	if err := db.CreateDevice(ctx, alice, NewDevice{DeviceID: "D1", DisplayName: "ignored", TokenHash: tokenHash("t1b")}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.LookupToken(ctx, tokenHash("t1"), ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("replaced token still valid: %v", err)
	}
	if _, d, err := db.LookupToken(ctx, tokenHash("t1b"), ""); err != nil || d != "D1" {
		t.Fatalf("new D1 token: %q, %v", d, err)
	}
	devs, err := db.Devices(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 2 || devs[0].DeviceID != "D1" || devs[0].DisplayName != "phone" || devs[1].DeviceID != "D2" || devs[0].LastSeenMS == 0 {
		t.Fatalf("Devices = %+v", devs)
	}

	if err := db.CreateDevice(ctx, "@ghost:test", NewDevice{DeviceID: "X", TokenHash: tokenHash("tx")}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("device for unknown user: %v", err)
	}

	// One device is seen from an address; unknown devices are skipped when deleting.
	if d, err := db.GetDevice(ctx, alice, "D2"); err != nil || d.LastSeenIP != "" || d.DisplayName != "" {
		t.Fatalf("GetDevice(D2) = %+v, %v", d, err)
	}
	if d, err := db.GetDevice(ctx, alice, "D1"); err != nil || d.LastSeenIP != "192.0.2.1" || d.DisplayName != "phone" {
		t.Fatalf("GetDevice(D1) = %+v, %v", d, err)
	}
	if _, err := db.GetDevice(ctx, "@bob:test", "D1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another user's device: %v", err)
	}
	name := "tablet"
	if err := db.RenameDevice(ctx, alice, "D2", &name); err != nil {
		t.Fatal(err)
	}
	if err := db.RenameDevice(ctx, alice, "D2", nil); err != nil {
		t.Fatal(err)
	}
	if d, _ := db.GetDevice(ctx, alice, "D2"); d.DisplayName != "tablet" {
		t.Fatalf("renamed device: %+v", d)
	}
	if err := db.RenameDevice(ctx, alice, "NOPE", &name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rename an unknown device: %v", err)
	}
	if err := db.DeleteDevices(ctx, alice, []string{"D1", "NOPE"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.LookupToken(ctx, tokenHash("t1b"), ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("token of deleted device: %v", err)
	}
	if _, _, err := db.LookupToken(ctx, tokenHash("t2"), ""); err != nil {
		t.Fatalf("token of the other device: %v", err)
	}

	if err := db.CreateUser(ctx, "@bob:test", "pw", &NewDevice{DeviceID: "B1", TokenHash: tokenHash("b1")}); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateDevice(ctx, alice, NewDevice{DeviceID: "D3", TokenHash: tokenHash("t3")}); err != nil {
		t.Fatal(err)
	}
	ids, err := db.DeviceIDs(ctx, []string{alice, "@bob:test", "@nobody:test"})
	if err != nil || len(ids) != 2 || len(ids[alice]) != 2 || ids[alice][0] != "D2" || ids[alice][1] != "D3" || ids["@bob:test"][0] != "B1" {
		t.Fatalf("DeviceIDs = %v, %v", ids, err)
	}
	if err := db.DeleteDevices(ctx, alice, ids[alice]); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"t2", "t3"} {
		if _, _, err := db.LookupToken(ctx, tokenHash(tok), ""); !errors.Is(err, ErrNotFound) {
			t.Fatalf("token %s after deleting every device: %v", tok, err)
		}
	}
	if _, _, err := db.LookupToken(ctx, tokenHash("b1"), ""); err != nil {
		t.Fatalf("another user's token after deleting every device: %v", err)
	}
	if devs, err := db.Devices(ctx, alice); err != nil || len(devs) != 0 {
		t.Fatalf("devices after deleting every device: %v, %v", devs, err)
	}
}

func TestCreateUserWithDeviceIsAtomic(t *testing.T) {
	t.Parallel()
	db := openTestDB(t)
	ctx := context.Background()
	if err := db.CreateUser(ctx, "@a:test", "pw", &NewDevice{DeviceID: "A", TokenHash: tokenHash("same")}); err != nil {
		t.Fatal(err)
	}
	// The token hash collides, so the device cannot be stored; the user must not be either.
	if err := db.CreateUser(ctx, "@b:test", "pw", &NewDevice{DeviceID: "B", TokenHash: tokenHash("same")}); err == nil {
		t.Fatal("CreateUser with a duplicate token hash succeeded")
	}
	if ok, err := db.UserExists(ctx, "@b:test"); err != nil || ok {
		t.Fatalf("half-registered user left behind: %v, %v", ok, err)
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

func TestFilters(t *testing.T) {
	t.Parallel()
	db := openTestDB(t)
	ctx := context.Background()
	for _, u := range []string{"@alice:test", "@bob:test"} {
		if err := db.CreateUser(ctx, u, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	put := func(user, filter string) int64 {
		t.Helper()
		id, err := db.PutFilter(ctx, user, []byte(filter))
		if err != nil {
			t.Fatalf("PutFilter(%s, %s): %v", user, filter, err)
		}
		return id
	}
	if id := put("@alice:test", `{"room":{"timeline":{"limit":10}}}`); id != 0 {
		t.Fatalf("first filter id = %d, want 0", id)
	}
	if id := put("@alice:test", `{"presence":{"types":[]}}`); id != 1 {
		t.Fatalf("second filter id = %d, want 1", id)
	}
	// Equal JSON, different spelling: the stored ID comes back.
	if id := put("@alice:test", `{ "room" : { "timeline" : { "limit" : 10 } } }`); id != 0 {
		t.Fatalf("repeated filter id = %d, want 0", id)
	}
	if id := put("@bob:test", `{"presence":{"types":[]}}`); id != 0 {
		t.Fatalf("bob's first filter id = %d, want 0 (ids are per user)", id)
	}
	got, err := db.GetFilter(ctx, "@alice:test", 0)
	if err != nil || string(got) != `{"room": {"timeline": {"limit": 10}}}` {
		t.Fatalf("GetFilter = %s, %v", got, err)
	}
	if _, err := db.GetFilter(ctx, "@alice:test", 7); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown filter: %v", err)
	}
	if _, err := db.PutFilter(ctx, "@ghost:test", []byte(`{}`)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("filter of unknown user: %v", err)
	}

	// Concurrent uploads by one user get distinct ids.
	const n = 8
	ids := make([]int64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ids[i], errs[i] = db.PutFilter(ctx, "@bob:test", []byte(`{"event_fields":["`+strings.Repeat("x", i+1)+`"]}`))
		})
	}
	wg.Wait()
	seen := map[int64]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("concurrent PutFilter: %v", errs[i])
		}
		if seen[ids[i]] {
			t.Fatalf("filter id %d handed out twice: %v", ids[i], ids)
		}
		seen[ids[i]] = true
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
	if err := db.CreateUser(ctx, "@alice:test", "wonderland", nil); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateUser(ctx, "@nopass:test", "", nil); err != nil {
		t.Fatal(err)
	}
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
