package persist

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// PublicRoom is a room of the room directory's list, as GET /publicRooms shows it.
type PublicRoom struct {
	RoomID           string  `json:"room_id"`
	Name             *string `json:"name,omitempty"`
	Topic            *string `json:"topic,omitempty"`
	CanonicalAlias   *string `json:"canonical_alias,omitempty"`
	AvatarURL        *string `json:"avatar_url,omitempty"`
	JoinRule         *string `json:"join_rule,omitempty"`
	RoomType         *string `json:"room_type,omitempty"`
	NumJoinedMembers int     `json:"num_joined_members"`
	WorldReadable    bool    `json:"world_readable"`
	GuestCanJoin     bool    `json:"guest_can_join"`
}

// PublicRooms lists the rooms of the room directory's list with what their current
// state says of them.
func (db *DB) PublicRooms(ctx context.Context) ([]PublicRoom, error) {
	return db.summaries(ctx, `SELECT d.room_id FROM room_directory d JOIN rooms r USING (room_id) WHERE d.public`)
}

// DirectoryEntries summarises those of rooms that exist as the room directory shows
// them, listed or not.
func (db *DB) DirectoryEntries(ctx context.Context, rooms []string) ([]PublicRoom, error) {
	return db.summaries(ctx, `SELECT room_id FROM rooms WHERE room_id = ANY($1)`, rooms)
}

// summaries summarises the rooms the query chosen selects (one room_id column).
func (db *DB) summaries(ctx context.Context, chosen string, args ...any) ([]PublicRoom, error) {
	rows, err := db.Pool.Query(ctx, `WITH listed AS (`+chosen+`), state AS (
			SELECT c.room_id, c.type, e.json::jsonb -> 'content' AS content
			FROM current_state c JOIN events e USING (event_id)
			WHERE c.room_id IN (SELECT room_id FROM listed) AND c.state_key = '' AND c.type IN
				('m.room.name', 'm.room.topic', 'm.room.canonical_alias', 'm.room.avatar', 'm.room.join_rules',
				 'm.room.history_visibility', 'm.room.guest_access', 'm.room.create')
		)
		SELECT l.room_id,
			(SELECT content ->> 'name' FROM state s WHERE s.room_id = l.room_id AND s.type = 'm.room.name'),
			(SELECT content ->> 'topic' FROM state s WHERE s.room_id = l.room_id AND s.type = 'm.room.topic'),
			(SELECT content ->> 'alias' FROM state s WHERE s.room_id = l.room_id AND s.type = 'm.room.canonical_alias'),
			(SELECT content ->> 'url' FROM state s WHERE s.room_id = l.room_id AND s.type = 'm.room.avatar'),
			(SELECT content ->> 'join_rule' FROM state s WHERE s.room_id = l.room_id AND s.type = 'm.room.join_rules'),
			(SELECT content ->> 'type' FROM state s WHERE s.room_id = l.room_id AND s.type = 'm.room.create'),
			(SELECT count(*) FROM current_state c WHERE c.room_id = l.room_id AND c.type = 'm.room.member' AND c.membership = 'join'),
			coalesce((SELECT content ->> 'history_visibility' FROM state s WHERE s.room_id = l.room_id AND s.type = 'm.room.history_visibility'), '') = 'world_readable',
			coalesce((SELECT content ->> 'guest_access' FROM state s WHERE s.room_id = l.room_id AND s.type = 'm.room.guest_access'), '') = 'can_join'
		FROM listed l`, args...)
	if err != nil {
		return nil, fmt.Errorf("persist: room summaries: %w", err)
	}
	rooms, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (PublicRoom, error) {
		var p PublicRoom
		err := row.Scan(&p.RoomID, &p.Name, &p.Topic, &p.CanonicalAlias, &p.AvatarURL, &p.JoinRule, &p.RoomType,
			&p.NumJoinedMembers, &p.WorldReadable, &p.GuestCanJoin)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("persist: room summaries: %w", err)
	}
	return rooms, nil
}

// RoomListed reports whether a room is in the room directory's list; ErrNotFound for a
// room that does not exist.
func (db *DB) RoomListed(ctx context.Context, room string) (bool, error) {
	var listed *bool
	err := db.Pool.QueryRow(ctx, `SELECT (SELECT public FROM room_directory WHERE room_id = $1) FROM rooms WHERE room_id = $1`, room).Scan(&listed)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, ErrNotFound
	}
	if err != nil {
		return false, fmt.Errorf("persist: room listed: %w", err)
	}
	return listed != nil && *listed, nil
}

// RoomBlocked reports whether the admin API blocked room.
func (db *DB) RoomBlocked(ctx context.Context, room string) (bool, error) {
	var blocked bool
	if err := db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM blocked_rooms WHERE room_id = $1)`, room).Scan(&blocked); err != nil {
		return false, fmt.Errorf("persist: room blocked: %w", err)
	}
	return blocked, nil
}
