package persist

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
)

// EnsureDatabase creates the database named in dsn when the server answers but the
// database does not exist yet, so a first start needs no manual step.
func EnsureDatabase(ctx context.Context, dsn string, log *zap.Logger) error {
	// Parsed as the pool parses it, so the pool's own settings (pool_max_conns, ...)
	// are not sent to the server as parameters.
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("persist: parse database DSN: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, pcfg.ConnConfig.Copy())
	if err == nil {
		return conn.Close(ctx)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "3D000" { // invalid_catalog_name
		return fmt.Errorf("postgres: %w", err)
	}
	cfg := pcfg.ConnConfig.Copy()
	name := cfg.Database
	cfg.Database = "postgres"
	admin, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("postgres: creating database %q: %w", name, err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		var dup *pgconn.PgError
		if !errors.As(err, &dup) || dup.Code != "42P04" { // duplicate_database: another process won
			return fmt.Errorf("postgres: creating database %q: %w", name, err)
		}
	}
	if log != nil {
		log.Info("created database", zap.String("database", name))
	}
	return nil
}
