// Package accounts stores the projection of the accounts stream: users and their
// password hashes, devices, access tokens (hashed), profiles, filters, forgotten rooms
// and the room directory, and reads what the stream's writer decides on (and the
// refresh tokens POST /refresh looks up). Other reads of these tables (access token
// lookups, profiles, aliases) are in package persist.
package accounts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ganglionhq/ganglion/schemas"
)

// Project stores records appended at positions seqs, in order, in tx. Every statement
// is guarded by the position of the row it changes, so projecting a record again (a
// replay into a database that has it) never undoes a later one, and by the rows it
// needs (a device needs its user), so no record can fail on a foreign key and stall
// the writer.
func Project(ctx context.Context, tx pgx.Tx, recs []*schemas.AccountsRecord, seqs []uint64) error {
	b := &pgx.Batch{}
	for i, r := range recs {
		queue(b, r, int64(seqs[i]))
	}
	if b.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("accounts: project: %w", err)
	}
	return nil
}

// queue adds the statements of one record.
func queue(b *pgx.Batch, r *schemas.AccountsRecord, s int64) {
	ts := time.UnixMilli(r.TS)
	switch r.Kind {
	case schemas.AccountUserCreated:
		b.Queue(`INSERT INTO users (user_id, password_hash, created_at, admin, stream_id) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (user_id) DO NOTHING`, r.User, nullable(r.PasswordHash), ts, r.Admin, s)
		if n, ok := generatedLocalpart(r.User); ok {
			// The next generated localpart comes after every one taken, also after a
			// replay into a fresh database, whose sequence starts at 1.
			b.Queue(`SELECT setval('user_localpart_seq', greatest($1, (SELECT last_value FROM user_localpart_seq)))`, n)
		}
		if r.Device != "" {
			queueDevice(b, r, s, ts)
		}
	case schemas.AccountPasswordChanged:
		b.Queue(`UPDATE users SET password_hash = $2, stream_id = $3 WHERE user_id = $1 AND stream_id < $3`,
			r.User, nullable(r.PasswordHash), s)
	case schemas.AccountAdminSet:
		b.Queue(`UPDATE users SET admin = $2, stream_id = $3 WHERE user_id = $1 AND stream_id < $3`, r.User, r.Admin, s)
	case schemas.AccountUserDeactivated:
		b.Queue(`UPDATE users SET password_hash = NULL, deactivated = true, erased = erased OR $3, stream_id = $2
			WHERE user_id = $1 AND stream_id < $2`, r.User, s, r.Erase)
		b.Queue(`DELETE FROM openid_tokens WHERE user_id = $1 AND stream_id < $2`, r.User, s)
		b.Queue(`DELETE FROM devices WHERE user_id = $1 AND stream_id < $2`, r.User, s)
		queueDeletePushers(b, s, `user_id = $1`, r.User)
	case schemas.AccountDeviceCreated:
		queueDevice(b, r, s, ts)
	case schemas.AccountTokenAdded:
		// A login is activity: the device was seen when it logged in.
		b.Queue(`UPDATE devices SET last_seen = greatest(last_seen, $3), stream_id = $4
			WHERE user_id = $1 AND device_id = $2 AND stream_id < $4`, r.User, r.Device, ts, s)
		queueToken(b, r, s, ts)
	case schemas.AccountDevicesDeleted:
		// Their tokens go with them (ON DELETE CASCADE), and so do their pushers.
		b.Queue(`DELETE FROM devices WHERE user_id = $1 AND device_id = ANY($2) AND stream_id < $3`, r.User, r.Devices, s)
		queueDeletePushers(b, s, `user_id = $1 AND device_id = ANY($2)`, r.User, r.Devices)
	case schemas.AccountDeviceRenamed:
		b.Queue(`UPDATE devices SET display_name = $3, stream_id = $4 WHERE user_id = $1 AND device_id = $2 AND stream_id < $4`,
			r.User, r.Device, r.DisplayName, s)
	case schemas.AccountProfileSet:
		// A user without a profile row gets one, with their localpart as display name
		// unless that is the field set. r.Field is one of two constants (DecodeAccounts).
		name, avatar := DefaultDisplayName(r.User), (*string)(nil)
		if r.Field == schemas.ProfileDisplayName {
			name = r.Value
		} else {
			avatar = r.Value
		}
		b.Queue(`INSERT INTO profiles (user_id, displayname, avatar_url, stream_id)
			SELECT $1::text, $2::text, $3::text, $4::bigint WHERE EXISTS (SELECT 1 FROM users WHERE user_id = $1)
			ON CONFLICT (user_id) DO UPDATE SET `+r.Field+` = excluded.`+r.Field+`, stream_id = excluded.stream_id
			WHERE profiles.stream_id < excluded.stream_id`, r.User, name, avatar, s)
	case schemas.AccountFilterCreated:
		b.Queue(`INSERT INTO filters (user_id, filter_id, filter, stream_id)
			SELECT $1::text, $2::bigint, $3::jsonb, $4::bigint WHERE EXISTS (SELECT 1 FROM users WHERE user_id = $1)
			ON CONFLICT (user_id, filter_id) DO NOTHING`, r.User, r.FilterID, string(r.Filter), s)
	case schemas.AccountRoomForgotten:
		b.Queue(`INSERT INTO forgotten_rooms (user_id, room_id, event_id, stream_id) VALUES ($1, $2, $3, $4)
			ON CONFLICT (user_id, room_id) DO UPDATE SET event_id = excluded.event_id, stream_id = excluded.stream_id
			WHERE forgotten_rooms.stream_id < excluded.stream_id`, r.User, r.Room, r.EventID, s)
	case schemas.AccountAliasCreated, schemas.AccountAliasClaimed:
		b.Queue(`INSERT INTO room_aliases (alias, room_id, creator, claimed_at, stream_id) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (alias) DO UPDATE SET room_id = excluded.room_id, creator = excluded.creator,
				claimed_at = excluded.claimed_at, stream_id = excluded.stream_id
			WHERE room_aliases.stream_id < excluded.stream_id`, r.Alias, r.Room, r.User, ts, s)
	case schemas.AccountAliasReleased:
		b.Queue(`DELETE FROM room_aliases WHERE alias = $1 AND room_id = $2 AND stream_id < $3`, r.Alias, r.Room, s)
	case schemas.AccountAliasDeleted:
		b.Queue(`DELETE FROM room_aliases WHERE alias = $1 AND stream_id < $2`, r.Alias, s)
	case schemas.AccountRoomListed:
		b.Queue(`INSERT INTO room_directory (room_id, public, stream_id) VALUES ($1, $2, $3)
			ON CONFLICT (room_id) DO UPDATE SET public = excluded.public, stream_id = excluded.stream_id
			WHERE room_directory.stream_id < excluded.stream_id`, r.Room, r.Public, s)
	case schemas.AccountContentReported:
		// The report's ID is its stream position: a replay gives it the same.
		b.Queue(`INSERT INTO content_reports (id, received_at, reporter, room_id, event_id, reason, score)
			VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING`,
			s, ts, r.User, r.Room, nullable(r.EventID), nullable(r.Reason), r.Score)
	case schemas.AccountOpenIDTokenCreated:
		// Tokens expired when this one was made go: the table holds the live ones.
		b.Queue(`DELETE FROM openid_tokens WHERE expires_at < $1`, ts)
		b.Queue(`INSERT INTO openid_tokens (token_hash, user_id, expires_at, stream_id) VALUES ($1, $2, $3, $4)
			ON CONFLICT (token_hash) DO NOTHING`, r.TokenHash, r.User, time.UnixMilli(r.Expires), s)
	case schemas.AccountRoomBlocked:
		b.Queue(`INSERT INTO blocked_rooms (room_id, blocked_by, stream_id) VALUES ($1, $2, $3) ON CONFLICT (room_id) DO NOTHING`,
			r.Room, r.User, s)
	case schemas.AccountPusherSet:
		queuePusher(b, r, s)
	case schemas.AccountPusherDeleted:
		queueDeletePushers(b, s, `user_id = $1 AND app_id = $2 AND pushkey = $3`, r.User, r.Pusher.AppID, r.Pusher.Pushkey)
	case schemas.AccountMediaReserved:
		b.Queue(`INSERT INTO media (media_id, user_id, created_at, expires_at, authenticated, stream_id)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (media_id) DO NOTHING`,
			r.Media.ID, r.User, ts, time.UnixMilli(r.Media.Expires), r.Media.Authenticated, s)
	case schemas.AccountMediaDeleted:
		// Content no other media names is an orphan: the media jobs delete its file
		// once no upload of the same bytes can be in flight.
		b.Queue(`WITH gone AS (DELETE FROM media WHERE media_id = $1 AND user_id = $2 AND stream_id < $3 RETURNING sha256)
			INSERT INTO media_orphans (sha256, since)
			SELECT g.sha256, $4::timestamptz FROM gone g
			WHERE g.sha256 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM media m WHERE m.sha256 = g.sha256 AND m.media_id <> $1)
			ON CONFLICT (sha256) DO UPDATE SET since = excluded.since`, r.Media.ID, r.User, s, ts)
	case schemas.AccountMediaUploaded:
		// An upload into a reservation keeps the reservation's creation time.
		m := r.Media
		b.Queue(`INSERT INTO media (media_id, user_id, created_at, content_type, upload_name, size, sha256, authenticated, stream_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
			ON CONFLICT (media_id) DO UPDATE SET expires_at = NULL, content_type = excluded.content_type,
				upload_name = excluded.upload_name, size = excluded.size, sha256 = excluded.sha256,
				authenticated = excluded.authenticated, stream_id = excluded.stream_id
			WHERE media.stream_id < excluded.stream_id`,
			m.ID, r.User, ts, m.ContentType, nullable(m.UploadName), m.Size, m.SHA256, m.Authenticated, s)
		// Content named again is no orphan.
		b.Queue(`DELETE FROM media_orphans WHERE sha256 = $1`, m.SHA256)
	}
	var answer *string
	if a := schemas.AccountsAnswer(r); a != nil {
		text := string(a)
		answer = &text
	}
	b.Queue(`INSERT INTO account_writes (write_id, stream_id, answer) VALUES ($1, $2, $3::jsonb)
		ON CONFLICT (write_id) DO NOTHING`, r.Write, s, answer)
}

