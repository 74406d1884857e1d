package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/accountdata"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// maxReceiptBody bounds the body of a receipt or read_markers request: a thread ID, or
// three event IDs.
const maxReceiptBody = 8192

// fullyRead is the read marker's type: the room's account data of that type, set
// through the receipt and read_markers endpoints only.
const fullyRead = "m.fully_read"

// mainThread is the thread_id of a receipt for the main timeline.
const mainThread = "main"

// maxRelationHops bounds how far a receipt's event is followed up its relations to find
// its thread (a reaction to a reply in a thread is two hops from the thread's root).
const maxRelationHops = 8

func (s *Server) registerReceipts(r router) {
	r.handle("POST", "/rooms/{room}/receipt/{type}/{event}", modernVersions, s.authed(s.postReceipt))
	r.handle("POST", "/rooms/{room}/read_markers", modernVersions, s.authed(s.postReadMarkers))
}

// decodeReceipt reads the body of POST /receipt: an object whose thread_id, when
// present, is "main" or a thread root's event ID, and never with m.fully_read.
func decodeReceipt(r *http.Request, receiptType string) (thread string, err error) {
	var body map[string]json.RawMessage
	if err := matrix.DecodeBody(r, maxReceiptBody, &body); err != nil {
		return "", err
	}
	raw, ok := body["thread_id"]
	if !ok {
		return "", nil
	}
	if json.Unmarshal(raw, &thread) != nil || thread == "" {
		return "", matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "thread_id field must be a non-empty string")
	}
	if receiptType == fullyRead {
		return "", matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "thread_id is not compatible with %s receipts.", fullyRead)
	}
	if thread != mainThread && !validEventID(thread) {
		return "", matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "thread_id must be %q or an event ID", mainThread)
	}
	return thread, nil
}

// decodeReadMarkers reads the body of POST /read_markers: the event IDs of the markers
// it moves, by type. Unknown keys are ignored and empty ones skipped, as Synapse does.
func decodeReadMarkers(r *http.Request) (map[string]string, error) {
	var body map[string]json.RawMessage
	if err := matrix.DecodeBody(r, maxReceiptBody, &body); err != nil {
		return nil, err
	}
	markers := map[string]string{}
	for _, typ := range []string{fullyRead, schemas.ReceiptRead, schemas.ReceiptReadPrivate} {
		raw, ok := body[typ]
		if !ok {
			continue
		}
		var id string
		if json.Unmarshal(raw, &id) != nil {
			return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "%s must be an event ID", typ)
		}
		if id == "" {
			continue
		}
		if !validEventID(id) {
			return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "%s: %q is not an event ID", typ, id)
		}
		markers[typ] = id
	}
	return markers, nil
}

func validEventID(id string) bool { return strings.HasPrefix(id, "$") && len(id) > 1 && len(id) <= 255 }

// postReceipt serves POST /rooms/{roomId}/receipt/{receiptType}/{eventId}.
func (s *Server) postReceipt(w http.ResponseWriter, r *http.Request, dev Device) {
	room, err := roomParam(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	typ, eventID := r.PathValue("type"), r.PathValue("event")
	if !validEventID(eventID) {
		s.writeErr(w, r.Pattern, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "A valid room ID and event ID must be specified"))
		return
	}
	if typ != schemas.ReceiptRead && typ != schemas.ReceiptReadPrivate && typ != fullyRead {
		s.writeErr(w, r.Pattern, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam,
			"Receipt type must be %s, %s or %s", schemas.ReceiptRead, schemas.ReceiptReadPrivate, fullyRead))
		return
	}
	thread, err := decodeReceipt(r, typ)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	ctx := r.Context()
	evs, err := s.receiptEvents(ctx, dev, room, []string{eventID})
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	ev := evs[eventID]
	if thread != "" {
		in, err := s.inThread(ctx, ev, thread)
		if err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
		if !in {
			s.writeErr(w, r.Pattern, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "event_id %s is not related to thread %s", eventID, thread))
			return
		}
	}
	if typ == fullyRead {
		err = s.setFullyRead(ctx, dev, room, ev)
	} else {
		err = s.putReceipts(ctx, dev, room, []userstreams.ReceiptWrite{receiptOf(typ, ev, thread)})
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}

