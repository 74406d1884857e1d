package persist

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/gjson"

	"github.com/ganglionhq/ganglion/schemas"
)

// EventsStream is the stream_positions name of the events log.
const EventsStream = "events"

// BatchAt is one EVENTS log message and its stream sequence. PDUs, when set, are the
// batch's events already parsed (by the writer that built them), one per event.
type BatchAt struct {
	Seq   uint64
	Batch *schemas.LogBatch
	PDUs  []gomatrixserverlib.PDU
}

// BatchesOf turns log messages into batches to project.
func BatchesOf(msgs []schemas.LogMessage) []BatchAt {
	out := make([]BatchAt, len(msgs))
	for i, m := range msgs {
		out[i] = BatchAt{Seq: m.Seq, Batch: m.Batch}
	}
	return out
}

// parsedEvent holds what the projections need from one event's JSON.
type parsedEvent struct {
	schemas.LoggedEvent
	roomID, typ, sender, membership, redacts string
	// relatesTo and relType are the event's m.relates_to, when it has both.
	relatesTo, relType string
	// searchKey and searchText are what full-text search indexes of the event (its
	// body, name or topic), when it has any.
	searchKey, searchText string
	stateKey              *string
	depth, ts             int64
	seq                   uint64
	idx                   int
}

func parseBatch(b BatchAt) ([]parsedEvent, error) {
	out := make([]parsedEvent, 0, len(b.Batch.Events))
	for i, le := range b.Batch.Events {
		p := parsedEvent{LoggedEvent: le, roomID: b.Batch.RoomID, seq: b.Seq, idx: i}
		if len(b.PDUs) == len(b.Batch.Events) {
			pdu := b.PDUs[i]
			p.typ, p.sender, p.stateKey = pdu.Type(), string(pdu.SenderID()), pdu.StateKey()
			p.depth, p.ts, p.redacts = pdu.Depth(), int64(pdu.OriginServerTS()), RedactsOf(pdu)
			if p.typ == "m.room.member" {
				p.membership, _ = pdu.Membership()
			}
		} else if err := p.decode(); err != nil {
			return nil, fmt.Errorf("event %s at seq %d: %w", le.EventID, b.Seq, err)
		}
		p.relatesTo, p.relType = RelationOf(le.JSON)
		p.searchKey, p.searchText = SearchableOf(p.typ, le.JSON)
		out = append(out, p)
	}
	return out, nil
}

// decode fills in p's fields from its JSON. The events are this server's own, read
// from its log and checked when they were built, so the fields are read without the
// protocol library's parse, which cost replay half of its time; content keys whose
// meaning depends on the event type are read only for that type.
func (p *parsedEvent) decode() error {
	var f struct {
		Type     string          `json:"type"`
		StateKey *string         `json:"state_key"`
		Sender   string          `json:"sender"`
		Depth    int64           `json:"depth"`
		TS       int64           `json:"origin_server_ts"`
		Redacts  json.RawMessage `json:"redacts"`
		Content  struct {
			Membership json.RawMessage `json:"membership"`
			Redacts    json.RawMessage `json:"redacts"`
		} `json:"content"`
	}
	if err := json.Unmarshal(p.JSON, &f); err != nil {
		return err
	}
	p.typ, p.stateKey, p.sender, p.depth, p.ts = f.Type, f.StateKey, f.Sender, f.Depth, f.TS
	switch f.Type {
	case "m.room.member":
		_ = json.Unmarshal(f.Content.Membership, &p.membership)
	case "m.room.redaction":
		// Top-level before room version 11, inside content from 11 (as RedactsOf).
		if json.Unmarshal(f.Redacts, &p.redacts) != nil || p.redacts == "" {
			p.redacts = ""
			_ = json.Unmarshal(f.Content.Redacts, &p.redacts)
		}
	}
	return nil
}

// relationRows are the event_relations rows of a projection, as columns.
type relationRows struct {
	ids, targets, relTypes, rooms, types, senders []string
	seqs                                          []int64
	idxs                                          []int32
}

func (r *relationRows) add(e parsedEvent) {
	if e.relatesTo == "" {
		return
	}
	r.ids, r.targets, r.relTypes = append(r.ids, e.EventID), append(r.targets, e.relatesTo), append(r.relTypes, e.relType)
	r.rooms, r.types, r.senders = append(r.rooms, e.roomID), append(r.types, e.typ), append(r.senders, e.sender)
	r.seqs, r.idxs = append(r.seqs, int64(e.seq)), append(r.idxs, int32(e.idx))
}

// queue inserts the rows; a redacted event has no relation, so projected again (a
// replay) it stays out.
func (r *relationRows) queue(b *pgx.Batch) {
	if len(r.ids) == 0 {
		return
	}
	b.Queue(`INSERT INTO event_relations (event_id, relates_to, rel_type, room_id, type, sender, seq, idx)
		SELECT u.* FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::int[])
			AS u(event_id, relates_to, rel_type, room_id, type, sender, seq, idx)
		WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = u.event_id AND e.redacted_by IS NOT NULL)
		ON CONFLICT DO NOTHING`, r.ids, r.targets, r.relTypes, r.rooms, r.types, r.senders, r.seqs, r.idxs)
}

// searchRows are the event_search rows of a projection, as columns.
type searchRows struct {
	ids, rooms, keys, texts []string
	seqs                    []int64
	idxs                    []int32
}