// queueDevice creates (or, projected again, takes back) a device with its first token.
func queueDevice(b *pgx.Batch, r *schemas.AccountsRecord, s int64, ts time.Time) {
	b.Queue(`INSERT INTO devices (user_id, device_id, display_name, created_at, last_seen, stream_id)
		SELECT $1::text, $2::text, $3::text, $4::timestamptz, $4::timestamptz, $5::bigint WHERE EXISTS (SELECT 1 FROM users WHERE user_id = $1)
		ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = excluded.display_name,
			created_at = excluded.created_at, last_seen = excluded.last_seen, stream_id = excluded.stream_id
		WHERE devices.stream_id < excluded.stream_id`, r.User, r.Device, r.DisplayName, ts, s)
	queueToken(b, r, s, ts)
}

// queueToken makes r.TokenHash the device's only token. The pushers set with the
// device's earlier tokens go with them, as Synapse removes a pusher with its token.
func queueToken(b *pgx.Batch, r *schemas.AccountsRecord, s int64, ts time.Time) {
	b.Queue(`DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2 AND stream_id < $3`, r.User, r.Device, s)
	b.Queue(`DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2 AND stream_id < $3`, r.User, r.Device, s)
	queueDeletePushers(b, s, `user_id = $1 AND device_id = $2`, r.User, r.Device)
	var expires *time.Time
	if r.Expires > 0 {
		e := time.UnixMilli(r.Expires)
		expires = &e
	}
	b.Queue(`INSERT INTO access_tokens (token_hash, user_id, device_id, created_at, expires_at, stream_id)
		SELECT $1::bytea, $2::text, $3::text, $4::timestamptz, $5::timestamptz, $6::bigint WHERE EXISTS (SELECT 1 FROM devices WHERE user_id = $2 AND device_id = $3)
		ON CONFLICT (token_hash) DO NOTHING`, r.TokenHash, r.User, r.Device, ts, expires, s)
	if r.RefreshHash != nil {
		b.Queue(`INSERT INTO refresh_tokens (token_hash, user_id, device_id, stream_id)
			SELECT $1::bytea, $2::text, $3::text, $4::bigint WHERE EXISTS (SELECT 1 FROM devices WHERE user_id = $2 AND device_id = $3)
			ON CONFLICT (token_hash) DO NOTHING`, r.RefreshHash, r.User, r.Device, s)
	}
}

