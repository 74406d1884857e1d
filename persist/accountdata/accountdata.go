// Package accountdata stores the projection of the account_data stream: the latest
// value of each user's global and per-room account data, tags included.
package accountdata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ganglionhq/ganglion/schemas"
)

// ErrNotFound is returned for account data nobody set.
var ErrNotFound = errors.New("accountdata: not found")

// Item is one value with the stream position that wrote it.
type Item struct {
	Room    string
	Type    string
	Content json.RawMessage
	Pos     uint64
}

// Store reads and writes the account_data table.
type Store struct{ Pool *pgxpool.Pool }

// Project stores records appended at positions seqs, keeping per key only the value of
// the highest position, so replaying older records never moves a value back.
func Project(ctx context.Context, tx pgx.Tx, recs []*schemas.AccountDataRecord, seqs []uint64) error {
	if len(recs) == 0 {
		return nil
	}
	users, rooms, types, contents := make([]string, len(recs)), make([]string, len(recs)), make([]string, len(recs)), make([]string, len(recs))
	ids := make([]int64, len(recs))
	for i, r := range recs {
		users[i], rooms[i], types[i], contents[i], ids[i] = r.User, r.Room, r.Type, string(r.Content), int64(seqs[i])
	}
	// Several records of one batch may set the same key: the newest of them wins.
	_, err := tx.Exec(ctx, `INSERT INTO account_data (user_id, room_id, type, content, stream_id)
		SELECT DISTINCT ON (u, r, t) u, r, t, c::jsonb, s
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) AS x(u, r, t, c, s)
		WHERE x.r = '' OR NOT EXISTS (SELECT 1 FROM purged_rooms p WHERE p.room_id = x.r)
		ORDER BY u, r, t, s DESC
		ON CONFLICT (user_id, room_id, type) DO UPDATE
		SET content = excluded.content, stream_id = excluded.stream_id
		WHERE account_data.stream_id < excluded.stream_id`, users, rooms, types, contents, ids)
	if err != nil {
		return fmt.Errorf("accountdata: project: %w", err)
	}
	return nil
}

// Get returns one value; room is "" for global account data.
func (s Store) Get(ctx context.Context, user, room, typ string) (json.RawMessage, error) {
	var content json.RawMessage
	err := s.Pool.QueryRow(ctx, `SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`,
		user, room, typ).Scan(&content)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("accountdata: get: %w", err)
	}
	return content, nil
}

// Changed returns the user's values written in (from, to], global and of every room,
// oldest first; from 0 returns all of them.
func (s Store) Changed(ctx context.Context, user string, from, to uint64) ([]Item, error) {
	rows, err := s.Pool.Query(ctx, `SELECT room_id, type, content, stream_id FROM account_data
		WHERE user_id = $1 AND stream_id > $2 AND stream_id <= $3 ORDER BY stream_id`, user, int64(from), int64(to))
	if err != nil {
		return nil, fmt.Errorf("accountdata: changed: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Item, error) {
		var it Item
		var pos int64
		err := row.Scan(&it.Room, &it.Type, &it.Content, &pos)
		it.Pos = uint64(pos)
		return it, err
	})
}
