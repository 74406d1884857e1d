package persist

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Read queries of /sync. Each one covers every room of a request at once, so a sync
// costs a handful of queries however many rooms the user is in. Every bound they take
// comes from the caller's visible position: rows past it may already be in Postgres
// (another writer projected further) and must not be shown yet.
//
// Boundaries are Pos values as in RoomEvents: Pos{seq, idx} sits just before the event
// at that position, and Pos{n + 1, 0} just after all of log message n.

// SyncMembership is a user's membership of one room as of a sync position.
type SyncMembership struct {
	RoomID     string
	Membership string
	EventID    string
	// At is the position of the membership event.
	At Pos
	// Before is the user's membership as of the since position ("" when none). It is
	// only read for memberships that changed after since.
	Before string
}

// SyncMemberships returns the user's membership of every room as of log position upTo,
// with the membership as of since for those that changed after it. A forgotten room is
// left out, unless its membership changed after since (an incremental sync from before
// the leave shows the leave, as Synapse: other devices learn of it).
func (db *DB) SyncMemberships(ctx context.Context, userID string, since, upTo uint64) ([]SyncMembership, error) {
	// current_state answers for rooms whose latest membership event is visible; for the
	// rare one that changed after upTo, the history gives the membership at upTo.
	rows, err := db.Pool.Query(ctx, `WITH cur AS (
			SELECT room_id, membership, seq, idx, event_id FROM current_state
			WHERE type = 'm.room.member' AND state_key = $1 AND seq <= $2
			UNION ALL
			(SELECT DISTINCT ON (e.room_id) e.room_id, e.membership, e.seq, e.idx, e.event_id FROM events e
			 WHERE e.type = 'm.room.member' AND e.state_key = $1 AND e.seq <= $2
			   AND e.room_id IN (SELECT room_id FROM current_state
			                     WHERE type = 'm.room.member' AND state_key = $1 AND seq > $2)
			 ORDER BY e.room_id, e.seq DESC, e.idx DESC))
		SELECT c.room_id, COALESCE(c.membership, ''), c.event_id, c.seq, c.idx, COALESCE(b.membership, '')
		FROM cur c LEFT JOIN LATERAL (
			SELECT p.membership FROM events p
			WHERE c.seq > $3 AND p.type = 'm.room.member' AND p.state_key = $1 AND p.room_id = c.room_id
			  AND p.seq <= $3
			ORDER BY p.seq DESC, p.idx DESC LIMIT 1) b ON true
		WHERE ($3 > 0 AND c.seq > $3) OR NOT EXISTS (SELECT 1 FROM forgotten_rooms f
			WHERE f.user_id = $1 AND f.room_id = c.room_id AND f.event_id = c.event_id)
		ORDER BY c.room_id`, userID, int64(upTo), int64(since))
	if err != nil {
		return nil, fmt.Errorf("persist: sync memberships: %w", err)
	}
	defer rows.Close()
	var out []SyncMembership
	for rows.Next() {
		var m SyncMembership
		var seq int64
		if err := rows.Scan(&m.RoomID, &m.Membership, &m.EventID, &seq, &m.At.Idx, &m.Before); err != nil {
			return nil, err
		}
		m.At.Seq = uint64(seq)
		out = append(out, m)
	}
	return out, rows.Err()
}

// RoomRange is the span [From, To) of one room's timeline between two boundaries.
type RoomRange struct {
	RoomID   string
	From, To Pos
}

// EventFilter narrows the events a timeline query returns (a client's room event
// filter); the zero value keeps every event. A nil list allows everything, an empty one
// nothing. Types may hold '*' wildcards.
type EventFilter struct {
	Types, Senders, Rooms          *[]string
	NotTypes, NotSenders, NotRooms []string
	// ContainsURL keeps only events whose content has (true) or lacks (false) a string url.
	ContainsURL *bool
}

