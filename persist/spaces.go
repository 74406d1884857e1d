package persist

import (
	"context"
	"fmt"
)

// SpaceChildren returns the m.space.child events of the current state of each of rooms,
// in log order, by room.
func (db *DB) SpaceChildren(ctx context.Context, rooms []string) (map[string][]StoredEvent, error) {
	evs, err := db.queryEvents(ctx, `WHERE e.event_id IN (SELECT event_id FROM current_state
			WHERE room_id = ANY($1) AND type = 'm.space.child')
		ORDER BY e.seq, e.idx`, rooms)
	if err != nil {
		return nil, fmt.Errorf("persist: space children: %w", err)
	}
	out := map[string][]StoredEvent{}
	for _, ev := range evs {
		out[ev.RoomID] = append(out[ev.RoomID], ev)
	}
	return out, nil
}
