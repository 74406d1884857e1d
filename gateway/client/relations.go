package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/tidwall/sjson"
	"golang.org/x/sync/errgroup"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
)

// Relations and threads (spec: "Relationships"): the events relating to an event, a
// room's threads, and the aggregations bundled in unsigned.m.relations of the events
// a client reads.

// Bounds of a relations or threads page, as Synapse's.
const (
	defaultRelationsLimit = 5
	maxRelationsLimit     = 100
)

func (s *Server) registerRelations(r router) {
	v1 := []string{"v1"}
	r.handle("GET", "/rooms/{room}/relations/{event}", v1, s.authed(s.relations))
	r.handle("GET", "/rooms/{room}/relations/{event}/{relType}", v1, s.authed(s.relations))
	r.handle("GET", "/rooms/{room}/relations/{event}/{relType}/{eventType}", v1, s.authed(s.relations))
	r.handle("GET", "/rooms/{room}/threads", v1, s.authed(s.threads))
}

type relationsResponse struct {
	Chunk          []json.RawMessage `json:"chunk"`
	NextBatch      string            `json:"next_batch,omitempty"`
	PrevBatch      string            `json:"prev_batch,omitempty"`
	RecursionDepth int               `json:"recursion_depth,omitempty"`
}

// relations pages through the events relating to one the user may read (404
// otherwise), newest first unless dir is f, from and to being /messages's tokens or
// sync tokens; recurse follows relations of relations, three deep.
func (s *Server) relations(w http.ResponseWriter, r *http.Request, dev Device) {
	room, bound, parent, ok := s.readableEvent(w, r, dev)
	if !ok {
		return
	}
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir == "" {
		dir = "b"
	}
	if dir != "b" && dir != "f" {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "dir must be b or f"))
		return
	}
	limit, err := intParam(q.Get("limit"), defaultRelationsLimit, 1, maxRelationsLimit)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	rq := persist.RelationsQuery{Room: room, Parent: parent.EventID, RelType: r.PathValue("relType"), EventType: r.PathValue("eventType"),
		Backwards: dir == "b", Limit: limit, Recurse: q.Get("recurse") == "true"}
	from, to, err := pageBounds(q.Get("from"), q.Get("to"), rq.Backwards, bound)
	if err != nil {
		matrix.WriteError(w, err)
		return
	}
	rq.From, rq.To = from, to
	evs, err := s.DB.Relations(r.Context(), rq)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	chunk, err := s.withBundles(r.Context(), evs, dev, bound)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	resp := relationsResponse{Chunk: chunk, PrevBatch: q.Get("from")}
	if rq.Recurse {
		resp.RecursionDepth = persist.MaxRelationDepth
	}
	if len(evs) == limit {
		resp.NextBatch = formatPageToken(afterInPage(evs[len(evs)-1], rq.Backwards))
	}
	matrix.WriteJSON(w, http.StatusOK, resp)
}

// readableEvent returns the event the path names, in the room it names, with what of
// the room the user may read; an event they may not read is 404 M_NOT_FOUND.
func (s *Server) readableEvent(w http.ResponseWriter, r *http.Request, dev Device) (string, readBound, *persist.StoredEvent, bool) {
	room, bound, ok := s.readableRoom(w, r, dev)
	if !ok {
		return "", readBound{}, nil, false
	}
	ev, err := s.DB.GetEvent(r.Context(), r.PathValue("event"))
	if errors.Is(err, persist.ErrNotFound) || err == nil && (ev.RoomID != room || !bound.allows(persist.Pos{Seq: ev.Seq, Idx: ev.Idx})) {
		matrix.WriteError(w, matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "Event not found"))
		return "", readBound{}, nil, false
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return "", readBound{}, nil, false
	}
	return room, bound, ev, true
}

// pageBounds reads a page's from and to tokens (either may be "") within what the user
// may read, as /messages does.
func pageBounds(fromTok, toTok string, backwards bool, bound readBound) (persist.Pos, *persist.Pos, error) {
	ceiling, floor := bound.ceiling(), bound.floor()
	from := ceiling
	if !backwards {
		from = floor
	}
	if fromTok != "" {
		p, err := parsePageToken(fromTok)
		if err != nil {
			return from, nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "invalid from token")
		}
		from = p
	}
	var to *persist.Pos
	if toTok != "" {
		p, err := parsePageToken(toTok)
		if err != nil {
			return from, nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "invalid to token")
		}
		to = &p
	}
	if backwards {
		if ceiling.Less(from) {
			from = ceiling
		}
		if to == nil || to.Less(floor) {
			to = &floor
		}
	} else {
		if from.Less(floor) {
			from = floor
		}
		if to == nil || ceiling.Less(*to) {
			to = &ceiling
		}
	}
	return from, to, nil
}

