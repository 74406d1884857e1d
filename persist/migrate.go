package persist

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLockKey is the Postgres advisory lock taken while migrating. Its value only has
// to be the same in every Ganglion process and unlikely to be used by anything else
// sharing the database.
const migrationLockKey int64 = 0x67616e676c696f6e // "ganglion"

type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads migrations/NNNN_name.sql from fsys, ordered by version. Versions
// must be unique: two files with the same number would make the order ambiguous.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration
	seen := map[int]string{}
	for _, p := range names {
		base := strings.TrimSuffix(path.Base(p), ".sql")
		num, _, _ := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("persist: migration %s: name must start with a positive version number", p)
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("persist: migrations %s and %s share version %d", other, p, v)
		}
		seen[v] = p
		body, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: base, sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// migrate applies every migration of fsys not yet recorded in schema_migrations, in
// version order, each in its own transaction together with its record. A session-level
// advisory lock serialises concurrent starts: the second process waits, then finds the
// work done. The lock dies with the connection, so a crashed migrator never blocks others.
func migrate(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS, log *zap.Logger) error {
	migs, err := loadMigrations(fsys)
	if err != nil {
		return err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("persist: acquire connection for migrations: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLockKey); err != nil {
		return fmt.Errorf("persist: take migration lock: %w", err)
	}
	defer func() {
		// Unlock on a fresh context: ctx may be cancelled, and the connection goes back to
		// the pool where a leftover session lock would block the next migrator forever.
		if _, err := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrationLockKey); err != nil {
			conn.Conn().Close(context.WithoutCancel(ctx)) // closing the session releases the lock
		}
	}()

	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`); err != nil {
		return fmt.Errorf("persist: create schema_migrations: %w", err)
	}
	applied := map[int]bool{}
	rows, err := conn.Query(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return fmt.Errorf("persist: read schema_migrations: %w", err)
	}
	newest := 0
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return err
		}
		applied[v] = true
		newest = max(newest, v)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("persist: read schema_migrations: %w", err)
	}
	if len(migs) > 0 && newest > migs[len(migs)-1].version {
		log.Warn("database schema is newer than this build; running anyway",
			zap.Int("database_version", newest), zap.Int("build_version", migs[len(migs)-1].version))
	}

	for _, m := range migs {
		if applied[m.version] {
			continue
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			return fmt.Errorf("persist: migration %s: %w", m.name, err)
		}
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			_ = tx.Rollback(ctx)
			return fmt.Errorf("persist: migration %s: %w", m.name, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
			_ = tx.Rollback(ctx)
			return fmt.Errorf("persist: record migration %s: %w", m.name, err)
		}
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("persist: migration %s: %w", m.name, err)
		}
		log.Info("applied database migration", zap.String("migration", m.name))
	}
	return nil
}
