// Package pushers reads the pushers table, a projection of the accounts stream
// (package accounts writes it).
package pushers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/schemas"
)

// Store reads pushers.
type Store struct {
	Pool *pgxpool.Pool
}

// List returns the user's pushers, ordered by app_id and pushkey.
func (s Store) List(ctx context.Context, user string) ([]schemas.Pusher, error) {
	rows, err := s.Pool.Query(ctx, `SELECT kind, app_id, pushkey, app_display_name, device_display_name, profile_tag, lang, data::text
		FROM pushers WHERE user_id = $1 ORDER BY app_id, pushkey`, user)
	if err != nil {
		return nil, fmt.Errorf("pushers: list: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (schemas.Pusher, error) {
		var p schemas.Pusher
		var data string
		err := r.Scan(&p.Kind, &p.AppID, &p.Pushkey, &p.AppDisplayName, &p.DeviceDisplayName, &p.ProfileTag, &p.Lang, &data)
		p.Data = json.RawMessage(data)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("pushers: list: %w", err)
	}
	return list, nil
}

// Key names one pusher.
type Key struct{ User, AppID, Pushkey string }

// Stored is a pusher with what delivery needs besides its fields.
type Stored struct {
	User string
	schemas.Pusher
	// TS is when it was set, in milliseconds.
	TS int64
}

// Key names the pusher.
func (p Stored) Key() Key { return Key{User: p.User, AppID: p.AppID, Pushkey: p.Pushkey} }

const storedColumns = `user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data::text, pushkey_ts`

func scanStored(r pgx.CollectableRow) (Stored, error) {
	var p Stored
	var data string
	err := r.Scan(&p.User, &p.AppID, &p.Pushkey, &p.Kind, &p.AppDisplayName, &p.DeviceDisplayName, &p.ProfileTag, &p.Lang, &data, &p.TS)
	p.Data = json.RawMessage(data)
	return p, err
}

// OfUsers returns the pushers of users; all pushers when users is nil.
func (s Store) OfUsers(ctx context.Context, users []string) ([]Stored, error) {
	rows, err := s.Pool.Query(ctx, `SELECT `+storedColumns+` FROM pushers WHERE $1::text[] IS NULL OR user_id = ANY($1)`, users)
	if err != nil {
		return nil, fmt.Errorf("pushers: of users: %w", err)
	}
	list, err := pgx.CollectRows(rows, scanStored)
	if err != nil {
		return nil, fmt.Errorf("pushers: of users: %w", err)
	}
	return list, nil
}

// Get returns one pusher; ok is false when it does not exist (any more).
func (s Store) Get(ctx context.Context, k Key) (p Stored, ok bool, err error) {
	rows, err := s.Pool.Query(ctx, `SELECT `+storedColumns+` FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`,
		k.User, k.AppID, k.Pushkey)
	if err != nil {
		return p, false, fmt.Errorf("pushers: get: %w", err)
	}
	list, err := pgx.CollectRows(rows, scanStored)
	if err != nil || len(list) == 0 {
		return p, false, err
	}
	return list[0], true, nil
}

// Delivered returns how far the pusher's notifications were delivered; ok is false
// for a pusher never delivered to.
func (s Store) Delivered(ctx context.Context, k Key) (pos persist.Pos, ok bool, err error) {
	var seq int64
	var idx int32
	err = s.Pool.QueryRow(ctx, `SELECT seq, idx FROM pusher_delivery WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`,
		k.User, k.AppID, k.Pushkey).Scan(&seq, &idx)
	if errors.Is(err, pgx.ErrNoRows) {
		return pos, false, nil
	}
	if err != nil {
		return pos, false, fmt.Errorf("pushers: delivered: %w", err)
	}
	return persist.Pos{Seq: uint64(seq), Idx: int(idx)}, true, nil
}

// SetDelivered records that the pusher's notifications up to pos were delivered.
func (s Store) SetDelivered(ctx context.Context, k Key, pos persist.Pos) error {
	_, err := s.Pool.Exec(ctx, `INSERT INTO pusher_delivery (user_id, app_id, pushkey, seq, idx) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET seq = excluded.seq, idx = excluded.idx
		WHERE (pusher_delivery.seq, pusher_delivery.idx) < (excluded.seq, excluded.idx)`,
		k.User, k.AppID, k.Pushkey, int64(pos.Seq), int32(pos.Idx))
	if err != nil {
		return fmt.Errorf("pushers: set delivered: %w", err)
	}
	return nil
}

// DeliveredEverywhere sets every pusher as delivered up to pos (a replay: what the
// rebuilt notifications hold was delivered before).
func (s Store) DeliveredEverywhere(ctx context.Context, pos persist.Pos) error {
	_, err := s.Pool.Exec(ctx, `INSERT INTO pusher_delivery (user_id, app_id, pushkey, seq, idx)
		SELECT user_id, app_id, pushkey, $1, $2 FROM pushers
		ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET seq = excluded.seq, idx = excluded.idx`, int64(pos.Seq), int32(pos.Idx))
	if err != nil {
		return fmt.Errorf("pushers: delivered everywhere: %w", err)
	}
	return nil
}