// queuePusher sets a pusher. Without append, the pushkey becomes the user's: every
// other user's pusher of it set before goes, and so does any set before that is
// projected later (writers of other users project in their own time), which the
// claim makes the same as projecting in log order. A device's later writes (its
// deletion, a new token) make a record projected again store nothing, so it cannot
// bring back a pusher they removed.
func queuePusher(b *pgx.Batch, r *schemas.AccountsRecord, s int64) {
	p := r.Pusher
	if !r.Append {
		b.Queue(`INSERT INTO pushkey_claims (app_id, pushkey, user_id, stream_id) VALUES ($1, $2, $3, $4)
			ON CONFLICT (app_id, pushkey) DO UPDATE SET user_id = excluded.user_id, stream_id = excluded.stream_id
			WHERE pushkey_claims.stream_id < excluded.stream_id`, p.AppID, p.Pushkey, r.User, s)
		b.Queue(`DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3 AND stream_id < $4`,
			p.AppID, p.Pushkey, r.User, s)
	}
	b.Queue(`INSERT INTO pushers (user_id, app_id, pushkey, device_id, kind, app_display_name, device_display_name,
			profile_tag, lang, data, pushkey_ts, stream_id)
		SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text, $8::text, $9::text, $10::json, $11::bigint, $12::bigint
		WHERE EXISTS (SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $4 AND stream_id < $12)
			AND NOT EXISTS (SELECT 1 FROM pushkey_claims c WHERE c.app_id = $2 AND c.pushkey = $3 AND c.user_id <> $1 AND c.stream_id > $12)
			AND NOT EXISTS (SELECT 1 FROM pusher_tombstones d WHERE d.user_id = $1 AND d.app_id = $2 AND d.pushkey = $3 AND d.stream_id > $12)
		ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET device_id = excluded.device_id, kind = excluded.kind,
			app_display_name = excluded.app_display_name, device_display_name = excluded.device_display_name,
			profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data,
			pushkey_ts = excluded.pushkey_ts, stream_id = excluded.stream_id
		WHERE pushers.stream_id < excluded.stream_id`,
		r.User, p.AppID, p.Pushkey, r.Device, p.Kind, p.AppDisplayName, p.DeviceDisplayName, p.ProfileTag, p.Lang,
		string(p.Data), r.TS, s)
}

