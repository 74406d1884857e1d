package client

import (
	"context"
	"encoding/json"

	"github.com/tidwall/sjson"

	"github.com/ganglionhq/ganglion/persist"
)

// withMembership sets unsigned.membership (spec v1.11, MSC4115) on each of out, the
// client forms of evs: the requesting user's membership in the event's room just after
// the event. known gives, for a room, the membership to use for all its events without
// reading the user's history (a joined room whose timeline holds none of the user's
// member events); the others' histories are read in one query.
func (s *Server) withMembership(ctx context.Context, out []json.RawMessage, evs []persist.StoredEvent, user string, known func(room string) (string, bool)) error {
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
			return err
		}
	}
	for i, ev := range evs {
		m, ok := "", false
		if known != nil {
			m, ok = known(ev.RoomID)
		}
		if !ok {
			m = persist.MembershipAt(histories[ev.RoomID], persist.Pos{Seq: ev.Seq, Idx: ev.Idx})
		}
		if with, err := sjson.SetBytes(out[i], "unsigned.membership", m); err == nil {
			out[i] = with
		}
	}
	return nil
}
