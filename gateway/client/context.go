package client

import (
	"encoding/json"
	"net/http"

	"golang.org/x/sync/errgroup"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
)

func (s *Server) registerContext(r router) {
	r.handle("GET", "/rooms/{room}/context/{event}", modernVersions, s.authed(s.eventContext))
}

type contextResponse struct {
	Start        string            `json:"start"`
	End          string            `json:"end"`
	EventsBefore []json.RawMessage `json:"events_before"`
	Event        json.RawMessage   `json:"event"`
	EventsAfter  []json.RawMessage `json:"events_after"`
	State        []json.RawMessage `json:"state"`
}

// eventContext answers an event the user may read with up to limit events around it
// (half before, newest first, the rest after; the room filter applies to them) and the
// room's state at the last of them, as Synapse does; with lazy_load_members the state
// holds only the members who sent the events shown.
func (s *Server) eventContext(w http.ResponseWriter, r *http.Request, dev Device) {
	room, bound, ev, ok := s.readableEvent(w, r, dev)
	if !ok {
		return
	}
	q := r.URL.Query()
	limit, err := intParam(q.Get("limit"), 10, 0, 100)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	var rf *roomEventFilter
	if raw := q.Get("filter"); raw != "" {
		if rf, err = parseRoomEventFilter([]byte(raw)); err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
	}
	at := persist.Pos{Seq: ev.Seq, Idx: ev.Idx}
	floor, ceiling := bound.floor(), bound.ceiling()
	// The events on each side are read side by side, then their aggregations and the
	// state: two round trips' wait instead of four.
	var before, after []persist.StoredEvent
	g, gctx := errgroup.WithContext(r.Context())
	if n := limit / 2; n > 0 {
		g.Go(func() (err error) {
			before, err = s.DB.RoomEvents(gctx, room, at, &floor, true, n, rf.query())
			return err
		})
	}
	if n := limit - limit/2; n > 0 {
		g.Go(func() (err error) {
			after, err = s.DB.RoomEvents(gctx, room, persist.Pos{Seq: at.Seq, Idx: at.Idx + 1}, &ceiling, false, n, rf.query())
			return err
		})
	}
	if err := g.Wait(); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	last := *ev
	if len(after) > 0 {
		last = after[len(after)-1]
	}
	resp := contextResponse{Start: formatPageToken(at), End: formatPageToken(persist.Pos{Seq: last.Seq, Idx: last.Idx + 1})}
	if len(before) > 0 {
		resp.Start = formatPageToken(afterInPage(before[len(before)-1], true))
	}
	all := append(append(append([]persist.StoredEvent{}, before...), *ev), after...)
	var shown []json.RawMessage
	g, gctx = errgroup.WithContext(r.Context())
	g.Go(func() (err error) { shown, err = s.withBundles(gctx, all, dev, bound); return err })
	g.Go(func() error {
		if rf != nil && rf.LazyLoadMembers {
			// The members as of the last event shown.
			var err error
			resp.State, err = s.chunkMembers(gctx, room, append([]persist.StoredEvent{last}, all...), dev)
			return err
		}
		state, err := s.DB.StateAt(gctx, room, persist.Pos{Seq: last.Seq, Idx: last.Idx})
		resp.State = clientEvents(state, dev)
		return err
	})
	if err := g.Wait(); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	resp.EventsBefore, resp.Event, resp.EventsAfter = shown[:len(before)], shown[len(before)], shown[len(before)+1:]
	if resp.State == nil {
		resp.State = []json.RawMessage{}
	}
	matrix.WriteJSON(w, http.StatusOK, resp)
}
