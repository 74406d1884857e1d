package persist

import (
	"context"
	"io/fs"
	"slices"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap/zaptest"

	"github.com/ganglionhq/ganglion/persist/pgtest"
)

func TestOpenConcurrentAppliesSchemaOnce(t *testing.T) {
	dsn := pgtest.DSN(t)
	ctx := context.Background()
	const n = 4
	dbs := make([]*DB, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { dbs[i], errs[i] = Open(ctx, dsn, zaptest.NewLogger(t)) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Open %d: %v", i, errs[i])
		}
		defer dbs[i].Close()
	}
	migs, err := loadMigrations(migrationFiles)
	if err != nil {
		t.Fatal(err)
	}
	rows, _ := dbs[0].Pool.Query(ctx, "SELECT version, name FROM schema_migrations ORDER BY version")
	recorded, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct {
		V    int
		Name string
	}])
	if err != nil {
		t.Fatal(err)
	}
	if len(recorded) != len(migs) {
		t.Fatalf("schema_migrations has %d rows, want one per migration (%d): %v", len(recorded), len(migs), recorded)
	}
	for i, m := range migs {
		if recorded[i].V != m.version || recorded[i].Name != m.name {
			t.Errorf("row %d = %v, want %d %s", i, recorded[i], m.version, m.name)
		}
	}
	// Opening again later finds nothing to do.
	db, err := Open(ctx, dsn, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	db.Close()
}

func newPool(t *testing.T, dsn string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func appliedRows(t *testing.T, pool *pgxpool.Pool) []int {
	t.Helper()
	rows, _ := pool.Query(context.Background(), "SELECT n FROM applied ORDER BY n")
	ns, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// The migrations here are deliberately not idempotent (CREATE TABLE without IF NOT EXISTS,
// INSERTs): applying one twice would fail or leave a duplicate row.
func TestMigrateConcurrentOnceInOrder(t *testing.T) {
	dsn := pgtest.DSN(t)
	fsys := fstest.MapFS{
		"migrations/0002_second.sql": {Data: []byte("INSERT INTO applied VALUES (2);")},
		"migrations/0001_first.sql":  {Data: []byte("CREATE TABLE applied (n int); INSERT INTO applied VALUES (1);")},
		"migrations/0010_tenth.sql":  {Data: []byte("INSERT INTO applied SELECT max(n) * 10 FROM applied;")},
	}
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		pool := newPool(t, dsn) // one pool per simulated process
		wg.Go(func() { errs[i] = migrate(context.Background(), pool, fsys, zaptest.NewLogger(t)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("migrate %d: %v", i, err)
		}
	}
	got := appliedRows(t, newPool(t, dsn))
	if want := []int{1, 2, 20}; !slices.Equal(got, want) {
		t.Fatalf("applied = %v, want %v (each migration once, in version order)", got, want)
	}
}

func TestMigrateFailureRollsBackAndReleasesLock(t *testing.T) {
	dsn := pgtest.DSN(t)
	pool := newPool(t, dsn)
	ctx := context.Background()
	fsys := fstest.MapFS{
		"migrations/0001_first.sql": {Data: []byte("CREATE TABLE applied (n int); INSERT INTO applied VALUES (1);")},
		"migrations/0002_bad.sql":   {Data: []byte("INSERT INTO applied VALUES (2); SELECT no_such_column FROM applied;")},
	}
	if err := migrate(ctx, pool, fsys, zaptest.NewLogger(t)); err == nil {
		t.Fatal("migrate with a broken migration succeeded")
	}
	if got := appliedRows(t, pool); !slices.Equal(got, []int{1}) {
		t.Fatalf("after failure applied = %v, want [1]: the failed migration must leave nothing", got)
	}
	var recorded int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM schema_migrations").Scan(&recorded); err != nil {
		t.Fatal(err)
	}
	if recorded != 1 {
		t.Fatalf("schema_migrations has %d rows, want 1", recorded)
	}
	// Fixed migration: the next start applies it, which also shows the lock was released.
	fsys["migrations/0002_bad.sql"] = &fstest.MapFile{Data: []byte("INSERT INTO applied VALUES (2);")}
	if err := migrate(ctx, pool, fsys, zaptest.NewLogger(t)); err != nil {
		t.Fatalf("migrate after fix: %v", err)
	}
	if got := appliedRows(t, pool); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("after fix applied = %v, want [1 2]", got)
	}
}

func TestLoadMigrationsRejectsAmbiguousNames(t *testing.T) {
	for name, fsys := range map[string]fs.FS{
		"duplicate version": fstest.MapFS{
			"migrations/0001_a.sql": {Data: []byte("SELECT 1")},
			"migrations/1_b.sql":    {Data: []byte("SELECT 1")},
		},
		"no version":   fstest.MapFS{"migrations/accounts.sql": {Data: []byte("SELECT 1")}},
		"zero version": fstest.MapFS{"migrations/0000_a.sql": {Data: []byte("SELECT 1")}},
	} {
		if _, err := loadMigrations(fsys); err == nil {
			t.Errorf("%s: loadMigrations succeeded", name)
		}
	}
}
