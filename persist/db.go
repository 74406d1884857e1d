// Package persist is Ganglion's Postgres layer: the connection pool, the embedded schema
// migrations, account storage and the projections of the EVENTS log.
package persist

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"
)

// Errors returned as values by the storage functions; compare with errors.Is.
var (
	ErrNotFound      = errors.New("persist: not found")
	ErrWrongPassword = errors.New("persist: wrong password")
)

// DefaultBcryptCost is the bcrypt cost of new password hashes, Synapse's default
// bcrypt_rounds, so hashes imported from Synapse and ours cost the same to check.
const DefaultBcryptCost = 12

// DB is the shared Postgres handle of one process.
type DB struct {
	Pool *pgxpool.Pool
	// BcryptCost is the cost of password hashes written from now on; existing hashes keep
	// the cost they were made with. Tests lower it to bcrypt.MinCost.
	BcryptCost int

	// compareHash is bcrypt.CompareHashAndPassword when nil; tests watch it.
	compareHash func(hash, password []byte) error
	// dummy is a hash of nothing anyone knows, compared against when an account has no
	// hash, so such a check costs what checking a wrong password costs.
	dummy struct {
		mu   sync.Mutex
		cost int
		hash []byte
	}
	hashSlots chan struct{}
}

// Open connects to Postgres and brings the schema up to date before returning, so every
// process that opens the database can rely on the current schema.
func Open(ctx context.Context, dsn string, log *zap.Logger) (*DB, error) {
	if log == nil {
		log = zap.NewNop()
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("persist: parse database DSN: %w", err)
	}
	// JIT compilation costs seconds on the sync state query of large rooms (its cost
	// estimate crosses the JIT threshold) and never pays off for our short queries.
	if _, set := cfg.ConnConfig.RuntimeParams["jit"]; !set {
		cfg.ConnConfig.RuntimeParams["jit"] = "off"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("persist: connect to Postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("persist: connect to Postgres: %w", err)
	}
	db := &DB{Pool: pool, BcryptCost: DefaultBcryptCost, hashSlots: newHashSlots()}
	if err := migrate(ctx, pool, migrationFiles, log); err != nil {
		pool.Close()
		return nil, err
	}
	return db, nil
}

// Close releases every connection of the pool.
func (db *DB) Close() { db.Pool.Close() }

func (db *DB) compare(hash, password []byte) error {
	if db.compareHash != nil {
		return db.compareHash(hash, password)
	}
	return bcrypt.CompareHashAndPassword(hash, password)
}

func (db *DB) bcryptCost() int {
	if db.BcryptCost < bcrypt.MinCost || db.BcryptCost > bcrypt.MaxCost {
		return DefaultBcryptCost
	}
	return db.BcryptCost
}