// queueDeletePushers deletes the pushers that match where (over args) and were set
// before position s, and leaves a tombstone of each at s, so that their sets projected
// again (a replay into a database that has the rows) store nothing. Within a user,
// records project in log order, so only rows a deletion found need one.
func queueDeletePushers(b *pgx.Batch, s int64, where string, args ...any) {
	pos := "$" + strconv.Itoa(len(args)+1)
	b.Queue(`WITH gone AS (DELETE FROM pushers WHERE `+where+` AND stream_id < `+pos+`
			RETURNING user_id, app_id, pushkey)
		INSERT INTO pusher_tombstones (user_id, app_id, pushkey, stream_id)
		SELECT user_id, app_id, pushkey, `+pos+` FROM gone
		ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET stream_id = GREATEST(pusher_tombstones.stream_id, excluded.stream_id)`,
		append(args, s)...)
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// generatedLocalpart returns the number of a user ID whose localpart is one, as
// generated localparts are (clients may not register numeric ones).
func generatedLocalpart(userID string) (int64, bool) {
	local, _, _ := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	n, err := strconv.ParseInt(local, 10, 64)
	return n, err == nil && n > 0
}

// DefaultDisplayName is the display name of a user who never set one: their localpart.
func DefaultDisplayName(userID string) *string {
	local, _, _ := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	return &local
}

// Store reads what the accounts writer decides on.
type Store struct{ Pool *pgxpool.Pool }

// KnownWrites returns, of ids, the writes already projected, with their answers.
func (s Store) KnownWrites(ctx context.Context, ids []string) (map[string]json.RawMessage, error) {
	rows, err := s.Pool.Query(ctx, `SELECT write_id, answer FROM account_writes WHERE write_id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("accounts: known writes: %w", err)
	}
	out := map[string]json.RawMessage{}
	var id string
	var answer []byte
	_, err = pgx.ForEachRow(rows, []any{&id, &answer}, func() error {
		out[id] = json.RawMessage(answer)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("accounts: known writes: %w", err)
	}
	return out, nil
}

// User reports whether user exists, and its devices.
func (s Store) User(ctx context.Context, user string) (exists bool, devices []string, err error) {
	err = s.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE user_id = $1),
		array(SELECT device_id FROM devices WHERE user_id = $1)`, user).Scan(&exists, &devices)
	if err != nil {
		return false, nil, fmt.Errorf("accounts: read user: %w", err)
	}
	return exists, devices, nil
}

// Filter returns the ID of the user's stored filter equal (as JSON) to filter, if
// any, and the ID the user's next filter takes.
func (s Store) Filter(ctx context.Context, user string, filter json.RawMessage) (id *int64, next int64, err error) {
	err = s.Pool.QueryRow(ctx, `SELECT
		(SELECT filter_id FROM filters WHERE user_id = $1 AND filter = $2::jsonb ORDER BY filter_id LIMIT 1),
		(SELECT coalesce(max(filter_id) + 1, 0) FROM filters WHERE user_id = $1)`, user, string(filter)).Scan(&id, &next)
	if err != nil {
		return nil, 0, fmt.Errorf("accounts: read filters: %w", err)
	}
	return id, next, nil
}

// RefreshToken returns the user and device a refresh token (by its SHA-256) belongs to,
// or ErrNotFound.
func (s Store) RefreshToken(ctx context.Context, hash []byte) (user, device string, err error) {
	err = s.Pool.QueryRow(ctx, `SELECT user_id, device_id FROM refresh_tokens WHERE token_hash = $1`, hash).Scan(&user, &device)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", ErrNotFound
	}
	if err != nil {
		return "", "", fmt.Errorf("accounts: read refresh token: %w", err)
	}
	return user, device, nil
}

