package e2ekeys

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ChangedUsers returns the users whose devices or keys changed in (from, to] that viewer
// must fetch again: viewer themselves, those joined to one of rooms (viewer's rooms),
// and those whose master key viewer signed.
func (s Store) ChangedUsers(ctx context.Context, viewer string, rooms []string, from, to uint64) ([]string, error) {
	rows, err := s.DB.Query(ctx, `SELECT DISTINCT c.user_id FROM device_list_changes c
		WHERE c.stream_id > $2 AND c.stream_id <= $3 AND (c.viewer = $1 OR (c.viewer = '' AND (c.user_id = $1
			OR EXISTS (SELECT 1 FROM current_state m WHERE m.type = 'm.room.member' AND m.membership = 'join'
				AND m.state_key = c.user_id AND m.room_id = ANY($4)))))
		ORDER BY 1`, viewer, int64(from), int64(to), rooms)
	if err != nil {
		return nil, fmt.Errorf("e2ekeys: changed users: %w", err)
	}
	users, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("e2ekeys: changed users: %w", err)
	}
	return users, nil
}