// afterInPage is the boundary just past ev in a page's direction: the token of the next
// page.
func afterInPage(ev persist.StoredEvent, backwards bool) persist.Pos {
	if backwards {
		return persist.Pos{Seq: ev.Seq, Idx: ev.Idx}
	}
	return persist.Pos{Seq: ev.Seq, Idx: ev.Idx + 1}
}

type threadsResponse struct {
	Chunk     []json.RawMessage `json:"chunk"`
	NextBatch string            `json:"next_batch,omitempty"`
}

// threads lists a room's thread roots, the most recently active first, each with its
// m.thread aggregation; include=participated keeps those the user started or replied
// in. next_batch is the boundary before the last thread's latest event.
func (s *Server) threads(w http.ResponseWriter, r *http.Request, dev Device) {
	room, bound, ok := s.readableRoom(w, r, dev)
	if !ok {
		return
	}
	q := r.URL.Query()
	participant := ""
	switch q.Get("include") {
	case "", "all":
	case "participated":
		participant = dev.UserID
	default:
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "include must be all or participated"))
		return
	}
	limit, err := intParam(q.Get("limit"), defaultRelationsLimit, 1, maxRelationsLimit)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	var before *persist.Pos
	if tok := q.Get("from"); tok != "" {
		p, err := parsePageToken(tok)
		if err != nil {
			matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "invalid from token"))
			return
		}
		before = &p
	}
	if c := bound.ceiling(); before == nil || c.Less(*before) {
		before = &c
	}
	roots, err := s.DB.Threads(r.Context(), room, participant, before, limit)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	ids := make([]string, len(roots))
	for i, t := range roots {
		ids[i] = t.Root
	}
	byID, err := s.DB.EventsByID(r.Context(), ids)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	var ordered []persist.StoredEvent
	for _, t := range roots {
		if e, ok := byID[t.Root]; ok && e.RoomID == room && bound.allows(persist.Pos{Seq: e.Seq, Idx: e.Idx}) {
			ordered = append(ordered, e)
		}
	}
	chunk, err := s.withBundles(r.Context(), ordered, dev, bound)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	resp := threadsResponse{Chunk: chunk}
	if len(roots) == limit {
		resp.NextBatch = formatPageToken(roots[len(roots)-1].Latest)
	}
	matrix.WriteJSON(w, http.StatusOK, resp)
}

// withBundles turns events into the client format with the user's membership at each
// (unsigned.membership) and their aggregations in unsigned.m.relations: a thread root's m.thread (latest event, count, whether the user
// took part), an edited event's latest edit by its sender (m.replace), and the events
// referencing it (m.reference).
func (s *Server) withBundles(ctx context.Context, evs []persist.StoredEvent, dev Device, bound readBound) ([]json.RawMessage, error) {
	ids := make([]string, len(evs))
	for i := range evs {
		ids[i] = evs[i].EventID
	}
	// Two independent reads, side by side.
	var memberships []string
	var bundles map[string]*persist.Bundle
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		memberships, err = s.membershipsOf(gctx, evs, dev.UserID, nil, bound.histories())
		return err
	})
	g.Go(func() (err error) { bundles, err = s.DB.Bundles(gctx, ids, dev.UserID); return err })
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := s.asSeen(evs, dev, memberships)
	return out, addBundles(out, evs, bundles, dev)
}

// addBundles puts the aggregations of bundles into the client events out of evs, in
// unsigned.m.relations.
func addBundles(out []json.RawMessage, evs []persist.StoredEvent, bundles map[string]*persist.Bundle, dev Device) error {
	for i := range evs {
		b := bundles[evs[i].EventID]
		if b == nil {
			continue
		}
		rel := map[string]any{}
		if t := b.Thread; t != nil && t.Latest.EventID != "" {
			rel["m.thread"] = map[string]any{"latest_event": clientEvent(&t.Latest, dev), "count": t.Count,
				"current_user_participated": t.Participated || evs[i].Sender == dev.UserID}
		}
		if b.Replace != nil {
			rel["m.replace"] = clientEvent(b.Replace, dev)
		}
		if len(b.References) > 0 {
			chunk := make([]map[string]string, len(b.References))
			for j, id := range b.References {
				chunk[j] = map[string]string{"event_id": id}
			}
			rel["m.reference"] = map[string]any{"chunk": chunk}
		}
		if len(rel) == 0 {
			continue
		}
		data, err := matrix.Marshal(rel)
		if err != nil {
			return err
		}
		if withRel, err := sjson.SetRawBytes(out[i], `unsigned.m\.relations`, data); err == nil {
			out[i] = withRel
		}
	}
	return nil
}
