// Package notifications stores what the pusher decided: the events that notify each
// local user (event_push_actions), with the pusher instance's position, and reads the
// counts /sync shows and the list /notifications pages.
package notifications

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ganglionhq/ganglion/persist"
)

// Stream is the stream_positions name of a pusher instance's position in the EVENTS
// log: every message up to it is evaluated.
const Stream = "pusher"

// MainThread is the thread of events outside any thread (Synapse's name).
const MainThread = "main"

// Notification is one event that notifies one user.
type Notification struct {
	User, EventID, RoomID, Thread string
	Pos                           persist.Pos
	Highlight                     bool
	Actions                       json.RawMessage
	TS                            int64
}

// Store reads and writes event_push_actions.
type Store struct{ Pool *pgxpool.Pool }

// Record stores notifications and moves the pusher instances' positions forward, in
// one transaction (a pipelined batch); storing a notification again changes nothing.
func (s Store) Record(ctx context.Context, ns []Notification, positions map[string]uint64) error {
	b := &pgx.Batch{}
	if len(ns) > 0 {
		n := len(ns)
		users, events, rooms, threads := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		seqs, tss := make([]int64, n), make([]int64, n)
		idxs := make([]int32, n)
		highlights := make([]bool, n)
		actions := make([]string, n)
		for i, x := range ns {
			users[i], events[i], rooms[i], threads[i] = x.User, x.EventID, x.RoomID, x.Thread
			seqs[i], idxs[i], tss[i], highlights[i], actions[i] = int64(x.Pos.Seq), int32(x.Pos.Idx), x.TS, x.Highlight, string(x.Actions)
		}
		queueLockUsers(b, users)
		// Only what is stored now counts, and only after the user's read receipts: the
		// newest receipt covering each (user, room, thread) is read once, not once per
		// notification.
		b.Queue(`WITH ins AS (
				INSERT INTO event_push_actions (user_id, event_id, room_id, seq, idx, thread_id, highlight, actions, ts)
				SELECT u, e, r, s, i, t, h, a::json, ts
				FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::int[], $6::text[], $7::bool[], $8::text[], $9::bigint[])
					AS x(u, e, r, s, i, t, h, a, ts)
				-- A purged room's events, met by a pusher behind the purge, notify nobody.
				WHERE NOT EXISTS (SELECT 1 FROM purged_rooms p WHERE p.room_id = x.r)
				ON CONFLICT (user_id, seq, idx) DO NOTHING
				RETURNING user_id, room_id, thread_id, seq, idx, highlight),
			keys AS (SELECT DISTINCT user_id, room_id, thread_id FROM ins),
			reads AS (SELECT k.user_id, k.room_id, k.thread_id, r.event_seq, r.event_idx FROM keys k
				LEFT JOIN LATERAL (SELECT event_seq, event_idx FROM receipts r
					WHERE r.room_id = k.room_id AND r.user_id = k.user_id AND r.receipt_type IN ('m.read', 'm.read.private')
						AND (r.thread_id = '' OR r.thread_id = k.thread_id)
					ORDER BY event_seq DESC, event_idx DESC LIMIT 1) r ON true)
			INSERT INTO notification_counts (user_id, room_id, thread_id, notifications, highlights)
			SELECT a.user_id, a.room_id, a.thread_id, count(*), count(*) FILTER (WHERE a.highlight)
			FROM ins a JOIN reads USING (user_id, room_id, thread_id)
			WHERE reads.event_seq IS NULL OR (a.seq, a.idx) > (reads.event_seq, reads.event_idx)
			GROUP BY a.user_id, a.room_id, a.thread_id
			ON CONFLICT (user_id, room_id, thread_id) DO UPDATE
			SET notifications = notification_counts.notifications + excluded.notifications,
				highlights = notification_counts.highlights + excluded.highlights`,
			users, events, rooms, seqs, idxs, threads, highlights, actions, tss)
	}
	for instance, seq := range positions {
		b.Queue(`INSERT INTO stream_positions (stream_name, instance_name, stream_id) VALUES ($1, $2, $3)
			ON CONFLICT (stream_name, instance_name) DO UPDATE
			SET stream_id = GREATEST(stream_positions.stream_id, excluded.stream_id)`, Stream, instance, int64(seq))
	}
	if b.Len() == 0 {
		return nil
	}
	// One round trip: a batch runs as one implicit transaction.
	if err := s.Pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("notifications: record: %w", err)
	}
	return nil
}

