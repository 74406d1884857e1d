package persist

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ganglionhq/ganglion/persist/pgtest"
)

// TestEnsureDatabase: a first start creates the database its DSN names, pool settings
// in the DSN included (they are the pool's, not parameters for the server), and a
// second start finds it.
func TestEnsureDatabase(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	u, err := url.Parse(pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Path += "_ensured"
	name := u.Path[1:]
	q := u.Query()
	q.Set("pool_max_conns", "3")
	u.RawQuery = q.Encode()
	t.Cleanup(func() {
		admin := *u
		admin.Path, admin.RawQuery = "/postgres", ""
		conn, err := pgx.Connect(context.Background(), admin.String())
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Error(err)
		}
	})
	for range 2 {
		if err := EnsureDatabase(ctx, u.String(), nil); err != nil {
			t.Fatal(err)
		}
	}
	db, err := Open(ctx, u.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got := db.Pool.Config().MaxConns; got != 3 {
		t.Errorf("pool of %d connections, want 3", got)
	}
}
