package persist

import (
	"context"
	"fmt"
	"strings"
	"unicode"

	"github.com/jackc/pgx/v5"
)

// SearchQuery is a full-text search of rooms' messages.
type SearchQuery struct {
	Rooms []string
	// Terms are the words searched for, every one of which must match (English
	// stemming); SearchTerms makes them.
	Terms []string
	// Keys are the content keys searched (content.body, content.name, content.topic);
	// all of them when empty.
	Keys []string
	// Recent orders by position, newest first; otherwise by rank.
	Recent bool
	// Before (Recent) and Offset (by rank) continue a search.
	Before *Pos
	Offset int
	Limit  int
}

// SearchHit is one event a search found, with its rank.
type SearchHit struct {
	Event StoredEvent
	Rank  float64
}

// SearchTerms splits a search term into words of letters and digits, at most 20.
func SearchTerms(term string) []string {
	words := strings.FieldsFunc(term, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
	return words[:min(len(words), 20)]
}

// Search returns a page of the events matching q, and how many match in all.
func (db *DB) Search(ctx context.Context, q SearchQuery) ([]SearchHit, int, error) {
	if len(q.Terms) == 0 || len(q.Rooms) == 0 {
		return nil, 0, nil
	}
	query := strings.Join(q.Terms, " ")
	keys := q.Keys
	if len(keys) == 0 {
		keys = []string{"content.body", "content.name", "content.topic"}
	}
	before := Pos{Seq: 1<<63 - 1}
	if q.Before != nil {
		before = *q.Before
	}
	order := "ts_rank_cd(s.vector, query) DESC, s.seq DESC, s.idx DESC"
	if q.Recent {
		order = "s.seq DESC, s.idx DESC"
	}
	b := &pgx.Batch{}
	type hit struct {
		id   string
		rank float64
	}
	var hits []hit
	var total int
	b.Queue(`SELECT s.event_id, ts_rank_cd(s.vector, query) FROM event_search s, plainto_tsquery('english', $1) query
		WHERE s.vector @@ query AND s.room_id = ANY($2) AND s.key = ANY($3) AND (s.seq, s.idx) < ($4, $5)
		ORDER BY `+order+` LIMIT $6 OFFSET $7`, query, q.Rooms, keys, int64(before.Seq), before.Idx, q.Limit, q.Offset).
		Query(func(rows pgx.Rows) error {
			var h hit
			_, err := pgx.ForEachRow(rows, []any{&h.id, &h.rank}, func() error {
				hits = append(hits, h)
				return nil
			})
			return err
		})
	b.Queue(`SELECT count(*) FROM event_search s, plainto_tsquery('english', $1) query
		WHERE s.vector @@ query AND s.room_id = ANY($2) AND s.key = ANY($3)`, query, q.Rooms, keys).
		QueryRow(func(row pgx.Row) error { return row.Scan(&total) })
	if err := db.Pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, 0, fmt.Errorf("persist: search: %w", err)
	}
	ids := make([]string, len(hits))
	for i, h := range hits {
		ids[i] = h.id
	}
	evs, err := db.EventsByID(ctx, ids)
	if err != nil {
		return nil, 0, fmt.Errorf("persist: search: %w", err)
	}
	out := make([]SearchHit, 0, len(hits))
	for _, h := range hits {
		if ev, ok := evs[h.id]; ok {
			out = append(out, SearchHit{Event: ev, Rank: h.rank})
		}
	}
	return out, total, nil
}