// postReadMarkers serves POST /rooms/{roomId}/read_markers: the read marker and the
// receipts of one room at once (never threaded).
func (s *Server) postReadMarkers(w http.ResponseWriter, r *http.Request, dev Device) {
	room, err := roomParam(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	markers, err := decodeReadMarkers(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if len(markers) == 0 {
		matrix.WriteJSON(w, http.StatusOK, struct{}{})
		return
	}
	ctx := r.Context()
	ids := make([]string, 0, len(markers))
	for _, id := range markers {
		ids = append(ids, id)
	}
	evs, err := s.receiptEvents(ctx, dev, room, ids)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	var rs []userstreams.ReceiptWrite
	for _, typ := range []string{schemas.ReceiptRead, schemas.ReceiptReadPrivate} {
		if id, ok := markers[typ]; ok {
			rs = append(rs, receiptOf(typ, evs[id], ""))
		}
	}
	if len(rs) > 0 {
		err = s.putReceipts(ctx, dev, room, rs)
	}
	if id, ok := markers[fullyRead]; ok && err == nil {
		err = s.setFullyRead(ctx, dev, room, evs[id])
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}

// receiptEvents checks that the user is joined to room and may see each of ids there,
// and returns the events by ID: 403 M_FORBIDDEN when they are not a member or may not
// see one, 404 M_NOT_FOUND for an event not in the room. (Synapse answers a receipt
// for an unknown event with 200 and stores nothing.)
func (s *Server) receiptEvents(ctx context.Context, dev Device, room string, ids []string) (map[string]*persist.StoredEvent, error) {
	found, err := s.receiptEventsOnce(ctx, dev, room, ids)
	if err != nil && (hasCode(err, matrix.CodeNotFound) || hasCode(err, matrix.CodeForbidden)) && s.missedAnything(ctx) {
		return s.receiptEventsOnce(ctx, dev, room, ids)
	}
	return found, err
}

// receiptEventsOnce is one try of receiptEvents.
func (s *Server) receiptEventsOnce(ctx context.Context, dev Device, room string, ids []string) (map[string]*persist.StoredEvent, error) {
	// The events are read beside the membership check (one wait instead of two) and
	// only shown once it passed.
	var m persist.Membership
	var bound readBound
	found := make(map[string]*persist.StoredEvent, len(ids))
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { m, bound, err = s.readBoundOf(gctx, room, dev); return err })
	for _, id := range slices.Compact(slices.Sorted(slices.Values(ids))) {
		g.Go(func() error {
			ev, err := s.DB.GetEvent(gctx, id)
			if errors.Is(err, persist.ErrNotFound) {
				return nil
			}
			mu.Lock()
			found[id] = ev
			mu.Unlock()
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if m.Membership != "join" {
		return nil, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "User %s not in room %s", dev.UserID, room)
	}
	for _, id := range ids {
		ev := found[id]
		if ev == nil || ev.RoomID != room {
			return nil, matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "Could not find event %s", id)
		}
		if !bound.allows(persist.Pos{Seq: ev.Seq, Idx: ev.Idx}) {
			return nil, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "You don't have permission to access that event.")
		}
	}
	return found, nil
}

func receiptOf(typ string, ev *persist.StoredEvent, thread string) userstreams.ReceiptWrite {
	return userstreams.ReceiptWrite{Type: typ, EventID: ev.EventID, Thread: thread, EventSeq: ev.Seq, EventIdx: ev.Idx}
}

// putReceipts writes receipts of the user in room to the receipts stream, whose writer
// ignores those that are not ahead of the current ones.
func (s *Server) putReceipts(ctx context.Context, dev Device, room string, rs []userstreams.ReceiptWrite) error {
	_, err := s.writeStream(ctx, dev, streamWrite{stream: schemas.StreamReceipts, op: userstreams.OpReceiptPut, key: room,
		body: userstreams.ReceiptPut{Receipts: rs}})
	return err
}

// setFullyRead moves the user's read marker of room to ev: the room's m.fully_read
// account data, as Synapse keeps it. Like Synapse, it never moves the marker back to
// an earlier event (a stale client would otherwise undo what another one read); a
// marker whose event is gone counts as behind.
func (s *Server) setFullyRead(ctx context.Context, dev Device, room string, ev *persist.StoredEvent) error {
	raw, err := s.accountData.Get(ctx, dev.UserID, room, fullyRead)
	switch {
	case errors.Is(err, accountdata.ErrNotFound):
	case err != nil:
		return err
	default:
		var cur struct {
			EventID string `json:"event_id"`
		}
		if json.Unmarshal(raw, &cur) == nil && cur.EventID != "" {
			old, err := s.DB.GetEvent(ctx, cur.EventID)
			if err != nil && !errors.Is(err, persist.ErrNotFound) {
				return err
			}
			if err == nil && old.RoomID == room && !(persist.Pos{Seq: old.Seq, Idx: old.Idx}).Less(persist.Pos{Seq: ev.Seq, Idx: ev.Idx}) {
				return nil
			}
		}
	}
	content, err := matrix.Marshal(map[string]string{"event_id": ev.EventID})
	if err != nil {
		return err
	}
	_, err = s.writeStream(ctx, dev, streamWrite{stream: schemas.StreamAccountData, op: userstreams.OpAccountDataPut, key: dev.UserID,
		body: userstreams.AccountDataPut{Room: room, Type: fullyRead, Content: content}})
	return err
}

// inThread reports whether ev belongs to thread ("main" or a thread root's event ID) as
// Synapse decides it for a receipt: an event is in the thread its m.thread relation
// names, or, related to another event in any other way, in that event's thread; a thread
// root is in its own thread and in the main timeline.
func (s *Server) inThread(ctx context.Context, ev *persist.StoredEvent, thread string) (bool, error) {
	for range maxRelationHops {
		if ev.EventID == thread {
			return true, nil
		}
		var e struct {
			Content struct {
				RelatesTo struct {
					RelType string `json:"rel_type"`
					EventID string `json:"event_id"`
				} `json:"m.relates_to"`
			} `json:"content"`
		}
		_ = json.Unmarshal(ev.JSON, &e)
		rel := e.Content.RelatesTo
		if rel.EventID == "" {
			break
		}
		if rel.RelType == "m.thread" {
			return rel.EventID == thread, nil
		}
		parent, err := s.DB.GetEvent(ctx, rel.EventID)
		if errors.Is(err, persist.ErrNotFound) {
			break
		}
		if err != nil {
			return false, err
		}
		ev = parent
	}
	return thread == mainThread, nil
}