// Count is a room's, or a thread's, notifications after the user's read receipt.
type Count struct {
	Notifications int `json:"notification_count"`
	Highlights    int `json:"highlight_count"`
}

// unread is the condition on a notification a (of event_push_actions) that no read
// receipt of its user covers: neither an unthreaded one (m.read or m.read.private) nor
// one of its own thread at or after it.
const unread = `NOT EXISTS (SELECT 1 FROM receipts r
	WHERE r.room_id = a.room_id AND r.user_id = a.user_id AND r.receipt_type IN ('m.read', 'm.read.private')
		AND (r.thread_id = '' OR r.thread_id = a.thread_id) AND (r.event_seq, r.event_idx) >= (a.seq, a.idx))`

// PruneRead deletes up to limit notifications from before before (milliseconds since
// the epoch) that a read receipt of their user covers, and returns how many it deleted.
// Unread ones stay, whatever their age: the counts are counted again from them.
func (s Store) PruneRead(ctx context.Context, before int64, limit int) (int64, error) {
	tag, err := s.Pool.Exec(ctx, `DELETE FROM event_push_actions WHERE ctid = ANY(ARRAY(
		SELECT a.ctid FROM event_push_actions a WHERE a.ts < $1 AND NOT (`+unread+`) LIMIT $2))`, before, limit)
	if err != nil {
		return 0, fmt.Errorf("notifications: prune: %w", err)
	}
	return tag.RowsAffected(), nil
}

// queueLockUsers takes the advisory locks of users for the rest of b's transaction, in
// one order, so storing notifications and counting them again after a receipt never
// run at once for a user.
func queueLockUsers(b *pgx.Batch, users []string) {
	b.Queue(`SELECT pg_advisory_xact_lock(k) FROM (
		SELECT DISTINCT hashtextextended(u, 7) AS k FROM unnest($1::text[]) AS u ORDER BY k) s`, users)
}

// Read is a read receipt that moved: its user's counts in its room (in its thread
// when it is threaded) are counted again.
type Read struct {
	User, Room, Thread string
}

// QueueRecount queues on b the counting again of the notifications reads cover, to
// run in the transaction that stores the receipts.
func QueueRecount(b *pgx.Batch, reads []Read) {
	if len(reads) == 0 {
		return
	}
	users := make([]string, len(reads))
	for i, r := range reads {
		users[i] = r.User
	}
	queueLockUsers(b, users)
	for _, r := range reads {
		b.Queue(`DELETE FROM notification_counts WHERE user_id = $1 AND room_id = $2 AND ($3 = '' OR thread_id = $3)`,
			r.User, r.Room, r.Thread)
		b.Queue(`INSERT INTO notification_counts (user_id, room_id, thread_id, notifications, highlights)
			SELECT a.user_id, a.room_id, a.thread_id, count(*), count(*) FILTER (WHERE a.highlight)
			FROM event_push_actions a
			WHERE a.user_id = $1 AND a.room_id = $2 AND ($3 = '' OR a.thread_id = $3) AND `+unread+`
			GROUP BY a.user_id, a.room_id, a.thread_id`, r.User, r.Room, r.Thread)
	}
}

