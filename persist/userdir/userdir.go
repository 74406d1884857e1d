// Package userdir stores the user directory: who is in which room, which rooms anyone
// may find the members of, and the names the directory matches; and searches it.
package userdir

import (
	"context"
	"fmt"
	"strings"
	"unicode"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Stream is the name of the directory's position in stream_positions.
const Stream = "user_directory"

// Change is one change the events log makes to the directory.
type Change struct {
	Room string
	User string
	// Joined is set for a membership event: the user joined (with DisplayName and
	// AvatarURL from its content) or, false, left, was kicked or banned, or was
	// invited.
	Membership  bool
	Joined      bool
	DisplayName *string
	AvatarURL   *string
	// PublicJoin and WorldReadable are set for a room's join rules and history
	// visibility events.
	PublicJoin    *bool
	WorldReadable *bool
	// Purged is set when the room was deleted: nobody is in it any more.
	Purged bool
}

// Store reads and writes the directory's tables.
type Store struct{ Pool *pgxpool.Pool }

// Apply stores changes, in order, and instance's position, in one transaction. A local
// user's name and avatar are their profile's; a remote user's, those of their latest
// join. Applying changes again changes nothing.
func (s Store) Apply(ctx context.Context, changes []Change, instance string, pos uint64) error {
	b := &pgx.Batch{}
	for _, c := range changes {
		switch {
		case c.Purged:
			// The room stops counting as public first, so its members' flags are
			// computed without it.
			b.Queue(`DELETE FROM user_directory_rooms_public WHERE room_id = $1`, c.Room)
			b.Queue(`UPDATE user_directory d SET in_public_room = `+strings.ReplaceAll(inPublicRoom, "$1", "d.user_id")+`
				WHERE d.user_id IN (SELECT user_id FROM user_directory_rooms WHERE room_id = $1)`, c.Room)
			b.Queue(`DELETE FROM user_directory_rooms WHERE room_id = $1`, c.Room)
		case c.Membership && c.Joined:
			b.Queue(`INSERT INTO user_directory_rooms (user_id, room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, c.User, c.Room)
			b.Queue(`INSERT INTO user_directory (user_id, display_name, avatar_url)
				SELECT $1, coalesce(p.displayname, $2), coalesce(p.avatar_url, $3)
				FROM (SELECT 1) one LEFT JOIN profiles p ON p.user_id = $1
				ON CONFLICT (user_id) DO UPDATE SET display_name = excluded.display_name, avatar_url = excluded.avatar_url`,
				c.User, c.DisplayName, c.AvatarURL)
			b.Queue(`UPDATE user_directory SET in_public_room = `+inPublicRoom+` WHERE user_id = $1`, c.User)
		case c.Membership:
			b.Queue(`DELETE FROM user_directory_rooms WHERE user_id = $1 AND room_id = $2`, c.User, c.Room)
			b.Queue(`UPDATE user_directory SET in_public_room = `+inPublicRoom+` WHERE user_id = $1`, c.User)
		case c.PublicJoin != nil || c.WorldReadable != nil:
			column, value := "public_join", c.PublicJoin
			if c.WorldReadable != nil {
				column, value = "world_readable", c.WorldReadable
			}
			b.Queue(`INSERT INTO user_directory_rooms_public (room_id, `+column+`) VALUES ($1, $2)
				ON CONFLICT (room_id) DO UPDATE SET `+column+` = excluded.`+column, c.Room, *value)
			b.Queue(`UPDATE user_directory d SET in_public_room = `+strings.ReplaceAll(inPublicRoom, "$1", "d.user_id")+`
				WHERE d.user_id IN (SELECT user_id FROM user_directory_rooms WHERE room_id = $1)`, c.Room)
		}
	}
	b.Queue(`INSERT INTO stream_positions (stream_name, instance_name, stream_id) VALUES ($1, $2, $3)
		ON CONFLICT (stream_name, instance_name) DO UPDATE SET stream_id = greatest(stream_positions.stream_id, excluded.stream_id)`,
		Stream, instance, int64(pos))
	if err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, b).Close() }); err != nil {
		return fmt.Errorf("userdir: apply: %w", err)
	}
	return nil
}

// inPublicRoom tells whether user $1 is in a room anyone may find the members of.
const inPublicRoom = `EXISTS (SELECT 1 FROM user_directory_rooms r JOIN user_directory_rooms_public p USING (room_id)
	WHERE r.user_id = $1 AND (p.public_join OR p.world_readable))`

// Result is one user a search found.
type Result struct {
	UserID      string  `json:"user_id"`
	DisplayName *string `json:"display_name,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
}

// Query is a search of the directory.
type Query struct {
	// Searcher sees the users who share a room with them and those in rooms anyone
	// may find (public join rule, or world-readable history); with All, every user in
	// the directory and every local user (user_directory.search_all_users).
	Searcher string
	All      bool
	Term     string
	Limit    int
	// ServerName ranks local users first.
	ServerName string
}

// Search returns the users matching q.Term, best first, at most q.Limit, and whether
// more matched. Every word of the term must be the start of a word of the user's ID or
// display name. Deactivated users are not found. Users whose localpart or display name is the term come first, then local
// users, then by rank of the match, then by name.
func (s Store) Search(ctx context.Context, q Query) ([]Result, bool, error) {
	words := TermWords(q.Term)
	if len(words) == 0 {
		return []Result{}, false, nil
	}
	for i, w := range words {
		words[i] = w + ":*"
	}
	// The users sharing a room with the searcher are few: the members of their rooms,
	// read through the room index; users in public rooms are flagged. Searching all
	// users also finds local users in no room (not in the directory), through the
	// indexes on their user IDs' and display names' words.
	rows, err := s.Pool.Query(ctx, `WITH q AS (SELECT to_tsquery('simple', $2) AS q),
		found AS (
			SELECT d.user_id, d.display_name, d.avatar_url, d.search
			FROM user_directory d, q
			WHERE d.search @@ q.q AND ($3 OR d.in_public_room OR d.user_id IN (
				SELECT r.user_id FROM user_directory_rooms r
				WHERE r.room_id IN (SELECT room_id FROM user_directory_rooms WHERE user_id = $1)))
			UNION ALL
			SELECT u.user_id, p.displayname, p.avatar_url,
				to_tsvector('simple'::regconfig, regexp_replace(u.user_id, '[^[:alnum:]]+', ' ', 'g') || ' ' || coalesce(p.displayname, ''))
			FROM (SELECT u.user_id FROM users u, q
					WHERE to_tsvector('simple'::regconfig, regexp_replace(u.user_id, '[^[:alnum:]]+', ' ', 'g')) @@ q.q
				UNION SELECT p.user_id FROM profiles p, q
					WHERE to_tsvector('simple'::regconfig, coalesce(p.displayname, '')) @@ q.q) m
			JOIN users u USING (user_id) LEFT JOIN profiles p USING (user_id)
			WHERE $3 AND NOT EXISTS (SELECT 1 FROM user_directory d WHERE d.user_id = u.user_id)
		)
		SELECT f.user_id, f.display_name, f.avatar_url
		FROM found f, q
		WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = f.user_id AND u.deactivated)
		ORDER BY (lower(f.display_name) = $4 OR lower(split_part(substr(f.user_id, 2), ':', 1)) = $4) DESC,
			(f.user_id LIKE '%:' || $5) DESC, ts_rank_cd(f.search, q.q) DESC, f.display_name NULLS LAST, f.user_id
		LIMIT $6`, q.Searcher, strings.Join(words, " & "), q.All, strings.ToLower(strings.TrimSpace(q.Term)), q.ServerName, q.Limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("userdir: search: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Result, error) {
		var r Result
		return r, row.Scan(&r.UserID, &r.DisplayName, &r.AvatarURL)
	})
	if err != nil {
		return nil, false, fmt.Errorf("userdir: search: %w", err)
	}
	if len(out) > q.Limit {
		return out[:q.Limit], true, nil
	}
	return out, false, nil
}

// TermWords splits a search term into the words the directory matches: runs of
// letters and digits, lowercased, at most 10 of them.
func TermWords(term string) []string {
	words := strings.FieldsFunc(strings.ToLower(term), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
	return words[:min(len(words), 10)]
}