func (r *searchRows) add(e parsedEvent) {
	if e.searchKey == "" {
		return
	}
	r.ids, r.rooms, r.keys, r.texts = append(r.ids, e.EventID), append(r.rooms, e.roomID), append(r.keys, e.searchKey), append(r.texts, e.searchText)
	r.seqs, r.idxs = append(r.seqs, int64(e.seq)), append(r.idxs, int32(e.idx))
}

// queue inserts the rows, leaving out redacted events as relationRows.queue does.
func (r *searchRows) queue(b *pgx.Batch) {
	if len(r.ids) == 0 {
		return
	}
	b.Queue(`INSERT INTO event_search (event_id, room_id, key, vector, seq, idx)
		SELECT u.event_id, u.room_id, u.key, to_tsvector('english', u.text), u.seq, u.idx
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::int[])
			AS u(event_id, room_id, key, text, seq, idx)
		WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = u.event_id AND e.redacted_by IS NOT NULL)
		ON CONFLICT DO NOTHING`, r.ids, r.rooms, r.keys, r.texts, r.seqs, r.idxs)
}

// searchKeys are the content keys full-text search indexes, by event type.
var searchKeys = map[string]string{"m.room.message": "content.body", "m.room.name": "content.name", "m.room.topic": "content.topic"}

// SearchableOf returns the key and text of an event that full-text search indexes, or ""
// (the text must be a non-empty string).
func SearchableOf(typ string, js []byte) (key, text string) {
	key, ok := searchKeys[typ]
	if !ok {
		return "", ""
	}
	v := gjson.GetBytes(js, key)
	if v.Type != gjson.String || v.Str == "" {
		return "", ""
	}
	return key, v.Str
}

// RelationOf returns the event and relation type of an event's m.relates_to, or "" when
// it has no relation with both (a reply's m.in_reply_to alone is none).
func RelationOf(js []byte) (target, relType string) {
	if !bytes.Contains(js, []byte(`"m.relates_to"`)) {
		return "", ""
	}
	rel := gjson.GetBytes(js, `content.m\.relates_to`)
	t, rt := rel.Get("event_id"), rel.Get("rel_type")
	if t.Type != gjson.String || rt.Type != gjson.String || t.Str == "" || rt.Str == "" {
		return "", ""
	}
	return t.Str, rt.Str
}

// RedactsOf returns the target of a redaction in any room version: top-level before
// v11, inside content from v11 (the protocol library reads only the top level).
func RedactsOf(pdu gomatrixserverlib.PDU) string {
	if pdu.Type() != "m.room.redaction" {
		return ""
	}
	if r := pdu.Redacts(); r != "" {
		return r
	}
	var c struct {
		Redacts string `json:"redacts"`
	}
	_ = json.Unmarshal(pdu.Content(), &c)
	return c.Redacts
}

// queuePurge deletes what the events log's projections hold of a purged room, and the
// receipts and room account data of it (whose streams' projections leave out the rooms
// of purged_rooms from then on, replays included); the records of its aliases and
// listing are deleted through the accounts stream before the purge.
func queuePurge(t target, b BatchAt) {
	room := b.Batch.RoomID
	t.searchBatch().Queue(`DELETE FROM event_search WHERE room_id = $1`, room)
	for _, table := range []string{"events", "current_state", "event_relations", "intent_results",
		"receipts", "account_data", "event_push_actions", "notification_counts", "rooms"} {
		t.batch.Queue(`DELETE FROM `+table+` WHERE room_id = $1`, room)
	}
	t.batch.Queue(`INSERT INTO purged_rooms (room_id, seq) VALUES ($1, $2) ON CONFLICT DO NOTHING`, room, int64(b.Seq))
}

// target is where a projection's statements go.
type target struct {
	batch *pgx.Batch
	// search, when set, takes the statements of event_search, which a replay runs on
	// a connection of their own behind the rest (to_tsvector is the projection's
	// costliest part); batch takes them otherwise.
	search *pgx.Batch
	// copied, when set, takes the rows of events and intent_results to copy.
	copied *copyRows
}

func (t target) searchBatch() *pgx.Batch {
	if t.search != nil {
		return t.search
	}
	return t.batch
}

// Project writes the projections of log batches appended by writer in one transaction,
// together with the writer's new position. It is idempotent: replaying a batch that is
// already projected changes nothing, so recovery can simply replay the log.
func (db *DB) Project(ctx context.Context, writer string, batches []BatchAt) error {
	batch := &pgx.Batch{}
	maxSeq, err := projection(target{batch: batch}, writer, batches)
	if err != nil || batch.Len() == 0 {
		return err
	}
	if maxSeq > 0 {
		batch.Queue(advancePosition, EventsStream, writer, int64(maxSeq))
	}
	// A batch is one pipeline ending in one Sync, which Postgres runs as one implicit
	// transaction: all statements commit together or none does, in one round trip.
	return db.Pool.SendBatch(ctx, batch).Close()
}

// Prepared is a projection of batches on nobody's behalf, built ahead of sending it:
// replay builds the next one while Postgres runs the last, and projects the search
// rows of each (ProjectSearch) once the rest is in, on another connection.
type Prepared struct {
	batches []BatchAt
	batch   *pgx.Batch
	search  *pgx.Batch
	// copied holds the rows of events and intent_results to copy, when the batch
	// leaves them out.
	copied *copyRows
}

// copyRows are rows for COPY, in the columns of eventsCopy and intentsCopy.
type copyRows struct{ events, intents [][]any }

var (
	eventsCopy = []string{"event_id", "room_id", "seq", "idx", "type", "state_key", "sender", "membership",
		"depth", "origin_server_ts", "json", "device_id", "txn_id"}
	intentsCopy = []string{"intent_id", "room_id", "seq", "event_ids"}
)