// Counts returns, for each of rooms with unread notifications, the counts per thread
// (MainThread for the main timeline).
func (s Store) Counts(ctx context.Context, user string, rooms []string) (map[string]map[string]Count, error) {
	out := map[string]map[string]Count{}
	if len(rooms) == 0 {
		return out, nil
	}
	rows, err := s.Pool.Query(ctx, `SELECT room_id, thread_id, notifications, highlights FROM notification_counts
		WHERE user_id = $1 AND room_id = ANY($2) AND notifications > 0`, user, rooms)
	if err != nil {
		return nil, fmt.Errorf("notifications: counts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var room, thread string
		var c Count
		if err := rows.Scan(&room, &thread, &c.Notifications, &c.Highlights); err != nil {
			return nil, fmt.Errorf("notifications: counts: %w", err)
		}
		if out[room] == nil {
			out[room] = map[string]Count{}
		}
		out[room][thread] = c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("notifications: counts: %w", err)
	}
	return out, nil
}

// Listed is one notification as /notifications shows it, with whether the user's
// read receipt covers it.
type Listed struct {
	Notification
	Read bool
}

// List returns the user's notifications before position before (all when zero),
// newest first, at most limit, only highlights when asked.
func (s Store) List(ctx context.Context, user string, before persist.Pos, limit int, onlyHighlights bool) ([]Listed, error) {
	if before == (persist.Pos{}) {
		before = persist.Pos{Seq: 1 << 62}
	}
	rows, err := s.Pool.Query(ctx, `SELECT a.event_id, a.room_id, a.thread_id, a.seq, a.idx, a.highlight, a.actions::text, a.ts,
			EXISTS (SELECT 1 FROM receipts r WHERE r.room_id = a.room_id AND r.user_id = a.user_id
				AND r.receipt_type IN ('m.read', 'm.read.private') AND (r.thread_id = '' OR r.thread_id = a.thread_id)
				AND (r.event_seq, r.event_idx) >= (a.seq, a.idx))
		FROM event_push_actions a
		WHERE a.user_id = $1 AND (a.seq, a.idx) < ($2, $3) AND (a.highlight OR NOT $5)
		ORDER BY a.seq DESC, a.idx DESC LIMIT $4`, user, int64(before.Seq), int32(before.Idx), limit, onlyHighlights)
	if err != nil {
		return nil, fmt.Errorf("notifications: list: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Listed, error) {
		l := Listed{Notification: Notification{User: user}}
		var seq int64
		var idx int32
		var actions string
		err := r.Scan(&l.EventID, &l.RoomID, &l.Thread, &seq, &idx, &l.Highlight, &actions, &l.TS, &l.Read)
		l.Pos, l.Actions = persist.Pos{Seq: uint64(seq), Idx: int(idx)}, json.RawMessage(actions)
		return l, err
	})
	if err != nil {
		return nil, fmt.Errorf("notifications: list: %w", err)
	}
	return list, nil
}

// After returns the user's notifications after position from, oldest first, at most
// limit: what a pusher has to deliver.
func (s Store) After(ctx context.Context, user string, from persist.Pos, limit int) ([]Notification, error) {
	rows, err := s.Pool.Query(ctx, `SELECT event_id, room_id, thread_id, seq, idx, highlight, actions::text, ts
		FROM event_push_actions WHERE user_id = $1 AND (seq, idx) > ($2, $3) ORDER BY seq, idx LIMIT $4`,
		user, int64(from.Seq), int32(from.Idx), limit)
	if err != nil {
		return nil, fmt.Errorf("notifications: after: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Notification, error) {
		n := Notification{User: user}
		var seq int64
		var idx int32
		var actions string
		err := r.Scan(&n.EventID, &n.RoomID, &n.Thread, &seq, &idx, &n.Highlight, &actions, &n.TS)
		n.Pos, n.Actions = persist.Pos{Seq: uint64(seq), Idx: int(idx)}, json.RawMessage(actions)
		return n, err
	})
	if err != nil {
		return nil, fmt.Errorf("notifications: after: %w", err)
	}
	return list, nil
}
