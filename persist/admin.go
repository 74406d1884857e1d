package persist

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// IsAdmin reports whether user is a server admin.
func (db *DB) IsAdmin(ctx context.Context, user string) (bool, error) {
	var admin bool
	err := db.Pool.QueryRow(ctx, `SELECT admin FROM users WHERE user_id = $1`, user).Scan(&admin)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("persist: admin of %s: %w", user, err)
	}
	return admin, nil
}

// AdminUser is a user as the admin API shows it (Synapse's fields).
type AdminUser struct {
	Name        string  `json:"name"`
	DisplayName *string `json:"displayname"`
	AvatarURL   *string `json:"avatar_url"`
	Admin       bool    `json:"admin"`
	Deactivated bool    `json:"deactivated"`
	// CreationTS is in seconds, as Synapse gives it.
	CreationTS   int64   `json:"creation_ts"`
	IsGuest      bool    `json:"is_guest"`
	ShadowBanned bool    `json:"shadow_banned"`
	Locked       bool    `json:"locked"`
	UserType     *string `json:"user_type"`
}

const adminUserQuery = `SELECT u.user_id, coalesce(p.displayname, split_part(substr(u.user_id, 2), ':', 1)), p.avatar_url, u.admin,
	u.deactivated, extract(epoch FROM u.created_at)::bigint FROM users u LEFT JOIN profiles p USING (user_id)`

func scanAdminUser(row pgx.CollectableRow) (AdminUser, error) {
	var u AdminUser
	err := row.Scan(&u.Name, &u.DisplayName, &u.AvatarURL, &u.Admin, &u.Deactivated, &u.CreationTS)
	return u, err
}

// GetAdminUser returns a user as the admin API shows it, or ErrNotFound.
func (db *DB) GetAdminUser(ctx context.Context, user string) (AdminUser, error) {
	rows, err := db.Pool.Query(ctx, adminUserQuery+` WHERE u.user_id = $1`, user)
	if err != nil {
		return AdminUser{}, fmt.Errorf("persist: admin user: %w", err)
	}
	u, err := pgx.CollectExactlyOneRow(rows, scanAdminUser)
	if errors.Is(err, pgx.ErrNoRows) {
		return AdminUser{}, ErrNotFound
	}
	if err != nil {
		return AdminUser{}, fmt.Errorf("persist: admin user: %w", err)
	}
	return u, nil
}

// AdminUsers pages through the users by ID from offset, those whose ID or display name
// contains name (any when ""), deactivated ones only when asked, and counts them all.
func (db *DB) AdminUsers(ctx context.Context, offset, limit int, name string, deactivated bool) ([]AdminUser, int, error) {
	where := ` WHERE ($1 = '' OR u.user_id ILIKE '%' || $1 || '%' OR p.displayname ILIKE '%' || $1 || '%') AND ($2 OR NOT u.deactivated)`
	var total int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM users u LEFT JOIN profiles p USING (user_id)`+where, name, deactivated).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("persist: admin users: %w", err)
	}
	rows, err := db.Pool.Query(ctx, adminUserQuery+where+` ORDER BY u.user_id LIMIT $3 OFFSET $4`, name, deactivated, limit, offset)
	if err != nil {
		return nil, 0, fmt.Errorf("persist: admin users: %w", err)
	}
	users, err := pgx.CollectRows(rows, scanAdminUser)
	if err != nil {
		return nil, 0, fmt.Errorf("persist: admin users: %w", err)
	}
	return users, total, nil
}

// AdminRoom is a room as the admin API shows it (Synapse's fields).
type AdminRoom struct {
	RoomID             string  `json:"room_id"`
	Name               *string `json:"name"`
	CanonicalAlias     *string `json:"canonical_alias"`
	JoinedMembers      int     `json:"joined_members"`
	JoinedLocalMembers int     `json:"joined_local_members"`
	Version            string  `json:"version"`
	Creator            string  `json:"creator"`
	Federatable        bool    `json:"federatable"`
	Public             bool    `json:"public"`
	JoinRules          *string `json:"join_rules"`
	StateEvents        int     `json:"state_events"`
}

// AdminRooms pages through the rooms by ID from offset, those whose ID, name or
// canonical alias contains search (any when ""), and counts them all.
func (db *DB) AdminRooms(ctx context.Context, offset, limit int, search, serverName string) ([]AdminRoom, int, error) {
	return db.adminRooms(ctx, `WHERE $1 = '' OR x.room_id ILIKE '%' || $1 || '%' OR x.name ILIKE '%' || $1 || '%'
		OR x.canonical_alias ILIKE '%' || $1 || '%'`, offset, limit, search, serverName)
}

// GetAdminRoom returns a room as the admin API shows it, or ErrNotFound.
func (db *DB) GetAdminRoom(ctx context.Context, room, serverName string) (AdminRoom, error) {
	rooms, _, err := db.adminRooms(ctx, `WHERE x.room_id = $1`, 0, 1, room, serverName)
	if err != nil {
		return AdminRoom{}, err
	}
	if len(rooms) == 0 {
		return AdminRoom{}, ErrNotFound
	}
	return rooms[0], nil
}

func (db *DB) adminRooms(ctx context.Context, where string, offset, limit int, arg, serverName string) ([]AdminRoom, int, error) {
	base := `WITH x AS (SELECT r.room_id, r.room_version, r.creator, ` + stateOf("r.room_id", "m.room.name", "name") + ` AS name,
			` + stateOf("r.room_id", "m.room.canonical_alias", "alias") + ` AS canonical_alias,
			` + stateOf("r.room_id", "m.room.join_rules", "join_rule") + ` AS join_rules,
			coalesce((SELECT public FROM room_directory d WHERE d.room_id = r.room_id), false) AS public
		FROM rooms r) `
	var total int
	if err := db.Pool.QueryRow(ctx, base+`SELECT count(*) FROM x `+where, arg).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("persist: admin rooms: %w", err)
	}
	rows, err := db.Pool.Query(ctx, base+`SELECT x.room_id, x.name, x.canonical_alias,
			(SELECT count(*) FROM current_state c WHERE c.room_id = x.room_id AND c.type = 'm.room.member' AND c.membership = 'join'),
			(SELECT count(*) FROM current_state c WHERE c.room_id = x.room_id AND c.type = 'm.room.member' AND c.membership = 'join'
				AND c.state_key LIKE '%:' || $4),
			x.room_version, x.creator, x.public, x.join_rules,
			(SELECT count(*) FROM current_state c WHERE c.room_id = x.room_id)
		FROM x `+where+` ORDER BY x.room_id LIMIT $2 OFFSET $3`, arg, limit, offset, serverName)
	if err != nil {
		return nil, 0, fmt.Errorf("persist: admin rooms: %w", err)
	}
	rooms, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (AdminRoom, error) {
		var r AdminRoom
		err := row.Scan(&r.RoomID, &r.Name, &r.CanonicalAlias, &r.JoinedMembers, &r.JoinedLocalMembers, &r.Version, &r.Creator,
			&r.Public, &r.JoinRules, &r.StateEvents)
		r.Federatable = true
		return r, err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("persist: admin rooms: %w", err)
	}
	return rooms, total, nil
}

// stateOf is an SQL expression for a string field key of the content of the current
// state event typ (state key "") of the room in column room.
func stateOf(room, typ, key string) string {
	return `(SELECT e.json::jsonb -> 'content' ->> '` + key + `' FROM current_state c JOIN events e USING (event_id)
		WHERE c.room_id = ` + room + ` AND c.type = '` + typ + `' AND c.state_key = '')`
}