func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Prepare builds the projection of batches without a writer's position. With copy,
// the events and the intents' results are copied (COPY) instead of inserted, which
// costs Postgres half as much, for a database that holds none of them yet.
func Prepare(batches []BatchAt, copy bool) (Prepared, error) {
	p := Prepared{batches: batches, batch: &pgx.Batch{}, search: &pgx.Batch{}}
	if copy {
		p.copied = &copyRows{}
	}
	_, err := projection(target{batch: p.batch, search: p.search, copied: p.copied}, "", batches)
	return p, err
}

// A prepared projection's transactions do not wait for their WAL flush: a replay
// records the writers' positions only at its end, with a commit that waits for the
// flush of everything before it, and a crash before that leaves a replay to run again.
const asynchronousCommit = `SET LOCAL synchronous_commit = off`

// ProjectPrepared writes a prepared projection but its search rows in one
// transaction, as Project does. A copy that meets an event already stored is undone
// and the projection inserted instead, idempotent as always; inserted says so, and the
// caller should stop copying.
func (db *DB) ProjectPrepared(ctx context.Context, p Prepared) (inserted bool, err error) {
	if p.copied == nil {
		return false, db.sendAsynchronous(ctx, p.batch)
	}
	err = pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, asynchronousCommit); err != nil {
			return err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"events"}, eventsCopy, pgx.CopyFromRows(p.copied.events)); err != nil {
			return err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"intent_results"}, intentsCopy, pgx.CopyFromRows(p.copied.intents)); err != nil {
			return err
		}
		return tx.SendBatch(ctx, p.batch).Close()
	})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" { // unique_violation
		return false, err
	}
	again, err := Prepare(p.batches, false)
	if err != nil {
		return true, err
	}
	_, err = db.ProjectPrepared(ctx, again)
	return true, err
}

// ProjectSearch writes a prepared projection's search rows, and takes out those of
// the events it redacts or the rooms it purges. Each must follow its projection's
// ProjectPrepared, in the log's order, as the search rows of a redaction's target go
// in before the redaction takes them out, and only unredacted events get rows.
func (db *DB) ProjectSearch(ctx context.Context, p Prepared) error {
	if p.search.Len() == 0 {
		return nil
	}
	return db.sendAsynchronous(ctx, p.search)
}

// sendAsynchronous runs b in one transaction that does not wait for its WAL flush.
func (db *DB) sendAsynchronous(ctx context.Context, b *pgx.Batch) error {
	run := &pgx.Batch{QueuedQueries: append([]*pgx.QueuedQuery{{SQL: asynchronousCommit}}, b.QueuedQueries...)}
	return db.Pool.SendBatch(ctx, run).Close()
}

// NoEvents reports whether the database holds no event yet.
func (db *DB) NoEvents(ctx context.Context) (bool, error) {
	var none bool
	err := db.Pool.QueryRow(ctx, `SELECT NOT EXISTS (SELECT 1 FROM events)`).Scan(&none)
	return none, err
}

// ErrLostCommits says that Postgres holds an older position of a writer than one the
// writer committed: commits made without waiting for their WAL flush were lost in a
// crash of Postgres (or a failover to a replica that lagged). The log has them.
var ErrLostCommits = errors.New("persist: the stored position is behind a committed projection: Postgres lost commits")

// ProjectBehind is Project for a writer that answered its clients at the log append:
// the transaction does not wait for its WAL flush, and the writer's position moves
// only if the stored one is not below projected, the position of its last projection
// that committed; if it is, the batches are stored (replaying them later changes
// nothing), the position stays, and the error is ErrLostCommits. One round trip.
func (db *DB) ProjectBehind(ctx context.Context, writer string, batches []BatchAt, projected uint64) error {
	batch := &pgx.Batch{}
	// SET LOCAL holds for the pipeline's implicit transaction.
	batch.Queue(asynchronousCommit)
	maxSeq, err := projection(target{batch: batch}, writer, batches)
	if err != nil {
		return err
	}
	moved := true
	if maxSeq > 0 {
		QueueAdvanceUnlessLost(batch, EventsStream, writer, maxSeq, projected, &moved)
	} else if batch.Len() == 1 {
		return nil
	}
	if err := db.Pool.SendBatch(ctx, batch).Close(); err != nil {
		return err
	}
	if !moved {
		return fmt.Errorf("%w (projected up to %d)", ErrLostCommits, projected)
	}
	return nil
}

// QueueAdvanceUnlessLost queues on b the move of writer's position in stream to pos,
// made only if the stored position is not below projected, the position of the
// writer's last projection that committed; *moved says, once b's results are read,
// whether it moved. A position that did not move means Postgres lost commits made
// without waiting for their WAL flush (ErrLostCommits): the rows of b are stored
// (projecting them again changes nothing), and the writer projects the lost ones
// again from the log.
func QueueAdvanceUnlessLost(b *pgx.Batch, stream, writer string, pos, projected uint64, moved *bool) {
	b.Queue(`WITH moved AS (
			INSERT INTO stream_positions (stream_name, instance_name, stream_id) VALUES ($1, $2, $3)
			ON CONFLICT (stream_name, instance_name) DO UPDATE
			SET stream_id = GREATEST(stream_positions.stream_id, excluded.stream_id)
			WHERE stream_positions.stream_id >= $4
			RETURNING 1)
		SELECT count(*) > 0 FROM moved`, stream, writer, int64(pos), int64(projected)).QueryRow(func(r pgx.Row) error {
		return r.Scan(moved)
	})
}

