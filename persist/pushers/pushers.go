// Package pushers reads the pushers table, a projection of the accounts stream
// (package accounts writes it).
package pushers

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

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