// MediaHolder is what the writer needs to know of stored media.
type MediaHolder struct {
	User     string
	Uploaded bool
	Expires  time.Time
}

// Media returns the holder of a media ID, or ErrNotFound.
func (s Store) Media(ctx context.Context, id string) (MediaHolder, error) {
	var h MediaHolder
	var expires *time.Time
	err := s.Pool.QueryRow(ctx, `SELECT user_id, sha256 IS NOT NULL, expires_at FROM media WHERE media_id = $1`, id).
		Scan(&h.User, &h.Uploaded, &expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return MediaHolder{}, ErrNotFound
	}
	if err != nil {
		return MediaHolder{}, fmt.Errorf("accounts: read media: %w", err)
	}
	if expires != nil {
		h.Expires = *expires
	}
	return h, nil
}

// PendingMedia counts the user's reservations that are unused and not lapsed at now.
func (s Store) PendingMedia(ctx context.Context, user string, now time.Time) (int, error) {
	var n int
	err := s.Pool.QueryRow(ctx, `SELECT count(*) FROM media WHERE user_id = $1 AND sha256 IS NULL AND expires_at > $2`,
		user, now).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("accounts: count pending media: %w", err)
	}
	return n, nil
}

// AliasHolder is the room an alias points to, as stored.
type AliasHolder struct {
	Room, Creator string
	ClaimedAt     time.Time
	// RoomExists is false while the room is being created, or when it never was.
	RoomExists bool
}

// ErrNotFound is returned for an alias nobody holds.
var ErrNotFound = errors.New("accounts: not found")

// Alias returns who holds alias, or ErrNotFound.
func (s Store) Alias(ctx context.Context, alias string) (AliasHolder, error) {
	var h AliasHolder
	err := s.Pool.QueryRow(ctx, `SELECT a.room_id, a.creator, a.claimed_at,
		EXISTS (SELECT 1 FROM rooms r WHERE r.room_id = a.room_id)
		FROM room_aliases a WHERE a.alias = $1`, alias).Scan(&h.Room, &h.Creator, &h.ClaimedAt, &h.RoomExists)
	if errors.Is(err, pgx.ErrNoRows) {
		return AliasHolder{}, ErrNotFound
	}
	if err != nil {
		return AliasHolder{}, fmt.Errorf("accounts: read alias: %w", err)
	}
	return h, nil
}