// projection queues on batch the statements that project batches, without the
// writer's position, and returns the writer's highest own sequence among them.
func projection(t target, writer string, batches []BatchAt) (uint64, error) {
	if len(batches) == 0 {
		return 0, nil
	}
	// A purged room's rows go after what came before its purge is written.
	for i, b := range batches {
		if !b.Batch.Purged {
			continue
		}
		before, err := projection(t, writer, batches[:i])
		if err != nil {
			return 0, err
		}
		queuePurge(t, b)
		after, err := projection(t, writer, batches[i+1:])
		if b.Batch.Writer != writer {
			return max(before, after), err
		}
		return max(before, after, b.Seq), err
	}
	var evs []parsedEvent
	for _, b := range batches {
		p, err := parseBatch(b)
		if err != nil {
			return 0, err
		}
		evs = append(evs, p...)
	}
	var (
		ids, rooms, types, senders, jsons, devices, txns, members []string
		stateKeys                                                 []*string
		seqs, depths, tss                                         []int64
		idxs                                                      []int32
		redTargets, redBy                                         []string
		rels                                                      relationRows
		searches                                                  searchRows
	)
	type stateKey struct{ room, typ, key string }
	state := map[stateKey]parsedEvent{}
	type roomHead struct {
		version, creator, lastEvent string
		seq                         uint64
		depth                       int64
	}
	heads := map[string]*roomHead{}
	intents := map[string][]string{}
	intentRoom := map[string]parsedEvent{}
	// The writer's position covers only its own batches: projecting another writer's
	// messages (catching up a room) says nothing about this writer's own.
	maxSeq := OwnMaxSeq(writer, batches)
	for _, e := range evs {
		ids = append(ids, e.EventID)
		rooms = append(rooms, e.roomID)
		seqs = append(seqs, int64(e.seq))
		idxs = append(idxs, int32(e.idx))
		types = append(types, e.typ)
		stateKeys = append(stateKeys, e.stateKey)
		senders = append(senders, e.sender)
		members = append(members, e.membership)
		depths = append(depths, e.depth)
		tss = append(tss, e.ts)
		jsons = append(jsons, string(e.JSON))
		devices = append(devices, e.DeviceID)
		txns = append(txns, e.TxnID)
		if e.stateKey != nil {
			state[stateKey{e.roomID, e.typ, *e.stateKey}] = e
		}
		if e.redacts != "" {
			redTargets = append(redTargets, e.redacts)
			redBy = append(redBy, e.EventID)
		}
		rels.add(e)
		searches.add(e)
		h := heads[e.roomID]
		if h == nil {
			h = &roomHead{}
			heads[e.roomID] = h
		}
		if e.typ == "m.room.create" && e.stateKey != nil && *e.stateKey == "" {
			h.creator = e.sender
		}
		h.lastEvent, h.seq, h.depth = e.EventID, e.seq, e.depth
		// An intent's events are one batch; a batch the log holds twice counts once,
		// the first, as inserting it again does.
		if first, ok := intentRoom[e.IntentID]; e.IntentID != "" && (!ok || first.seq == e.seq) {
			intents[e.IntentID] = append(intents[e.IntentID], e.EventID)
			if !ok {
				intentRoom[e.IntentID] = e
			}
		}
	}
	for _, b := range batches {
		heads[b.Batch.RoomID].version = b.Batch.RoomVersion
	}

	if t.copied != nil {
		for i := range ids {
			t.copied.events = append(t.copied.events, []any{ids[i], rooms[i], seqs[i], idxs[i], types[i], stateKeys[i],
				senders[i], nullIfEmpty(members[i]), depths[i], tss[i], jsons[i], nullIfEmpty(devices[i]), nullIfEmpty(txns[i])})
		}
	} else {
		t.batch.Queue(`INSERT INTO events (event_id, room_id, seq, idx, type, state_key, sender, membership,
			depth, origin_server_ts, json, device_id, txn_id)
		SELECT u.id, u.room, u.seq, u.idx, u.type, u.sk, u.sender, NULLIF(u.mem, ''), u.depth, u.ts, u.json,
			NULLIF(u.dev, ''), NULLIF(u.txn, '')
		FROM unnest($1::text[], $2::text[], $3::bigint[], $4::int[], $5::text[], $6::text[], $7::text[],
			$8::text[], $9::bigint[], $10::bigint[], $11::text[], $12::text[], $13::text[])
			AS u(id, room, seq, idx, type, sk, sender, mem, depth, ts, json, dev, txn)
		ON CONFLICT (event_id) DO NOTHING`,
			ids, rooms, seqs, idxs, types, stateKeys, senders, members, depths, tss, jsons, devices, txns)
	}

	if len(state) > 0 {
		var sRooms, sTypes, sKeys, sIDs, sMem []string
		var sSeqs []int64
		var sIdxs []int32
		for k, e := range state {
			sRooms, sTypes, sKeys = append(sRooms, k.room), append(sTypes, k.typ), append(sKeys, k.key)
			sIDs, sMem = append(sIDs, e.EventID), append(sMem, e.membership)
			sSeqs, sIdxs = append(sSeqs, int64(e.seq)), append(sIdxs, int32(e.idx))
		}
		t.batch.Queue(`INSERT INTO current_state (room_id, type, state_key, event_id, seq, idx, membership)
			SELECT u.room, u.type, u.sk, u.id, u.seq, u.idx, NULLIF(u.mem, '')
			FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::int[], $7::text[])
				AS u(room, type, sk, id, seq, idx, mem)
			ON CONFLICT (room_id, type, state_key) DO UPDATE
			SET event_id = excluded.event_id, seq = excluded.seq, idx = excluded.idx, membership = excluded.membership
			WHERE (current_state.seq, current_state.idx) < (excluded.seq, excluded.idx)`,
			sRooms, sTypes, sKeys, sIDs, sSeqs, sIdxs, sMem)
	}

	var hRooms, hVersions, hCreators, hLast []string
	var hSeqs, hDepths []int64
	for room, h := range heads {
		hRooms, hVersions, hCreators = append(hRooms, room), append(hVersions, h.version), append(hCreators, h.creator)
		hLast, hSeqs, hDepths = append(hLast, h.lastEvent), append(hSeqs, int64(h.seq)), append(hDepths, h.depth)
	}
	t.batch.Queue(`INSERT INTO rooms (room_id, room_version, creator, last_seq, last_event_id, depth)
		SELECT u.room, u.ver, u.creator, u.seq, u.last, u.depth
		FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[])
			AS u(room, ver, creator, seq, last, depth)
		ON CONFLICT (room_id) DO UPDATE
		SET last_seq = excluded.last_seq, last_event_id = excluded.last_event_id, depth = excluded.depth
		WHERE rooms.last_seq < excluded.last_seq`,
		hRooms, hVersions, hCreators, hSeqs, hLast, hDepths)

	rels.queue(t.batch)
	searches.queue(t.searchBatch())
	if len(redTargets) > 0 {
		// A redacted event is no longer searched, nor related to anything.
		const unindex = `DELETE FROM %s x USING unnest($1::text[], $2::text[]) AS u(target, by)
			JOIN events r ON r.event_id = u.by WHERE x.event_id = u.target AND x.room_id = r.room_id`
		t.searchBatch().Queue(fmt.Sprintf(unindex, "event_search"), redTargets, redBy)
		t.batch.Queue(fmt.Sprintf(unindex, "event_relations"), redTargets, redBy)
		t.batch.Queue(`UPDATE events e SET redacted_by = u.by
			FROM unnest($1::text[], $2::text[]) AS u(target, by)
			JOIN events r ON r.event_id = u.by
			WHERE e.event_id = u.target AND e.room_id = r.room_id AND e.redacted_by IS NULL`,
			redTargets, redBy)
	}

	if t.copied != nil {
		for id, evIDs := range intents {
			e := intentRoom[id]
			t.copied.intents = append(t.copied.intents, []any{id, e.roomID, int64(e.seq), evIDs})
		}
	} else if len(intents) > 0 {
		var iIDs, iRooms, iEvents []string
		var iSeqs []int64
		for id, evIDs := range intents {
			e := intentRoom[id]
			raw, _ := json.Marshal(evIDs)
			iIDs, iRooms, iEvents = append(iIDs, id), append(iRooms, e.roomID), append(iEvents, string(raw))
			iSeqs = append(iSeqs, int64(e.seq))
		}
		t.batch.Queue(`INSERT INTO intent_results (intent_id, room_id, seq, event_ids)
			SELECT u.id, u.room, u.seq, ARRAY(SELECT json_array_elements_text(u.evs::json))
			FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) AS u(id, room, seq, evs)
			ON CONFLICT (intent_id) DO NOTHING`, iIDs, iRooms, iSeqs, iEvents)
	}

	return maxSeq, nil
}

