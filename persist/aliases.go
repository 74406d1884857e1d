package persist

import (
	"context"
	"errors"
	"fmt"

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

// AliasesOfRooms returns the local aliases of any of rooms, by room.
func (db *DB) AliasesOfRooms(ctx context.Context, rooms []string) (map[string][]string, error) {
	rows, err := db.Pool.Query(ctx, `SELECT room_id, alias FROM room_aliases WHERE room_id = ANY($1)`, rooms)
	if err != nil {
		return nil, fmt.Errorf("persist: aliases of rooms: %w", err)
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var room, alias string
		if err := rows.Scan(&room, &alias); err != nil {
			return nil, fmt.Errorf("persist: aliases of rooms: %w", err)
		}
		out[room] = append(out[room], alias)
	}
	return out, rows.Err()
}
