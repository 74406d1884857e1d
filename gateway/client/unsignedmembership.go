package client

import (
	"context"

	"github.com/ganglionhq/ganglion/persist"
)

// membershipsOf returns the requesting user's membership in each event's room just
// after the event (unsigned.membership, spec v1.11, MSC4115). known gives, for a room,
// the membership to use for all its events without reading the user's history (a
// joined room whose timeline holds none of the user's member events); the others'
// histories are read in one query.
func (s *Server) membershipsOf(ctx context.Context, evs []persist.StoredEvent, user string, known func(room string) (string, bool)) ([]string, error) {
	var rooms []string
	seen := map[string]bool{}
	for _, ev := range evs {
		if seen[ev.RoomID] {
			continue
		}
		seen[ev.RoomID] = true
		if known == nil {
			rooms = append(rooms, ev.RoomID)
		} else if _, ok := known(ev.RoomID); !ok {
			rooms = append(rooms, ev.RoomID)
		}
	}
	var histories map[string][]persist.MemberChange
	if len(rooms) > 0 {
		var err error
		if histories, err = s.DB.MembershipHistories(ctx, rooms, user); err != nil {
			return nil, err
		}
	}
	out := make([]string, len(evs))
	for i, ev := range evs {
		m, ok := "", false
		if known != nil {
			m, ok = known(ev.RoomID)
		}
		if !ok {
			m = persist.MembershipAt(histories[ev.RoomID], persist.Pos{Seq: ev.Seq, Idx: ev.Idx})
		}
		out[i] = m
	}
	return out, nil
}