// advancePosition moves a writer's position forward, never back.
const advancePosition = `INSERT INTO stream_positions (stream_name, instance_name, stream_id) VALUES ($1, $2, $3)
	ON CONFLICT (stream_name, instance_name) DO UPDATE
	SET stream_id = GREATEST(stream_positions.stream_id, excluded.stream_id)`

// AdvanceStreamPosition records that writer's projection of stream reached pos.
func (db *DB) AdvanceStreamPosition(ctx context.Context, stream, writer string, pos uint64) error {
	_, err := db.Pool.Exec(ctx, advancePosition, stream, writer, int64(pos))
	return err
}

// OwnMaxSeq is the highest sequence among the batches appended by writer, or 0.
func OwnMaxSeq(writer string, batches []BatchAt) uint64 {
	var seq uint64
	for _, b := range batches {
		if b.Batch.Writer == writer {
			seq = max(seq, b.Seq)
		}
	}
	return seq
}

// RoomHead is what a writer needs to append the next event of a room.
type RoomHead struct {
	RoomVersion string
	Creator     string
	LastSeq     uint64
	LastEventID string
	Depth       int64
}

// LoadRoomHead returns the projected head of a room, or ErrNotFound.
func (db *DB) LoadRoomHead(ctx context.Context, roomID string) (*RoomHead, error) {
	var h RoomHead
	var seq int64
	err := db.Pool.QueryRow(ctx, `SELECT room_version, creator, last_seq, last_event_id, depth
		FROM rooms WHERE room_id = $1`, roomID).Scan(&h.RoomVersion, &h.Creator, &seq, &h.LastEventID, &h.Depth)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	h.LastSeq = uint64(seq)
	return &h, err
}

// CurrentState returns every event of a room's current state.
func (db *DB) CurrentState(ctx context.Context, roomID string) ([]StoredEvent, error) {
	return db.queryEvents(ctx, `WHERE e.event_id IN (SELECT event_id FROM current_state WHERE room_id = $1)
		ORDER BY e.seq, e.idx`, roomID)
}

// IntentResult is the stored answer to an intent.
type IntentResult struct {
	RoomID   string
	Seq      uint64
	EventIDs []string
}

