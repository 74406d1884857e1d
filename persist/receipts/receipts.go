// Package receipts stores the projection of the receipts stream: the latest receipt of
// each (room, receipt type, user, thread).
package receipts

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/notifications"
	"github.com/ganglionhq/ganglion/schemas"
)

// Key names one receipt: Thread is "" for an unthreaded one.
type Key struct {
	Room, Type, User, Thread string
}

// Receipt is one stored receipt with the stream position that wrote it.
type Receipt struct {
	Key
	EventID string
	TS      int64
	Pos     uint64
}

// Store reads and writes the receipts table.
type Store struct{ Pool *pgxpool.Pool }

// Project stores records appended at positions seqs, keeping per key only the receipt of
// the highest position, so replaying older records never moves a receipt back.
func Project(ctx context.Context, tx pgx.Tx, recs []*schemas.ReceiptRecord, seqs []uint64) error {
	b := &pgx.Batch{}
	QueueProject(b, recs, seqs)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("receipts: project: %w", err)
	}
	return nil
}

// QueueProject queues on b what Project executes.
func QueueProject(b *pgx.Batch, recs []*schemas.ReceiptRecord, seqs []uint64) {
	if len(recs) == 0 {
		return
	}
	n := len(recs)
	rooms, types, users, threads, events := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	eventSeqs, eventIdxs, tss, ids := make([]int64, n), make([]int32, n), make([]int64, n), make([]int64, n)
	for i, r := range recs {
		rooms[i], types[i], users[i], threads[i], events[i] = r.Room, r.Type, r.User, r.Thread, r.EventID
		eventSeqs[i], eventIdxs[i], tss[i], ids[i] = int64(r.EventSeq), int32(r.EventIdx), r.TS, int64(seqs[i])
	}
	// Several records of one batch may set the same key: the newest of them wins.
	b.Queue(`INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, event_seq, event_idx, ts, stream_id)
		SELECT DISTINCT ON (r, t, u, th) r, t, u, th, e, es, ei, ts, s
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::int[], $8::bigint[], $9::bigint[])
			AS x(r, t, u, th, e, es, ei, ts, s)
		WHERE NOT EXISTS (SELECT 1 FROM purged_rooms p WHERE p.room_id = x.r)
		ORDER BY r, t, u, th, s DESC
		ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE
		SET event_id = excluded.event_id, event_seq = excluded.event_seq, event_idx = excluded.event_idx,
			ts = excluded.ts, stream_id = excluded.stream_id
		WHERE receipts.stream_id < excluded.stream_id`,
		rooms, types, users, threads, events, eventSeqs, eventIdxs, tss, ids)
	// Read receipts move the notification counts their users see.
	var reads []notifications.Read
	for _, r := range recs {
		if r.Type == schemas.ReceiptRead || r.Type == schemas.ReceiptReadPrivate {
			reads = append(reads, notifications.Read{User: r.User, Room: r.Room, Thread: r.Thread})
		}
	}
	notifications.QueueRecount(b, reads)
}

// EventPositions returns, for each of keys that has a receipt, the position of its
// event in the EVENTS log.
func (s Store) EventPositions(ctx context.Context, keys []Key) (map[Key]persist.Pos, error) {
	out := make(map[Key]persist.Pos, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	n := len(keys)
	rooms, types, users, threads := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, k := range keys {
		rooms[i], types[i], users[i], threads[i] = k.Room, k.Type, k.User, k.Thread
	}
	rows, err := s.Pool.Query(ctx, `SELECT r.room_id, r.receipt_type, r.user_id, r.thread_id, r.event_seq, r.event_idx
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS k(room_id, receipt_type, user_id, thread_id)
		JOIN receipts r USING (room_id, receipt_type, user_id, thread_id)`, rooms, types, users, threads)
	if err != nil {
		return nil, fmt.Errorf("receipts: event positions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k Key
		var seq int64
		var idx int
		if err := rows.Scan(&k.Room, &k.Type, &k.User, &k.Thread, &seq, &idx); err != nil {
			return nil, fmt.Errorf("receipts: event positions: %w", err)
		}
		out[k] = persist.Pos{Seq: uint64(seq), Idx: idx}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("receipts: event positions: %w", err)
	}
	return out, nil
}

// Changed returns the receipts viewer may see that were written in (since, to] in
// rooms, and every current one of fresh (rooms whose receipts start from scratch: an
// initial sync, a new join), oldest first. Private receipts are only their owner's.
func (s Store) Changed(ctx context.Context, viewer string, rooms []string, since uint64, fresh []string, to uint64) ([]Receipt, error) {
	if len(rooms) == 0 && len(fresh) == 0 {
		return nil, nil
	}
	rows, err := s.Pool.Query(ctx, `SELECT room_id, receipt_type, user_id, thread_id, event_id, ts, stream_id
		FROM receipts
		WHERE ((room_id = ANY($2) AND stream_id > $3) OR room_id = ANY($4)) AND stream_id <= $5
			AND (receipt_type <> $6 OR user_id = $1)
		ORDER BY stream_id`, viewer, rooms, int64(since), fresh, int64(to), schemas.ReceiptReadPrivate)
	if err != nil {
		return nil, fmt.Errorf("receipts: changed: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Receipt, error) {
		var r Receipt
		var pos int64
		err := row.Scan(&r.Room, &r.Type, &r.User, &r.Thread, &r.EventID, &r.TS, &pos)
		r.Pos = uint64(pos)
		return r, err
	})
}
