package persist

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// MembershipDelta is how one user's membership of a room moved over a span of the log:
// Before is the membership at its start ("" for none), After at its end.
type MembershipDelta struct {
	RoomID, UserID string
	Before, After  string
}

// MembershipDeltas returns the membership changes in (from, to] of the log in rooms,
// and those of user in any room, one per (room, user) that has a member event in the
// span: what device-list tracking needs to tell who started or stopped sharing a room.
func (db *DB) MembershipDeltas(ctx context.Context, user string, rooms []string, from, to uint64) ([]MembershipDelta, error) {
	rows, err := db.Pool.Query(ctx, `WITH last AS (
			SELECT DISTINCT ON (room_id, state_key) room_id, state_key, membership
			FROM events
			WHERE type = 'm.room.member' AND seq > $1 AND seq <= $2 AND (room_id = ANY($3) OR state_key = $4)
			ORDER BY room_id, state_key, seq DESC, idx DESC
		)
		SELECT l.room_id, l.state_key, coalesce((SELECT p.membership FROM events p
			WHERE p.room_id = l.room_id AND p.type = 'm.room.member' AND p.state_key = l.state_key AND p.seq <= $1
			ORDER BY p.seq DESC, p.idx DESC LIMIT 1), ''), l.membership
		FROM last l`, int64(from), int64(to), rooms, user)
	if err != nil {
		return nil, fmt.Errorf("persist: membership deltas: %w", err)
	}
	deltas, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (MembershipDelta, error) {
		var d MembershipDelta
		return d, row.Scan(&d.RoomID, &d.UserID, &d.Before, &d.After)
	})
	if err != nil {
		return nil, fmt.Errorf("persist: membership deltas: %w", err)
	}
	return deltas, nil
}

// JoinedMembers returns the users joined to any of rooms now, by room.
func (db *DB) JoinedMembers(ctx context.Context, rooms []string) (map[string][]string, error) {
	rows, err := db.Pool.Query(ctx, `SELECT room_id, state_key FROM current_state
		WHERE type = 'm.room.member' AND membership = 'join' AND room_id = ANY($1)`, rooms)
	if err != nil {
		return nil, fmt.Errorf("persist: joined members: %w", err)
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var room, user string
		if err := rows.Scan(&room, &user); err != nil {
			return nil, fmt.Errorf("persist: joined members: %w", err)
		}
		out[room] = append(out[room], user)
	}
	return out, rows.Err()
}

// JoinedAny returns those of users joined to at least one of rooms now.
func (db *DB) JoinedAny(ctx context.Context, users, rooms []string) ([]string, error) {
	rows, err := db.Pool.Query(ctx, `SELECT DISTINCT state_key FROM current_state
		WHERE type = 'm.room.member' AND membership = 'join' AND room_id = ANY($1) AND state_key = ANY($2)`, rooms, users)
	if err != nil {
		return nil, fmt.Errorf("persist: joined any: %w", err)
	}
	joined, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("persist: joined any: %w", err)
	}
	return joined, nil
}

// JoinedRoomsOf returns the rooms each of users is joined to now.
func (db *DB) JoinedRoomsOf(ctx context.Context, users []string) (map[string][]string, error) {
	rows, err := db.Pool.Query(ctx, `SELECT state_key, room_id FROM current_state
		WHERE type = 'm.room.member' AND membership = 'join' AND state_key = ANY($1)`, users)
	if err != nil {
		return nil, fmt.Errorf("persist: joined rooms of users: %w", err)
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var user, room string
		if err := rows.Scan(&user, &room); err != nil {
			return nil, fmt.Errorf("persist: joined rooms of users: %w", err)
		}
		out[user] = append(out[user], room)
	}
	return out, rows.Err()
}