// IntentResults returns the stored answers for those of ids that were already handled.
func (db *DB) IntentResults(ctx context.Context, ids []string) (map[string]IntentResult, error) {
	rows, err := db.Pool.Query(ctx, `SELECT intent_id, room_id, seq, event_ids FROM intent_results
		WHERE intent_id = ANY($1)`, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]IntentResult{}
	for rows.Next() {
		var id string
		var r IntentResult
		var seq int64
		if err := rows.Scan(&id, &r.RoomID, &seq, &r.EventIDs); err != nil {
			return nil, err
		}
		r.Seq = uint64(seq)
		out[id] = r
	}
	return out, rows.Err()
}

// EstimatedIntentResults is Postgres's estimate of the intent results stored (0 for a
// table never analysed), for sizing what holds their ids.
func (db *DB) EstimatedIntentResults(ctx context.Context) (int64, error) {
	var est float64
	err := db.Pool.QueryRow(ctx, `SELECT reltuples FROM pg_class WHERE oid = 'intent_results'::regclass`).Scan(&est)
	return max(int64(est), 0), err
}

// IntentIDs calls fn with the id of every stored intent result.
func (db *DB) IntentIDs(ctx context.Context, fn func(id string)) error {
	rows, err := db.Pool.Query(ctx, `SELECT intent_id FROM intent_results`)
	if err != nil {
		return err
	}
	var id string
	_, err = pgx.ForEachRow(rows, []any{&id}, func() error {
		fn(id)
		return nil
	})
	return err
}

// StreamPositions returns, per writer, how far its projection of a stream has got.
func (db *DB) StreamPositions(ctx context.Context, stream string) (map[string]uint64, error) {
	rows, err := db.Pool.Query(ctx, `SELECT instance_name, stream_id FROM stream_positions WHERE stream_name = $1`, stream)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]uint64{}
	for rows.Next() {
		var name string
		var pos int64
		if err := rows.Scan(&name, &pos); err != nil {
			return nil, err
		}
		out[name] = uint64(pos)
	}
	return out, rows.Err()
}

// StreamPosition is one writer's or consumer's position in a stream, as recorded with
// the projection it reflects.
type StreamPosition struct {
	Stream, Instance string
	Pos              uint64
}

