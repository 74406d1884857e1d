package e2ekeys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/ganglionhq/ganglion/schemas"
)

// Backup is one live key backup version with the number of keys it holds.
type Backup struct {
	Version   int64
	Algorithm string
	AuthData  json.RawMessage
	ETag      int64
	Count     int64
}

// CurrentBackup returns the user's newest live backup version, or ErrNotFound.
func (s Store) CurrentBackup(ctx context.Context, user string) (Backup, error) {
	return s.backup(ctx, `WHERE v.user_id = $1 AND NOT v.deleted ORDER BY v.version DESC LIMIT 1`, user)
}

// BackupVersion returns one live backup version of the user, or ErrNotFound.
func (s Store) BackupVersion(ctx context.Context, user string, version int64) (Backup, error) {
	return s.backup(ctx, `WHERE v.user_id = $1 AND v.version = $2 AND NOT v.deleted`, user, version)
}

func (s Store) backup(ctx context.Context, where string, args ...any) (Backup, error) {
	var b Backup
	var auth string
	err := s.DB.QueryRow(ctx, `SELECT v.version, v.algorithm, v.auth_data, v.etag,
			(SELECT count(*) FROM e2e_room_keys k WHERE k.user_id = v.user_id AND k.version = v.version)
		FROM e2e_room_keys_versions v `+where, args...).Scan(&b.Version, &b.Algorithm, &auth, &b.ETag, &b.Count)
	if errors.Is(err, pgx.ErrNoRows) {
		return b, ErrNotFound
	}
	if err != nil {
		return b, fmt.Errorf("e2ekeys: backup version: %w", err)
	}
	b.AuthData = json.RawMessage(auth)
	return b, nil
}

// LastBackupVersion returns the highest version number the user ever had, deleted or
// not (0 for none): new versions are numbered past it.
func (s Store) LastBackupVersion(ctx context.Context, user string) (int64, error) {
	var v int64
	err := s.DB.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM e2e_room_keys_versions WHERE user_id = $1`, user).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("e2ekeys: last backup version: %w", err)
	}
	return v, nil
}

// BackupKeys returns the session keys of a backup version, all of them or those of
// room (and session).
func (s Store) BackupKeys(ctx context.Context, user string, version int64, room, session string) ([]schemas.BackupKey, error) {
	rows, err := s.DB.Query(ctx, `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
		FROM e2e_room_keys WHERE user_id = $1 AND version = $2 AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4)
		ORDER BY room_id, session_id`, user, version, room, session)
	if err != nil {
		return nil, fmt.Errorf("e2ekeys: backup keys: %w", err)
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (schemas.BackupKey, error) {
		var k schemas.BackupKey
		var data string
		err := row.Scan(&k.Room, &k.Session, &k.FirstMessageIndex, &k.ForwardedCount, &k.IsVerified, &data)
		k.SessionData = json.RawMessage(data)
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("e2ekeys: backup keys: %w", err)
	}
	return keys, nil
}

// BackupSessions returns the stored keys of the given (room, session) pairs of a backup
// version, keyed by room and session.
func (s Store) BackupSessions(ctx context.Context, user string, version int64, rooms, sessions []string) (map[[2]string]schemas.BackupKey, error) {
	rows, err := s.DB.Query(ctx, `SELECT k.room_id, k.session_id, k.first_message_index, k.forwarded_count, k.is_verified
		FROM e2e_room_keys k JOIN unnest($3::text[], $4::text[]) AS q(room_id, session_id)
			ON q.room_id = k.room_id AND q.session_id = k.session_id
		WHERE k.user_id = $1 AND k.version = $2`, user, version, rooms, sessions)
	if err != nil {
		return nil, fmt.Errorf("e2ekeys: backup sessions: %w", err)
	}
	defer rows.Close()
	out := map[[2]string]schemas.BackupKey{}
	for rows.Next() {
		var k schemas.BackupKey
		if err := rows.Scan(&k.Room, &k.Session, &k.FirstMessageIndex, &k.ForwardedCount, &k.IsVerified); err != nil {
			return nil, fmt.Errorf("e2ekeys: backup sessions: %w", err)
		}
		out[[2]string{k.Room, k.Session}] = k
	}
	return out, rows.Err()
}

// DeletedBackupVersion reports whether the user had the version and deleted it.
func (s Store) DeletedBackupVersion(ctx context.Context, user string, version int64) (bool, error) {
	var ok bool
	err := s.DB.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM e2e_room_keys_versions
		WHERE user_id = $1 AND version = $2 AND deleted)`, user, version).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("e2ekeys: deleted backup version: %w", err)
	}
	return ok, nil
}
