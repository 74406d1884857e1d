package persist

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ganglionhq/ganglion/persist/pgtest"
)

func TestTransient(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, refused := pgx.Connect(ctx, "postgres://postgres@127.0.0.1:1/postgres?connect_timeout=5")
	pool, err := pgxpool.New(ctx, pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	pool.Close()
	_, closed := pool.Exec(ctx, "SELECT 1")
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"connection refused", refused, true},
		{"closed pool", closed, true},
		{"deadline", fmt.Errorf("query: %w", context.DeadlineExceeded), true},
		{"canceled by the caller", context.Canceled, false},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, true},
		{"serialization failure", &pgconn.PgError{Code: "40001"}, true},
		{"too many connections", &pgconn.PgError{Code: "53300"}, true},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"invalid byte sequence", &pgconn.PgError{Code: "22021"}, false},
		{"undefined table (a bug)", &pgconn.PgError{Code: "42P01"}, false},
		{"a bug", errors.New("state event $x: bad JSON"), false},
	} {
		if refused == nil || closed == nil {
			t.Fatal("could not provoke the connection errors")
		}
		if got := Transient(tc.err); got != tc.want {
			t.Errorf("%s (%v): Transient = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}