// AllStreamPositions lists every recorded position, by stream and instance.
func (db *DB) AllStreamPositions(ctx context.Context) ([]StreamPosition, error) {
	rows, err := db.Pool.Query(ctx, `SELECT stream_name, instance_name, stream_id FROM stream_positions ORDER BY stream_name, instance_name`)
	if err != nil {
		return nil, fmt.Errorf("persist: stream positions: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (StreamPosition, error) {
		var p StreamPosition
		var pos int64
		err := row.Scan(&p.Stream, &p.Instance, &pos)
		p.Pos = uint64(pos)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("persist: stream positions: %w", err)
	}
	return out, nil
}

// StoredEvent is a projected event. JSON is already redacted when RedactedBy is set.
type StoredEvent struct {
	EventID     string
	RoomID      string
	RoomVersion string
	Seq         uint64
	Idx         int
	Type        string
	StateKey    *string
	Sender      string
	Membership  string
	JSON        []byte
	RedactedBy  string
	DeviceID    string
	TxnID       string
}

const storedEventColumns = `e.event_id, e.room_id, r.room_version, e.seq, e.idx, e.type, e.state_key, e.sender,
	COALESCE(e.membership, ''), e.json, COALESCE(e.redacted_by, ''), COALESCE(e.device_id, ''), COALESCE(e.txn_id, '')`

// queryEvents runs a query over events joined with their room; where is the tail of the
// statement after the FROM clause.
func (db *DB) queryEvents(ctx context.Context, where string, args ...any) ([]StoredEvent, error) {
	rows, err := db.Pool.Query(ctx, `SELECT `+storedEventColumns+` FROM events e JOIN rooms r USING (room_id) `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []StoredEvent
	for rows.Next() {
		var e StoredEvent
		var seq int64
		var js string
		if err := rows.Scan(&e.EventID, &e.RoomID, &e.RoomVersion, &seq, &e.Idx, &e.Type, &e.StateKey, &e.Sender,
			&e.Membership, &js, &e.RedactedBy, &e.DeviceID, &e.TxnID); err != nil {
			return nil, err
		}
		e.Seq, e.JSON = uint64(seq), []byte(js)
		if e.RedactedBy != "" {
			if red, err := Redact(e.RoomVersion, e.JSON); err == nil {
				e.JSON = red
			}
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// Redact returns the redacted form of an event of a room of roomVersion.
func Redact(roomVersion string, js []byte) ([]byte, error) {
	v, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(roomVersion))
	if err != nil {
		return nil, err
	}
	return v.RedactEventJSON(js)
}

// GetEvent returns one event, or ErrNotFound.
func (db *DB) GetEvent(ctx context.Context, eventID string) (*StoredEvent, error) {
	evs, err := db.queryEvents(ctx, `WHERE e.event_id = $1`, eventID)
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, ErrNotFound
	}
	return &evs[0], nil
}

// Membership is a user's current membership of a room.
type Membership struct {
	// Membership is "" when the user never had one.
	Membership string
	EventID    string
	At         Pos
	// JoinedAt is where the user's latest stay in the room began (their join, not a
	// later profile change); nil if they never joined.
	JoinedAt *Pos
	// InvitedAt is the invite that stay's join answered, when it followed one; nil
	// otherwise.
	InvitedAt *Pos
	// Forgotten is true when the user forgot the room after this membership.
	Forgotten bool
	// History is the user's member events in the room, in order.
	History []MemberChange
}

// EventsByID returns the stored events of ids, by ID; IDs not stored are absent.
func (db *DB) EventsByID(ctx context.Context, ids []string) (map[string]StoredEvent, error) {
	evs, err := db.queryEvents(ctx, `WHERE e.event_id = ANY($1)`, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[string]StoredEvent, len(evs))
	for _, ev := range evs {
		out[ev.EventID] = ev
	}
	return out, nil
}

// Membership returns a user's current membership of a room, with the history of their
// member events in it, read in one query.
func (db *DB) Membership(ctx context.Context, roomID, userID string) (Membership, error) {
	var m Membership
	var seq int64
	var seqs []int64
	var idxs []int32
	var ms []string
	err := db.Pool.QueryRow(ctx, `SELECT COALESCE(c.membership, ''), c.event_id, c.seq, c.idx, f.event_id IS NOT NULL,
			h.seqs, h.idxs, h.ms
		FROM current_state c
		LEFT JOIN forgotten_rooms f ON f.user_id = c.state_key AND f.room_id = c.room_id AND f.event_id = c.event_id
		LEFT JOIN LATERAL (SELECT array_agg(e.seq ORDER BY e.seq, e.idx) AS seqs, array_agg(e.idx ORDER BY e.seq, e.idx) AS idxs,
				array_agg(COALESCE(e.membership, '') ORDER BY e.seq, e.idx) AS ms
			FROM events e
			WHERE e.room_id = c.room_id AND e.type = 'm.room.member' AND e.state_key = c.state_key) h ON true
		WHERE c.room_id = $1 AND c.type = 'm.room.member' AND c.state_key = $2`, roomID, userID).
		Scan(&m.Membership, &m.EventID, &seq, &m.At.Idx, &m.Forgotten, &seqs, &idxs, &ms)
	if errors.Is(err, pgx.ErrNoRows) {
		return Membership{}, nil
	}
	if err != nil {
		return Membership{}, fmt.Errorf("persist: membership: %w", err)
	}
	m.At.Seq = uint64(seq)
	if len(seqs) != len(ms) || len(idxs) != len(ms) {
		return Membership{}, errors.New("persist: membership: history arrays of different lengths")
	}
	m.History = make([]MemberChange, len(ms))
	for i := range ms {
		m.History[i] = MemberChange{At: Pos{Seq: uint64(seqs[i]), Idx: int(idxs[i])}, Membership: ms[i]}
		// A join after a join is a profile change, not the start of a membership.
		if ms[i] == "join" && (i == 0 || ms[i-1] != "join") {
			m.JoinedAt, m.InvitedAt = &m.History[i].At, nil
			if i > 0 && ms[i-1] == "invite" {
				m.InvitedAt = &m.History[i-1].At
			}
		}
	}
	return m, nil
}

// HistoryVisibility returns the current m.room.history_visibility of each room, or
// "shared", the spec's default, where it is unset or unreadable.
func (db *DB) HistoryVisibility(ctx context.Context, rooms []string) (map[string]string, error) {
	out := make(map[string]string, len(rooms))
	for _, r := range rooms {
		out[r] = "shared"
	}
	if len(rooms) == 0 {
		return out, nil
	}
	rows, err := db.Pool.Query(ctx, `SELECT c.room_id, e.json FROM current_state c JOIN events e USING (event_id)
		WHERE c.room_id = ANY($1) AND c.type = 'm.room.history_visibility' AND c.state_key = ''`, rooms)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var room, js string
		if err := rows.Scan(&room, &js); err != nil {
			return nil, err
		}
		var ev struct {
			Content struct {
				HistoryVisibility string `json:"history_visibility"`
			} `json:"content"`
		}
		if json.Unmarshal([]byte(js), &ev) == nil && ev.Content.HistoryVisibility != "" {
			out[room] = ev.Content.HistoryVisibility
		}
	}
	return out, rows.Err()
}

// VisibleFrom is where the room's history becomes visible to the user of m under a
// visibility that hides history (HidesHistory): the invite their latest join answered
// when the room's visibility is "invited", else that join; nil if they never joined.
func (m Membership) VisibleFrom(visibility string) *Pos {
	if visibility == "invited" && m.InvitedAt != nil {
		return m.InvitedAt
	}
	return m.JoinedAt
}

// HidesHistory reports whether a history visibility hides events sent before a
// member's stay from them: its join, or for "invited" the invite the join answered
// (Membership.VisibleFrom).
func HidesHistory(visibility string) bool {
	return visibility == "joined" || visibility == "invited"
}

// StateAt returns the state of a room as of the event at position at, included. Local
// rooms have a linear history, so the state is the last state event of each key up to
// it.
func (db *DB) StateAt(ctx context.Context, roomID string, at Pos) ([]StoredEvent, error) {
	return db.queryEvents(ctx, `WHERE e.event_id IN (
		SELECT DISTINCT ON (type, state_key) event_id FROM events
		WHERE room_id = $1 AND state_key IS NOT NULL AND (seq, idx) <= ($2, $3)
		ORDER BY type, state_key, seq DESC, idx DESC)
		ORDER BY e.seq, e.idx`, roomID, int64(at.Seq), at.Idx)
}

// Members returns the member events of a room's current state, filtered by membership
// when membership is not empty.
func (db *DB) Members(ctx context.Context, roomID, membership string) ([]StoredEvent, error) {
	return db.queryEvents(ctx, `WHERE e.event_id IN (SELECT event_id FROM current_state
		WHERE room_id = $1 AND type = 'm.room.member' AND ($2 = '' OR membership = $2))
		ORDER BY e.state_key`, roomID, membership)
}

// RoomsOfUser returns the rooms where the user's current membership is one of ms.
func (db *DB) RoomsOfUser(ctx context.Context, userID string, ms ...string) ([]string, error) {
	rows, err := db.Pool.Query(ctx, `SELECT room_id FROM current_state
		WHERE type = 'm.room.member' AND state_key = $1 AND membership = ANY($2) ORDER BY room_id`, userID, ms)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Pos is a position in the global order.
type Pos struct {
	Seq uint64
	Idx int
}

// Less reports whether p comes before q.
func (p Pos) Less(q Pos) bool {
	return p.Seq < q.Seq || (p.Seq == q.Seq && p.Idx < q.Idx)
}

// RoomEvents pages through a room's timeline from the boundary from: backwards it
// returns events before from (newest first) down to boundary to when set; forwards it
// returns events at or after from (oldest first) up to, not including, boundary to.
// A boundary Pos{seq, idx} sits just before the event at that position.
func (db *DB) RoomEvents(ctx context.Context, roomID string, from Pos, to *Pos, backwards bool, limit int, filter EventFilter) ([]StoredEvent, error) {
	cond, fargs := filter.clause(7)
	// The filter's conditions name the row ev: the same row as e, under the name
	// the timeline queries give it.
	if backwards {
		lo := Pos{}
		if to != nil {
			lo = *to
		}
		return db.queryEvents(ctx, `WHERE e.event_id IN (SELECT ev.event_id FROM events ev
			WHERE ev.room_id = $1 AND (ev.seq, ev.idx) < ($2, $3) AND (ev.seq, ev.idx) >= ($4, $5)`+cond+`
			ORDER BY ev.seq DESC, ev.idx DESC LIMIT $6)
			ORDER BY e.seq DESC, e.idx DESC`, append([]any{roomID, int64(from.Seq), from.Idx, int64(lo.Seq), lo.Idx, limit}, fargs...)...)
	}
	hi := Pos{Seq: 1<<63 - 1}
	if to != nil {
		hi = *to
	}
	return db.queryEvents(ctx, `WHERE e.event_id IN (SELECT ev.event_id FROM events ev
		WHERE ev.room_id = $1 AND (ev.seq, ev.idx) >= ($2, $3) AND (ev.seq, ev.idx) < ($4, $5)`+cond+`
		ORDER BY ev.seq, ev.idx LIMIT $6)
		ORDER BY e.seq, e.idx`, append([]any{roomID, int64(from.Seq), from.Idx, int64(hi.Seq), hi.Idx, limit}, fargs...)...)
}

// MemberChange is one of a user's membership events in a room: where it is and the
// membership after it.
type MemberChange struct {
	At         Pos
	Membership string
}

// MembershipHistories returns user's membership events in each of rooms, in order.
func (db *DB) MembershipHistories(ctx context.Context, rooms []string, user string) (map[string][]MemberChange, error) {
	rows, err := db.Pool.Query(ctx, `SELECT room_id, seq, idx, coalesce(membership, '') FROM events
		WHERE room_id = ANY($1) AND type = 'm.room.member' AND state_key = $2 ORDER BY room_id, seq, idx`, rooms, user)
	if err != nil {
		return nil, fmt.Errorf("persist: membership histories: %w", err)
	}
	out := map[string][]MemberChange{}
	var room, membership string
	var seq int64
	var idx int
	_, err = pgx.ForEachRow(rows, []any{&room, &seq, &idx, &membership}, func() error {
		out[room] = append(out[room], MemberChange{At: Pos{Seq: uint64(seq), Idx: idx}, Membership: membership})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("persist: membership histories: %w", err)
	}
	return out, nil
}

// MembershipAt is the membership after the event at p, from a room's history of a
// user's membership events: "leave" before the first.
func MembershipAt(history []MemberChange, p Pos) string {
	m := "leave"
	for _, c := range history {
		if p.Less(c.At) {
			break
		}
		m = c.Membership
	}
	return m
}

// EventAtTime is an event and its origin_server_ts.
type EventAtTime struct {
	EventID string
	TS      int64
}

// EventNearTime returns the room's event between floor and ceiling nearest ts: the
// first at or after it (forward) or the last at or before it, or ErrNotFound.
func (db *DB) EventNearTime(ctx context.Context, room string, ts int64, forward bool, floor, ceiling Pos) (EventAtTime, error) {
	cond, order := "origin_server_ts >= $2", "origin_server_ts, seq, idx"
	if !forward {
		cond, order = "origin_server_ts <= $2", "origin_server_ts DESC, seq DESC, idx DESC"
	}
	var e EventAtTime
	err := db.Pool.QueryRow(ctx, `SELECT event_id, origin_server_ts FROM events
		WHERE room_id = $1 AND `+cond+` AND (seq, idx) >= ($3, $4) AND (seq, idx) < ($5, $6)
		ORDER BY `+order+` LIMIT 1`, room, ts, int64(floor.Seq), floor.Idx, int64(ceiling.Seq), ceiling.Idx).Scan(&e.EventID, &e.TS)
	if errors.Is(err, pgx.ErrNoRows) {
		return e, ErrNotFound
	}
	if err != nil {
		return e, fmt.Errorf("persist: event near time: %w", err)
	}
	return e, nil
}