// clause is the filter as a condition on the events row ev, with its parameters
// numbered from n. Every condition is always present, so the statement stays one.
func (f EventFilter) clause(n int) (string, []any) {
	p := func(i int) string { return "$" + strconv.Itoa(n+i) }
	sql := ` AND (` + p(0) + `::text[] IS NULL OR ev.type LIKE ANY(` + p(0) + `)) AND NOT (ev.type LIKE ANY(` + p(1) + `::text[]))
		AND (` + p(2) + `::text[] IS NULL OR ev.sender = ANY(` + p(2) + `)) AND NOT (ev.sender = ANY(` + p(3) + `::text[]))
		AND (` + p(4) + `::text[] IS NULL OR ev.room_id = ANY(` + p(4) + `)) AND NOT (ev.room_id = ANY(` + p(5) + `::text[]))
		AND (` + p(6) + `::bool IS NULL OR (jsonb_typeof(ev.json::jsonb->'content'->'url') IS NOT DISTINCT FROM 'string') = ` + p(6) + `)`
	var types []string
	if f.Types != nil {
		types = make([]string, 0, len(*f.Types))
		for _, t := range *f.Types {
			types = append(types, likePattern(t))
		}
	}
	notTypes := make([]string, 0, len(f.NotTypes))
	for _, t := range f.NotTypes {
		notTypes = append(notTypes, likePattern(t))
	}
	// A NULL "not" list would make every NOT unknown and drop every row: empty instead.
	orEmpty := func(l []string) []string {
		if l == nil {
			return []string{}
		}
		return l
	}
	return sql, []any{types, notTypes, listOrNil(f.Senders), orEmpty(f.NotSenders), listOrNil(f.Rooms), orEmpty(f.NotRooms), f.ContainsURL}
}

func listOrNil(l *[]string) []string {
	if l == nil {
		return nil
	}
	if *l == nil {
		return []string{}
	}
	return *l
}

