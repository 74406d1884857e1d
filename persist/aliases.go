package persist

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// staleClaim is how old a claim of an alias by a room that does not exist must be
// before the alias is free again: longer than an intent stays on the bus (10 minutes),
// so the create that claimed it can no longer be handled.
const staleClaim = 15 * time.Minute

// dropStaleClaim frees alias if it is held by a room that never came to exist.
func (db *DB) dropStaleClaim(ctx context.Context, alias string) error {
	_, err := db.Pool.Exec(ctx, `DELETE FROM room_aliases a WHERE a.alias = $1
		AND a.claimed_at < now() - make_interval(secs => $2)
		AND NOT EXISTS (SELECT 1 FROM rooms r WHERE r.room_id = a.room_id)`, alias, staleClaim.Seconds())
	if err != nil {
		return fmt.Errorf("persist: free a stale alias claim: %w", err)
	}
	return nil
}

// CreateAlias points alias at roomID; ErrAliasExists when the alias is taken.
func (db *DB) CreateAlias(ctx context.Context, alias, roomID, creator string) error {
	if err := db.dropStaleClaim(ctx, alias); err != nil {
		return err
	}
	_, err := db.Pool.Exec(ctx, `INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)`, alias, roomID, creator)
	if pgCode(err) == pgUniqueViolation {
		return ErrAliasExists
	}
	if err != nil {
		return fmt.Errorf("persist: create alias: %w", err)
	}
	return nil
}

// ClaimAlias points alias at roomID unless another room holds it (ErrAliasExists).
// Claiming an alias the room already holds succeeds, so a redelivered create claims
// again harmlessly.
func (db *DB) ClaimAlias(ctx context.Context, alias, roomID, creator string) error {
	if err := db.dropStaleClaim(ctx, alias); err != nil {
		return err
	}
	var holder string
	err := db.Pool.QueryRow(ctx, `WITH claim AS (
			INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)
			ON CONFLICT (alias) DO UPDATE SET claimed_at = now()
			WHERE room_aliases.room_id = excluded.room_id RETURNING room_id)
		SELECT room_id FROM claim UNION ALL SELECT room_id FROM room_aliases WHERE alias = $1
		LIMIT 1`, alias, roomID, creator).Scan(&holder)
	if err != nil {
		return fmt.Errorf("persist: claim alias: %w", err)
	}
	if holder != roomID {
		return ErrAliasExists
	}
	return nil
}

// ReleaseAlias lets go of alias if roomID holds it: the room was not created.
func (db *DB) ReleaseAlias(ctx context.Context, alias, roomID string) error {
	if _, err := db.Pool.Exec(ctx, `DELETE FROM room_aliases WHERE alias = $1 AND room_id = $2`, alias, roomID); err != nil {
		return fmt.Errorf("persist: release alias: %w", err)
	}
	return nil
}

// ResolveAlias returns the room an alias points to and who created the alias, or
// ErrNotFound; an alias claimed by a room that does not exist (yet) is not found.
func (db *DB) ResolveAlias(ctx context.Context, alias string) (roomID, creator string, err error) {
	err = db.Pool.QueryRow(ctx, `SELECT a.room_id, a.creator FROM room_aliases a JOIN rooms r USING (room_id)
		WHERE a.alias = $1`, alias).Scan(&roomID, &creator)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", ErrNotFound
	}
	return roomID, creator, err
}

// DeleteAlias removes an alias; ErrNotFound when there was none.
func (db *DB) DeleteAlias(ctx context.Context, alias string) error {
	tag, err := db.Pool.Exec(ctx, `DELETE FROM room_aliases WHERE alias = $1`, alias)
	if err != nil {
		return fmt.Errorf("persist: delete alias: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}
