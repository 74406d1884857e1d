package persist

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
)

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