// likePattern turns a filter's type pattern, where '*' matches anything, into a LIKE
// pattern that matches nothing else.
func likePattern(t string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`, `*`, `%`)
	return r.Replace(t)
}

// SyncTimelines returns, for each range, its newest limit events that pass filter,
// oldest first. A room with no such event in its range is absent from the map.
func (db *DB) SyncTimelines(ctx context.Context, ranges []RoomRange, limit int, filter EventFilter) (map[string][]StoredEvent, error) {
	if len(ranges) == 0 || limit <= 0 {
		return map[string][]StoredEvent{}, nil
	}
	args := roomBoundaries(len(ranges), func(i int) (string, Pos, Pos) {
		return ranges[i].RoomID, ranges[i].From, ranges[i].To
	})
	cond, fargs := filter.clause(7)
	// One index walk per room, backwards from the end of its range, stopping after
	// limit rows: the cost follows what is returned, not the room's history.
	evs, err := db.queryEvents(ctx, `WHERE e.event_id IN (
		SELECT t.event_id
		FROM unnest($1::text[], $2::bigint[], $3::int[], $4::bigint[], $5::int[]) AS x(room, fs, fi, ts, ti)
		CROSS JOIN LATERAL (SELECT ev.event_id FROM events ev
			WHERE ev.room_id = x.room AND (ev.seq, ev.idx) >= (x.fs, x.fi) AND (ev.seq, ev.idx) < (x.ts, x.ti)`+cond+`
			ORDER BY ev.seq DESC, ev.idx DESC LIMIT $6) t)
		ORDER BY e.room_id, e.seq, e.idx`, append(append(args, limit), fargs...)...)
	if err != nil {
		return nil, fmt.Errorf("persist: sync timelines: %w", err)
	}
	return byRoom(evs), nil
}

// StateRequest asks for the state of a room just before boundary At, keeping only the
// events at or after boundary Since (Pos{} keeps all: the full state).
type StateRequest struct {
	RoomID    string
	At, Since Pos
}

// StateFilter narrows SyncState. The zero value keeps everything.
type StateFilter struct {
	// Types keeps only these event types when not nil.
	Types []string
	// Members, when not nil, keeps only these users' m.room.member events.
	Members []string
}

// SyncState returns the state of each requested room, oldest event first. It starts
// from current_state and looks back in the history only for the keys that changed at
// or after At, so its cost follows the room's state, not its history.
func (db *DB) SyncState(ctx context.Context, reqs []StateRequest, filter StateFilter) (map[string][]StoredEvent, error) {
	if len(reqs) == 0 {
		return map[string][]StoredEvent{}, nil
	}
	args := roomBoundaries(len(reqs), func(i int) (string, Pos, Pos) {
		return reqs[i].RoomID, reqs[i].At, reqs[i].Since
	})
	// Member events are looked up through the (state_key, seq) index of member events,
	// other keys by walking the room backwards from At: a member key that changed is
	// usually the user's own join, whose earlier value may be far back or absent.
	evs, err := db.queryEvents(ctx, `WHERE e.event_id IN (
		SELECT s.event_id
		FROM unnest($1::text[], $2::bigint[], $3::int[], $4::bigint[], $5::int[]) AS x(room, at_seq, at_idx, since_seq, since_idx)
		JOIN current_state cs ON cs.room_id = x.room
		CROSS JOIN LATERAL (
			SELECT cs.event_id, cs.seq, cs.idx WHERE (cs.seq, cs.idx) < (x.at_seq, x.at_idx)
			UNION ALL
			(SELECT ev.event_id, ev.seq, ev.idx FROM events ev
			 WHERE (cs.seq, cs.idx) >= (x.at_seq, x.at_idx) AND cs.type <> 'm.room.member'
			   AND ev.room_id = cs.room_id AND ev.type = cs.type AND ev.state_key = cs.state_key
			   AND (ev.seq, ev.idx) < (x.at_seq, x.at_idx)
			 ORDER BY ev.seq DESC, ev.idx DESC LIMIT 1)
			UNION ALL
			(SELECT ev.event_id, ev.seq, ev.idx FROM events ev
			 WHERE (cs.seq, cs.idx) >= (x.at_seq, x.at_idx) AND cs.type = 'm.room.member'
			   AND ev.type = 'm.room.member' AND ev.state_key = cs.state_key AND ev.room_id = cs.room_id
			   AND (ev.seq, ev.idx) < (x.at_seq, x.at_idx)
			 ORDER BY ev.seq DESC, ev.idx DESC LIMIT 1)
		) s
		WHERE (s.seq, s.idx) >= (x.since_seq, x.since_idx)
		  AND ($6::text[] IS NULL OR cs.type = ANY($6))
		  AND ($7::text[] IS NULL OR cs.type <> 'm.room.member' OR cs.state_key = ANY($7)))
		ORDER BY e.room_id, e.seq, e.idx`, append(args, filter.Types, filter.Members)...)
	if err != nil {
		return nil, fmt.Errorf("persist: sync state: %w", err)
	}
	return byRoom(evs), nil
}

// roomBoundaries lays out n rooms, each with two boundaries, as the parameters $1 to $5
// of a query that unnests them: room IDs, then the first boundaries' seqs and idxs, then
// the second boundaries'. A whole sync request's rooms then take one query.
func roomBoundaries(n int, at func(i int) (roomID string, first, second Pos)) []any {
	rooms := make([]string, n)
	firstSeq, secondSeq := make([]int64, n), make([]int64, n)
	firstIdx, secondIdx := make([]int32, n), make([]int32, n)
	for i := range n {
		var first, second Pos
		rooms[i], first, second = at(i)
		firstSeq[i], firstIdx[i] = int64(first.Seq), int32(first.Idx)
		secondSeq[i], secondIdx[i] = int64(second.Seq), int32(second.Idx)
	}
	return []any{rooms, firstSeq, firstIdx, secondSeq, secondIdx}
}

// byRoom groups events ordered by room.
func byRoom(evs []StoredEvent) map[string][]StoredEvent {
	out := map[string][]StoredEvent{}
	for start := 0; start < len(evs); {
		end := start + 1
		for end < len(evs) && evs[end].RoomID == evs[start].RoomID {
			end++
		}
		out[evs[start].RoomID] = evs[start:end:end]
		start = end
	}
	return out
}

// ProjectedSeqs returns those of seqs whose log message is in Postgres. A message's
// events are written in one transaction, so one row with its sequence proves them all,
// whoever projected it (a writer catching up a room appended by another one projects
// under its own name, and the appender's position may never cover the message).
func (db *DB) ProjectedSeqs(ctx context.Context, seqs []uint64) ([]uint64, error) {
	arg := make([]int64, len(seqs))
	for i, s := range seqs {
		arg[i] = int64(s)
	}
	rows, err := db.Pool.Query(ctx, `SELECT DISTINCT seq FROM events WHERE seq = ANY($1)`, arg)
	if err != nil {
		return nil, fmt.Errorf("persist: projected sequences: %w", err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("persist: projected sequences: %w", err)
	}
	out := make([]uint64, len(found))
	for i, s := range found {
		out[i] = uint64(s)
	}
	return out, nil
}

// RoomSummary is what a joined room's /sync summary says: member counts, and the
// members a client may name an unnamed room after.
type RoomSummary struct {
	Joined, Invited int
	// Heroes are up to five other members by user ID: joined or invited ones, or left
	// and banned ones when there are none; none when the room has a name or a
	// canonical alias.
	Heroes []string
}

// RoomSummaries returns the summaries of rooms as their current state has them.
func (db *DB) RoomSummaries(ctx context.Context, rooms []string, self string) (map[string]RoomSummary, error) {
	out := map[string]RoomSummary{}
	if len(rooms) == 0 {
		return out, nil
	}
	rows, err := db.Pool.Query(ctx, `SELECT r.room,
			(SELECT count(*) FROM current_state c WHERE c.room_id = r.room AND c.type = 'm.room.member' AND c.membership = 'join'),
			(SELECT count(*) FROM current_state c WHERE c.room_id = r.room AND c.type = 'm.room.member' AND c.membership = 'invite'),
			EXISTS (SELECT 1 FROM current_state n JOIN events e USING (event_id)
				WHERE n.room_id = r.room AND n.state_key = '' AND (
					(n.type = 'm.room.name' AND COALESCE(e.json::jsonb->'content'->>'name', '') <> '') OR
					(n.type = 'm.room.canonical_alias' AND COALESCE(e.json::jsonb->'content'->>'alias', '') <> ''))),
			ARRAY(SELECT h.state_key FROM current_state h
				WHERE h.room_id = r.room AND h.type = 'm.room.member' AND h.state_key <> $2 AND h.membership IN ('join', 'invite')
				ORDER BY h.state_key LIMIT 5),
			ARRAY(SELECT h.state_key FROM current_state h
				WHERE h.room_id = r.room AND h.type = 'm.room.member' AND h.state_key <> $2 AND h.membership IN ('leave', 'ban')
				ORDER BY h.state_key LIMIT 5)
		FROM unnest($1::text[]) AS r(room)`, rooms, self)
	if err != nil {
		return nil, fmt.Errorf("persist: room summaries: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var room string
		var joined, invited int64
		var named bool
		var present, gone []string
		if err := rows.Scan(&room, &joined, &invited, &named, &present, &gone); err != nil {
			return nil, err
		}
		sum := RoomSummary{Joined: int(joined), Invited: int(invited)}
		switch {
		case named:
		case len(present) > 0:
			sum.Heroes = present
		default:
			sum.Heroes = gone
		}
		out[room] = sum
	}
	return out, rows.Err()
}
