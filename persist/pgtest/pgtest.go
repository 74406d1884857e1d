// Package pgtest gives each test its own Postgres database, so tests run in parallel and
// rerun cleanly after a crash without sharing state.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultServer is the Postgres server tests use unless GANGLION_TEST_PG names another
// (a URL without a database, e.g. postgres://user:pass@host:5432?sslmode=disable).
const DefaultServer = "postgres://postgres@127.0.0.1:5432"

// DSN creates a database with a random name and returns its DSN. The database is dropped
// when the test ends, even if connections to it are still open.
func DSN(t testing.TB) string {
	t.Helper()
	base := os.Getenv("GANGLION_TEST_PG")
	if base == "" {
		base = DefaultServer
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("pgtest: bad server URL %q: %v", base, err)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := "ganglion_test_" + hex.EncodeToString(b[:])

	admin := *u
	if admin.Path == "" || admin.Path == "/" {
		admin.Path = "/postgres"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin.String())
	if err != nil {
		t.Fatalf("pgtest: connect to %s (set GANGLION_TEST_PG to use another server): %v", admin.Redacted(), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin.String())
		if err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	db := *u
	db.Path = "/" + name
	return db.String()
}

// ReportLatencies reports the p50 and p99 of a benchmark's measured operations, in
// milliseconds, with results per operation.
func ReportLatencies(b *testing.B, lat []time.Duration, results int) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(results)/float64(len(lat)), "results/op")
}
