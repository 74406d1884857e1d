package persist

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// JoinRules is the content of a room's current m.room.join_rules event.
type JoinRules struct {
	Rule string `json:"join_rule"`
	// Allow lists the conditions of a restricted rule; only m.room_membership is
	// defined: a member of RoomID may join.
	Allow []struct {
		Type   string `json:"type"`
		RoomID string `json:"room_id"`
	} `json:"allow"`
}

// AllowedRooms lists the rooms whose members a restricted rule lets in.
func (j JoinRules) AllowedRooms() []string {
	var rooms []string
	for _, a := range j.Allow {
		if a.Type == "m.room_membership" && a.RoomID != "" {
			rooms = append(rooms, a.RoomID)
		}
	}
	return rooms
}

// Restricted reports whether the rule lets in members of other rooms.
func (j JoinRules) Restricted() bool { return j.Rule == "restricted" || j.Rule == "knock_restricted" }

// CurrentJoinRules reads a room's join rules; a room without the event has the zero
// JoinRules, one that does not exist ErrNotFound.
func (db *DB) CurrentJoinRules(ctx context.Context, room string) (JoinRules, error) {
	var content []byte
	err := db.Pool.QueryRow(ctx, `SELECT (SELECT e.json::jsonb -> 'content' FROM current_state c JOIN events e USING (event_id)
			WHERE c.room_id = $1 AND c.type = 'm.room.join_rules' AND c.state_key = '')
		FROM rooms WHERE room_id = $1`, room).Scan(&content)
	if errors.Is(err, pgx.ErrNoRows) {
		return JoinRules{}, ErrNotFound
	}
	if err != nil {
		return JoinRules{}, fmt.Errorf("persist: join rules: %w", err)
	}
	var rules JoinRules
	if content != nil {
		// Content the auth rules accepted may still not parse (a non-list allow):
		// it is then no rule this server can apply.
		_ = json.Unmarshal(content, &rules)
	}
	return rules, nil
}
