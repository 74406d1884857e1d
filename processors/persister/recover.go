package persister

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// recoverChunk is how many log messages recovery projects per transaction.
const recoverChunk = 256

// recoverUnprojected projects every batch this writer appended after its recorded
// position: those a crash left between append and projection. Until they are
// projected, sync feeds hold their visible position below them.
func (p *Persister) recoverUnprojected(ctx context.Context) error {
	positions, err := p.cfg.DB.StreamPositions(ctx, persist.EventsStream)
	if err != nil {
		return err
	}
	from := positions[p.cfg.Name] + 1
	recovered := 0
	err = streams.ReadLog(ctx, p.cfg.JS, p.cfg.Topology, from, recoverChunk,
		func(writer string) bool { return writer == p.cfg.Name },
		func(msgs []schemas.LogMessage) error {
			recovered += len(msgs)
			return p.project(ctx, p.cfg.Name, persist.BatchesOf(msgs))
		})
	if recovered > 0 {
		p.cfg.Log.Info("recovered unprojected batches", zap.Int("batches", recovered), zap.Uint64("from_seq", from))
	}
	return err
}

// catchUp projects a room's log messages that Postgres lacks (another writer appended
// them, or this one crashed before projecting) and drops the cached room, so the next
// build starts from the log's tip.
func (p *Persister) catchUp(ctx context.Context, roomID string) error {
	delete(p.rooms, roomID)
	var from uint64 = 1
	head, err := p.cfg.DB.LoadRoomHead(ctx, roomID)
	switch {
	case err == nil:
		from = head.LastSeq + 1
	case !errors.Is(err, persist.ErrNotFound):
		return err
	}
	stream, err := p.cfg.JS.Stream(ctx, p.cfg.Topology.EventsStream())
	if err != nil {
		return err
	}
	subject := p.cfg.Topology.EventSubject(roomID)
	var batches []persist.BatchAt
	for {
		m, err := stream.GetMsg(ctx, from, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return err
		}
		b, err := schemas.DecodeLogBatch(m.Data)
		if err != nil {
			return fmt.Errorf("log message %d: %w", m.Sequence, err)
		}
		batches = append(batches, persist.BatchAt{Seq: m.Sequence, Batch: b})
		from = m.Sequence + 1
	}
	if len(batches) > 0 {
		p.cfg.Log.Info("caught up room from the log", zap.String("room_id", roomID), zap.Int("batches", len(batches)))
	}
	// Projected on nobody's behalf: among the room's messages may be one of ours that
	// landed after this loop's other appends, and claiming it would move our position
	// past those before they are projected. Sync feeds find such messages in events.
	return p.project(ctx, "", batches)
}

// loadRoom returns the room from memory or Postgres; nil when it does not exist.
func (p *Persister) loadRoom(ctx context.Context, roomID string) (*room, error) {
	if r, ok := p.rooms[roomID]; ok {
		return r, nil
	}
	head, err := p.cfg.DB.LoadRoomHead(ctx, roomID)
	if errors.Is(err, persist.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ver, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(head.RoomVersion))
	if err != nil {
		return nil, err
	}
	evs, err := p.cfg.DB.CurrentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	r := &room{id: roomID, version: ver, lastSeq: head.LastSeq, lastEventID: head.LastEventID, depth: head.Depth, state: authState{}}
	for _, e := range evs {
		pdu, err := ver.NewEventFromTrustedJSONWithEventID(e.EventID, e.JSON, e.RedactedBy != "")
		if err != nil {
			return nil, fmt.Errorf("state event %s: %w", e.EventID, err)
		}
		r.state[gomatrixserverlib.StateKeyTuple{EventType: pdu.Type(), StateKey: *pdu.StateKey()}] = pdu
	}
	p.remember(r)
	return r, nil
}

// remember keeps a room in memory, first making room under MaxRooms: it evicts a tenth
// of them, whichever the map yields first, since a reload costs two queries and
// tracking recency would cost on every intent.
func (p *Persister) remember(r *room) {
	if len(p.rooms) >= p.cfg.MaxRooms {
		n := max(p.cfg.MaxRooms/10, 1)
		for id := range p.rooms {
			if n--; n < 0 {
				break
			}
			delete(p.rooms, id)
		}
	}
	p.rooms[r.id] = r
}

// emitReplication hands Synapse-format rows of appended events to the Redis emitter.
// Every event of one log message shares the message's sequence as its token.
func (p *Persister) emitReplication(done []persist.BatchAt) {
	if p.cfg.Replication == nil {
		return
	}
	for _, b := range done {
		rows := make([]schemas.EventRow, 0, len(b.PDUs))
		for i, pdu := range b.PDUs {
			row := schemas.EventRow{EventID: b.Batch.Events[i].EventID, RoomID: b.Batch.RoomID, Type: pdu.Type(), StateKey: pdu.StateKey()}
			if r := persist.RedactsOf(pdu); r != "" {
				row.Redacts = &r
			}
			if m, err := pdu.Membership(); err == nil && pdu.Type() == "m.room.member" {
				row.Membership = &m
			}
			if rel := relatesTo(pdu.Content()); rel != "" {
				row.RelatesTo = &rel
			}
			rows = append(rows, row)
		}
		p.cfg.Replication.Events(int64(b.Seq), rows)
	}
}

// relatesTo returns content.m.relates_to.event_id, Synapse's relates_to column.
func relatesTo(content []byte) string {
	var c struct {
		RelatesTo struct {
			EventID string `json:"event_id"`
		} `json:"m.relates_to"`
	}
	_ = json.Unmarshal(content, &c)
	return c.RelatesTo.EventID
}

// announcePositions tells Synapse-compatible receivers, once a second, that this writer
// has nothing in flight below the log's last sequence. Receivers compute a minimum over
// writers; an idle writer that stayed silent would pin it (Synapse issue #15595).
func (p *Persister) announcePositions(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			p.announcePosition(ctx)
		}
	}
}

// announcePosition announces the log's last sequence as this writer's position. The
// loop's lock is held while reading it, so no append of ours is in flight below it and
// every row of ours up to it was already handed to the emitter.
func (p *Persister) announcePosition(ctx context.Context) {
	p.busy.Lock()
	defer p.busy.Unlock()
	stream, err := p.cfg.JS.Stream(ctx, p.cfg.Topology.EventsStream())
	var info *jetstream.StreamInfo
	if err == nil {
		info, err = stream.Info(ctx)
	}
	if err != nil {
		if ctx.Err() == nil {
			p.cfg.Log.Warn("replication position not announced", zap.Error(err))
		}
		return
	}
	p.cfg.Replication.Position(schemas.StreamEvents, int64(info.State.LastSeq))
}
