package client

import (
	"context"
	"maps"

	"github.com/ganglionhq/ganglion/persist"
)

// membershipsOf returns the requesting user's membership in each event's room just
// after the event (unsigned.membership, spec v1.11, MSC4115). known gives, for a room,
// the membership to use for all its events without reading the user's history (a
// joined room whose timeline holds none of the user's member events); histories
// gives the user's history of rooms read before (with their membership); the other
// rooms' histories are read in one query.
func (s *Server) membershipsOf(ctx context.Context, evs []persist.StoredEvent, user string, known func(room string) (string, bool),
	histories map[string][]persist.MemberChange) ([]string, error) {
	var rooms []string
	seen := map[string]bool{}
	for _, ev := range evs {
		if seen[ev.RoomID] {
			continue
		}
		seen[ev.RoomID] = true
		if _, ok := histories[ev.RoomID]; ok {
			continue
		}
		if known == nil {
			rooms = append(rooms, ev.RoomID)
		} else if _, ok := known(ev.RoomID); !ok {
			rooms = append(rooms, ev.RoomID)
		}
	}
	if len(rooms) > 0 {
		read, err := s.DB.MembershipHistories(ctx, rooms, user)
		if err != nil {
			return nil, err
		}
		if histories == nil {
			histories = read
		} else {
			histories = maps.Clone(histories)
			maps.Copy(histories, read)
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
