// Package presence stores the projection of the presence stream: each user's latest
// announced presence, and answers who may see whose.
package presence

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ganglionhq/ganglion/schemas"
)

// ErrNotFound is returned for a user whose presence was never announced.
var ErrNotFound = errors.New("presence: not found")

// Item is one user's presence with the stream position that wrote it.
type Item struct {
	schemas.PresenceRecord
	Pos uint64
}

// Store reads the presence table, and room memberships for presence's purposes.
type Store struct{ Pool *pgxpool.Pool }

// Project stores records appended at positions seqs, keeping per user only the record
// of the highest position, so replaying older records never moves a user back.
func Project(ctx context.Context, tx pgx.Tx, recs []*schemas.PresenceRecord, seqs []uint64) error {
	if len(recs) == 0 {
		return nil
	}
	n := len(recs)
	users, states, msgs := make([]string, n), make([]string, n), make([]*string, n)
	active, fed, synced, ids := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	current := make([]bool, n)
	for i, r := range recs {
		users[i], states[i], msgs[i], current[i] = r.User, r.State, r.StatusMsg, r.CurrentlyActive
		active[i], fed[i], synced[i], ids[i] = r.LastActiveTS, r.LastFederationUpdateTS, r.LastUserSyncTS, int64(seqs[i])
	}
	// Several records of one batch may be of the same user: the newest of them wins.
	_, err := tx.Exec(ctx, `INSERT INTO presence (user_id, state, last_active_ts, last_federation_update_ts,
			last_user_sync_ts, status_msg, currently_active, stream_id)
		SELECT DISTINCT ON (u) u, st, la, lf, ls, m, ca, s
		FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $7::boolean[], $8::bigint[])
			AS x(u, st, la, lf, ls, m, ca, s)
		ORDER BY u, s DESC
		ON CONFLICT (user_id) DO UPDATE
		SET state = excluded.state, last_active_ts = excluded.last_active_ts,
			last_federation_update_ts = excluded.last_federation_update_ts,
			last_user_sync_ts = excluded.last_user_sync_ts, status_msg = excluded.status_msg,
			currently_active = excluded.currently_active, stream_id = excluded.stream_id
		WHERE presence.stream_id < excluded.stream_id`, users, states, active, fed, synced, msgs, current, ids)
	if err != nil {
		return fmt.Errorf("presence: project: %w", err)
	}
	return nil
}

const columns = `user_id, state, last_active_ts, last_federation_update_ts, last_user_sync_ts, status_msg,
	currently_active, stream_id`

func (s Store) query(ctx context.Context, what, sql string, args ...any) ([]Item, error) {
	rows, err := s.Pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("presence: %s: %w", what, err)
	}
	items, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Item, error) {
		it := Item{PresenceRecord: schemas.PresenceRecord{V: schemas.PresenceVersion}}
		var pos int64
		err := row.Scan(&it.User, &it.State, &it.LastActiveTS, &it.LastFederationUpdateTS, &it.LastUserSyncTS,
			&it.StatusMsg, &it.CurrentlyActive, &pos)
		it.Pos = uint64(pos)
		return it, err
	})
	if err != nil {
		return nil, fmt.Errorf("presence: %s: %w", what, err)
	}
	return items, nil
}

// Get returns one user's presence.
func (s Store) Get(ctx context.Context, user string) (Item, error) {
	items, err := s.query(ctx, "get", `SELECT `+columns+` FROM presence WHERE user_id = $1`, user)
	if err != nil {
		return Item{}, err
	}
	if len(items) == 0 {
		return Item{}, ErrNotFound
	}
	return items[0], nil
}

// Users returns the presence of those of users who have one.
func (s Store) Users(ctx context.Context, users []string) ([]Item, error) {
	return s.query(ctx, "users", `SELECT `+columns+` FROM presence WHERE user_id = ANY($1)`, users)
}

// NotOffline returns every user whose presence is not offline: those whose timers run.
func (s Store) NotOffline(ctx context.Context) ([]Item, error) {
	return s.query(ctx, "not offline", `SELECT `+columns+` FROM presence WHERE state <> 'offline'`)
}

// joinedTogether is the condition "user $1 and other are joined to a common room":
// Synapse's rule for who sees whose presence.
func joinedTogether(other string) string {
	return `EXISTS (SELECT 1 FROM current_state o JOIN current_state m ON m.room_id = o.room_id
		WHERE o.type = 'm.room.member' AND o.state_key = ` + other + ` AND o.membership = 'join'
		AND m.type = 'm.room.member' AND m.state_key = $1 AND m.membership = 'join')`
}

// Visible returns the presence of user and of everyone joined to a room user is joined
// to, leaving out offline users unless includeOffline (an initial /sync).
func (s Store) Visible(ctx context.Context, user string, includeOffline bool) ([]Item, error) {
	// The set of users first, then their rows by key: a condition per presence row
	// would read the whole table.
	return s.query(ctx, "visible", `SELECT `+columns+` FROM presence p
		WHERE p.user_id IN (SELECT o.state_key FROM current_state m JOIN current_state o ON o.room_id = m.room_id
			WHERE m.type = 'm.room.member' AND m.state_key = $1 AND m.membership = 'join'
			AND o.type = 'm.room.member' AND o.membership = 'join'
			UNION ALL SELECT $1)
		AND ($2 OR p.state <> 'offline')`, user, includeOffline)
}

// Changed returns, of the presence Visible would return with offline users, what was
// written in (from, to]: an incremental /sync. The range is usually a few rows, each
// checked on its own.
func (s Store) Changed(ctx context.Context, user string, from, to uint64) ([]Item, error) {
	return s.query(ctx, "changed", `SELECT `+columns+` FROM presence p
		WHERE p.stream_id > $2 AND p.stream_id <= $3 AND (p.user_id = $1 OR `+joinedTogether("p.user_id")+`)`,
		user, int64(from), int64(to))
}

// SharesRoom reports whether a and b are joined to a common room.
func (s Store) SharesRoom(ctx context.Context, a, b string) (bool, error) {
	var ok bool
	err := s.Pool.QueryRow(ctx, `SELECT `+joinedTogether("$2"), a, b).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("presence: shares room: %w", err)
	}
	return ok, nil
}

// JoinedRooms returns the rooms each of users is joined to.
func (s Store) JoinedRooms(ctx context.Context, users []string) (map[string][]string, error) {
	rows, err := s.Pool.Query(ctx, `SELECT state_key, room_id FROM current_state
		WHERE type = 'm.room.member' AND membership = 'join' AND state_key = ANY($1)`, users)
	if err != nil {
		return nil, fmt.Errorf("presence: joined rooms: %w", err)
	}
	out := map[string][]string{}
	var user, room string
	_, err = pgx.ForEachRow(rows, []any{&user, &room}, func() error {
		out[user] = append(out[user], room)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("presence: joined rooms: %w", err)
	}
	return out, nil
}

// JoinedMembers returns the users joined to any of rooms.
func (s Store) JoinedMembers(ctx context.Context, rooms []string) ([]string, error) {
	rows, err := s.Pool.Query(ctx, `SELECT DISTINCT state_key FROM current_state
		WHERE type = 'm.room.member' AND membership = 'join' AND room_id = ANY($1)`, rooms)
	if err != nil {
		return nil, fmt.Errorf("presence: joined members: %w", err)
	}
	users, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("presence: joined members: %w", err)
	}
	return users, nil
}
