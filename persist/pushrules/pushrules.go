// Package pushrules stores the projection of the push_rules stream: each user's push
// rules state (schemas/pushrules.State) with the stream position that wrote it.
package pushrules

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/schemas/pushrules"
)

// Store reads the user_push_rules table.
type Store struct{ Pool *pgxpool.Pool }

// Project stores records appended at positions seqs, keeping per user only the state of
// the highest position, so replaying older records never moves a user's rules back.
func Project(ctx context.Context, tx pgx.Tx, recs []*pushrules.Record, seqs []uint64) error {
	if len(recs) == 0 {
		return nil
	}
	users, states := make([]string, len(recs)), make([]string, len(recs))
	ids := make([]int64, len(recs))
	for i, r := range recs {
		raw, err := schemas.Marshal(r.Rules)
		if err != nil {
			return fmt.Errorf("pushrules: project: %w", err)
		}
		users[i], states[i], ids[i] = r.User, string(raw), int64(seqs[i])
	}
	// Several records of one batch may be of the same user: the newest wins.
	_, err := tx.Exec(ctx, `INSERT INTO user_push_rules (user_id, rules, stream_id)
		SELECT DISTINCT ON (u) u, r::jsonb, s
		FROM unnest($1::text[], $2::text[], $3::bigint[]) AS x(u, r, s)
		ORDER BY u, s DESC
		ON CONFLICT (user_id) DO UPDATE
		SET rules = excluded.rules, stream_id = excluded.stream_id
		WHERE user_push_rules.stream_id < excluded.stream_id`, users, states, ids)
	if err != nil {
		return fmt.Errorf("pushrules: project: %w", err)
	}
	return nil
}

// Get returns the user's state and the position that wrote it; a user who never changed
// their push rules has the zero State at position 0.
func (s Store) Get(ctx context.Context, user string) (pushrules.State, uint64, error) {
	var raw []byte
	var pos int64
	err := s.Pool.QueryRow(ctx, `SELECT rules, stream_id FROM user_push_rules WHERE user_id = $1`, user).Scan(&raw, &pos)
	if errors.Is(err, pgx.ErrNoRows) {
		return pushrules.State{}, 0, nil
	}
	if err != nil {
		return pushrules.State{}, 0, fmt.Errorf("pushrules: get: %w", err)
	}
	var st pushrules.State
	if err := json.Unmarshal(raw, &st); err != nil {
		return pushrules.State{}, 0, fmt.Errorf("pushrules: stored state of %s: %w", user, err)
	}
	return st, uint64(pos), nil
}
