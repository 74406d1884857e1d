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
// projected, sync feeds hold their visible position below them. Other writers'
// messages are passed over by their headers. Once done, every message of ours up to the
// log's end is projected, so the position moves there: an idle writer does not read the
// same stretch of the log again at its next start.
func (p *Persister) recoverUnprojected(ctx context.Context) error {
	last, err := p.projectFromLog(ctx)
	if err != nil {
		return err
	}
	return p.advanceIdle(ctx, last)
}

// projectFromLog projects, waiting for each commit, this writer's log messages after
// the position Postgres holds for it, and returns the log's last sequence read: at
// start, and when Postgres lost commits of projections behind answers.
func (p *Persister) projectFromLog(ctx context.Context) (uint64, error) {
	dctx, cancel := p.dbCtx(ctx)
	positions, err := p.cfg.DB.StreamPositions(dctx, persist.EventsStream)
	cancel()
	if err != nil {
		return 0, err
	}
	p.projected = positions[p.cfg.Name]
	from := p.projected + 1
	recovered := 0
	last, err := streams.ReadLog(ctx, p.cfg.JS, p.cfg.Topology,
		streams.LogRange{From: from, Writer: p.cfg.Name, Chunk: recoverChunk},
		func(msgs []schemas.LogMessage) error {
			recovered += len(msgs)
			return p.project(ctx, p.cfg.Name, persist.BatchesOf(msgs), false)
		})
	if err != nil {
		return 0, err
	}
	if recovered > 0 {
		p.cfg.Log.Info("projected unprojected batches from the log", zap.Int("batches", recovered), zap.Uint64("from_seq", from))
	}
	return last, nil
}

// advanceIdle records that every message of ours up to seq is projected. Only true
// while nothing of ours is in flight or unresolved: at start, or with the loop paused.
func (p *Persister) advanceIdle(ctx context.Context, seq uint64) error {
	if seq == 0 || len(p.unresolved) > 0 {
		return nil
	}
	dctx, cancel := p.dbCtx(ctx)
	defer cancel()
	return p.cfg.DB.AdvanceStreamPosition(dctx, persist.EventsStream, p.cfg.Name, seq)
}

// catchUp projects a room's log messages that Postgres lacks (another writer appended
// them, or this one crashed before projecting, or an append's outcome was unknown) and
// drops the cached room, so the next build starts from the log's tip.
func (p *Persister) catchUp(ctx context.Context, roomID string) error {
	p.flushProjections(ctx)
	delete(p.rooms, roomID)
	if p.cfg.faults.catchUp != nil {
		if err := p.cfg.faults.catchUp(roomID); err != nil {
			return err
		}
	}
	var from uint64 = 1
	dctx, cancel := p.dbCtx(ctx)
	head, err := p.cfg.DB.LoadRoomHead(dctx, roomID)
	cancel()
	switch {
	case err == nil:
		from = head.LastSeq + 1
	case !errors.Is(err, persist.ErrNotFound):
		return err
	}
	caught := 0
	_, err = streams.ReadLog(ctx, p.cfg.JS, p.cfg.Topology,
		streams.LogRange{From: from, Room: roomID, Chunk: recoverChunk},
		func(msgs []schemas.LogMessage) error {
			caught += len(msgs)
			// Projected on nobody's behalf: among the room's messages may be one of ours
			// that landed after this loop's other appends, and claiming it would move our
			// position past those before they are projected. Sync feeds find such
			// messages in events.
			return p.project(ctx, "", persist.BatchesOf(msgs), false)
		})
	if caught > 0 {
		p.cfg.Log.Info("caught up room from the log", zap.String("room_id", roomID), zap.Int("batches", caught))
	}
	return err
}

// loadRoom returns the room from memory or Postgres; nil when it does not exist.
func (p *Persister) loadRoom(ctx context.Context, roomID string) (*room, error) {
	if r, ok := p.rooms[roomID]; ok {
		return r, nil
	}
	// Postgres holds the room once the projections in flight are done.
	p.flushProjections(ctx)
	dctx, cancel := p.dbCtx(ctx)
	defer cancel()
	head, err := p.cfg.DB.LoadRoomHead(dctx, roomID)
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
	evs, err := p.cfg.DB.CurrentState(dctx, roomID)
	if err != nil {
		return nil, err
	}
	r := &room{id: roomID, version: ver, lastSeq: head.LastSeq, lastEventID: head.LastEventID, depth: head.Depth, state: authState{},
		seenAll: p.seen.covers(head.LastSeq)}
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

// idleRecordEvery is how many position ticks pass between records of an idle writer's
// position in Postgres.
const idleRecordEvery = 10

// announcePositions runs once a second, with the loop paused, what needs the log's
// last sequence: it tells Synapse-compatible receivers that this writer has nothing in
// flight below it (receivers compute a minimum over writers, and an idle writer that
// stayed silent would pin it: Synapse issue #15595), and every idleRecordEvery ticks
// records it as this writer's position in Postgres, which bounds the next start's
// recovery.
func (p *Persister) announcePositions(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			p.announcePosition(ctx, n%idleRecordEvery == 0)
		}
	}
}

// announceFlushWait bounds how long an announcement holds the loop waiting for the
// projections in flight: a loop's projection takes milliseconds.
const announceFlushWait = 100 * time.Millisecond

// announcePosition reads the log's last sequence with the loop's lock held, so no
// append of ours is in flight below it and every row of ours up to it was handed to the
// emitter, then announces it (with Redis) and, when record is set, records it.
func (p *Persister) announcePosition(ctx context.Context, record bool) {
	p.busy.Lock()
	defer p.busy.Unlock()
	// Sends need no Postgres: projections held up by an outage must not hold the loop
	// for long. The next tick tries again.
	fctx, cancel := context.WithTimeout(ctx, announceFlushWait)
	err := p.flushProjections(fctx)
	cancel()
	if err != nil {
		return
	}
	if err := p.verifyProjected(ctx); err != nil && ctx.Err() == nil {
		p.cfg.Log.Warn("projection check failed", zap.Error(err))
	}
	stream, err := p.cfg.JS.Stream(ctx, p.cfg.Topology.EventsStream())
	var info *jetstream.StreamInfo
	if err == nil {
		info, err = stream.Info(ctx)
	}
	if err == nil && record {
		err = p.advanceIdle(ctx, info.State.LastSeq)
	}
	if err != nil {
		if ctx.Err() == nil {
			p.cfg.Log.Warn("writer position not announced", zap.Error(err))
		}
		return
	}
	if p.cfg.Replication != nil {
		p.cfg.Replication.Position(schemas.StreamEvents, int64(info.State.LastSeq))
	}
}

// verifyProjected checks, with nothing in flight, that Postgres still holds what this
// writer projected, and projects from the log what a loss of commits took: an idle
// writer would otherwise find the loss only at its next projection.
func (p *Persister) verifyProjected(ctx context.Context) error {
	dctx, cancel := p.dbCtx(ctx)
	positions, err := p.cfg.DB.StreamPositions(dctx, persist.EventsStream)
	cancel()
	if err != nil || positions[p.cfg.Name] >= p.projected {
		return err
	}
	p.cfg.Log.Warn("Postgres lost projected events; projecting them again from the log",
		zap.Uint64("stored", positions[p.cfg.Name]), zap.Uint64("projected", p.projected))
	_, err = p.projectFromLog(ctx)
	return err
}
