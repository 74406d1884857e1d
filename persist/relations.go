package persist

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// MaxRelationDepth is how deep a recursive relations query follows relations of
// relations, as Synapse's.
const MaxRelationDepth = 3

// RelationsQuery selects the events relating to Parent.
type RelationsQuery struct {
	Room, Parent string
	// RelType and EventType, when set, keep only relations of that type and relating
	// events of that type.
	RelType, EventType string
	// From and To bound the page, as /messages's boundaries do; To may be nil.
	From      Pos
	To        *Pos
	Backwards bool
	Limit     int
	// Recurse follows the relations of relating events too, MaxRelationDepth deep.
	Recurse bool
}

// Relations returns a page of the events relating to q.Parent, in the page's direction.
func (db *DB) Relations(ctx context.Context, q RelationsQuery) ([]StoredEvent, error) {
	depth := 1
	if q.Recurse {
		depth = MaxRelationDepth
	}
	lo, hi := Pos{}, Pos{Seq: 1<<63 - 1}
	if q.Backwards {
		hi = q.From
		if q.To != nil {
			lo = *q.To
		}
	} else {
		lo = q.From
		if q.To != nil {
			hi = *q.To
		}
	}
	order := "ASC"
	if q.Backwards {
		order = "DESC"
	}
	return db.queryEvents(ctx, `WHERE e.event_id IN (
			WITH RECURSIVE rel (event_id, seq, idx, depth) AS (
				SELECT event_id, seq, idx, 1 FROM event_relations
				WHERE relates_to = $2 AND room_id = $1 AND ($3 = '' OR rel_type = $3) AND ($4 = '' OR type = $4)
				UNION
				SELECT x.event_id, x.seq, x.idx, rel.depth + 1 FROM event_relations x JOIN rel ON x.relates_to = rel.event_id
				WHERE rel.depth < $5 AND x.room_id = $1 AND ($3 = '' OR x.rel_type = $3) AND ($4 = '' OR x.type = $4)
			)
			SELECT event_id FROM rel WHERE (seq, idx) >= ($6, $7) AND (seq, idx) < ($8, $9)
			ORDER BY seq `+order+`, idx `+order+` LIMIT $10)
		ORDER BY e.seq `+order+`, e.idx `+order,
		q.Room, q.Parent, q.RelType, q.EventType, depth, int64(lo.Seq), lo.Idx, int64(hi.Seq), hi.Idx, q.Limit)
}

// ThreadRoot is a thread of a room: its root and the position of its latest event.
type ThreadRoot struct {
	Root   string
	Latest Pos
}

// Threads returns a room's threads with their latest event before before (nil: any),
// the most recently active first, at most limit; with participant, only the threads
// that user started or replied in.
func (db *DB) Threads(ctx context.Context, room, participant string, before *Pos, limit int) ([]ThreadRoot, error) {
	b := Pos{Seq: 1<<63 - 1}
	if before != nil {
		b = *before
	}
	rows, err := db.Pool.Query(ctx, `SELECT relates_to, seq, idx FROM (
			SELECT DISTINCT ON (relates_to) relates_to, seq, idx FROM event_relations
			WHERE room_id = $1 AND rel_type = 'm.thread' ORDER BY relates_to, seq DESC, idx DESC) latest
		WHERE (seq, idx) < ($2, $3) AND ($4 = '' OR EXISTS (SELECT 1 FROM event_relations p
				WHERE p.relates_to = latest.relates_to AND p.rel_type = 'm.thread' AND p.sender = $4)
			OR EXISTS (SELECT 1 FROM events root WHERE root.event_id = latest.relates_to AND root.sender = $4))
		ORDER BY seq DESC, idx DESC LIMIT $5`, room, int64(b.Seq), b.Idx, participant, limit)
	if err != nil {
		return nil, fmt.Errorf("persist: threads: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (ThreadRoot, error) {
		var t ThreadRoot
		var seq int64
		err := row.Scan(&t.Root, &seq, &t.Latest.Idx)
		t.Latest.Seq = uint64(seq)
		return t, err
	})
}

// Bundle is what the spec's aggregations say of an event (unsigned.m.relations).
type Bundle struct {
	// Thread is set for a thread root.
	Thread *ThreadSummary
	// Replace is the latest edit by the event's sender.
	Replace *StoredEvent
	// References are the events referencing it, in order.
	References []string
}

// ThreadSummary is the m.thread aggregation of a root.
type ThreadSummary struct {
	Latest StoredEvent
	Count  int
	// Participated says the user replied in the thread (the caller adds the root's
	// sender).
	Participated bool
}

// Bundles returns the aggregations of those of ids that have any, for user.
func (db *DB) Bundles(ctx context.Context, ids []string, user string) (map[string]*Bundle, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	b := &pgx.Batch{}
	out := map[string]*Bundle{}
	bundle := func(id string) *Bundle {
		if out[id] == nil {
			out[id] = &Bundle{}
		}
		return out[id]
	}
	latest := map[string]string{}   // event -> the thread's latest event
	replaced := map[string]string{} // event -> its latest edit
	b.Queue(`SELECT relates_to, count(*), bool_or(sender = $2), (array_agg(event_id ORDER BY seq DESC, idx DESC))[1]
		FROM event_relations WHERE relates_to = ANY($1) AND rel_type = 'm.thread' GROUP BY relates_to`, ids, user).
		Query(func(rows pgx.Rows) error {
			var id, last string
			var n int
			var mine bool
			_, err := pgx.ForEachRow(rows, []any{&id, &n, &mine, &last}, func() error {
				bundle(id).Thread = &ThreadSummary{Count: n, Participated: mine}
				latest[id] = last
				return nil
			})
			return err
		})
	b.Queue(`SELECT DISTINCT ON (x.relates_to) x.relates_to, x.event_id FROM event_relations x
		JOIN events t ON t.event_id = x.relates_to
		WHERE x.relates_to = ANY($1) AND x.rel_type = 'm.replace' AND x.sender = t.sender
		ORDER BY x.relates_to, x.seq DESC, x.idx DESC`, ids).
		Query(func(rows pgx.Rows) error {
			var id, edit string
			_, err := pgx.ForEachRow(rows, []any{&id, &edit}, func() error {
				bundle(id)
				replaced[id] = edit
				return nil
			})
			return err
		})
	b.Queue(`SELECT relates_to, array_agg(event_id ORDER BY seq, idx) FROM event_relations
		WHERE relates_to = ANY($1) AND rel_type = 'm.reference' GROUP BY relates_to`, ids).
		Query(func(rows pgx.Rows) error {
			var id string
			var refs []string
			_, err := pgx.ForEachRow(rows, []any{&id, &refs}, func() error {
				bundle(id).References = refs
				return nil
			})
			return err
		})
	if err := db.Pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("persist: aggregations: %w", err)
	}
	if len(latest)+len(replaced) == 0 {
		return out, nil
	}
	var wanted []string
	for _, m := range []map[string]string{latest, replaced} {
		for _, e := range m {
			wanted = append(wanted, e)
		}
	}
	evs, err := db.queryEvents(ctx, `WHERE e.event_id = ANY($1)`, wanted)
	if err != nil {
		return nil, fmt.Errorf("persist: aggregations: %w", err)
	}
	byID := make(map[string]*StoredEvent, len(evs))
	for i := range evs {
		byID[evs[i].EventID] = &evs[i]
	}
	for id, e := range latest {
		if ev := byID[e]; ev != nil {
			out[id].Thread.Latest = *ev
		}
	}
	for id, e := range replaced {
		out[id].Replace = byID[e]
	}
	return out, nil
}
