// Package e2ekeys stores the projection of the device_lists stream: devices' identity
// keys, one-time and fallback keys, cross-signing keys and signatures, the device-list
// change log, and key backups.
package e2ekeys

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/ganglionhq/ganglion/schemas"
)

// SplitKeyID splits "<algorithm>:<key id>".
func SplitKeyID(id string) (algorithm, keyID string, ok bool) {
	algorithm, keyID, ok = strings.Cut(id, ":")
	return algorithm, keyID, ok && algorithm != "" && keyID != ""
}

// Project stores records appended at positions seqs, in order, in one round trip. Every
// statement is idempotent and replaces a row only with one of a later position, so
// projecting a record again, or replaying the whole log into an empty database, gives
// the same rows.
func Project(ctx context.Context, tx pgx.Tx, recs []*schemas.DeviceListRecord, seqs []uint64) error {
	var b pgx.Batch
	for i, r := range recs {
		if err := queue(&b, r, int64(seqs[i])); err != nil {
			return err
		}
	}
	if b.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("e2ekeys: project: %w", err)
	}
	return nil
}

// queue adds the statements of one record to b.
func queue(b *pgx.Batch, r *schemas.DeviceListRecord, pos int64) error {
	u := r.User
	switch r.Kind {
	case schemas.DeviceKeysSet:
		b.Queue(`INSERT INTO e2e_device_keys (user_id, device_id, key_json, stream_id) VALUES ($1, $2, $3, $4)
			ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json, stream_id = excluded.stream_id
			WHERE e2e_device_keys.stream_id < excluded.stream_id`, u, r.Device, string(r.DeviceKeys), pos)
	case schemas.OneTimeKeysAdded:
		for id, key := range r.Keys {
			alg, kid, ok := SplitKeyID(id)
			if !ok {
				return fmt.Errorf("e2ekeys: malformed one-time key id %q", id)
			}
			b.Queue(`INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json, stream_id)
				VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`, u, r.Device, alg, kid, string(key), pos)
		}
	case schemas.FallbackKeysSet:
		for id, key := range r.Keys {
			alg, kid, ok := SplitKeyID(id)
			if !ok {
				return fmt.Errorf("e2ekeys: malformed fallback key id %q", id)
			}
			b.Queue(`INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used, stream_id)
				VALUES ($1, $2, $3, $4, $5, false, $6)
				ON CONFLICT (user_id, device_id, algorithm) DO UPDATE
				SET key_id = excluded.key_id, key_json = excluded.key_json, used = false, stream_id = excluded.stream_id
				WHERE e2e_fallback_keys.stream_id < excluded.stream_id`, u, r.Device, alg, kid, string(key), pos)
		}
	case schemas.KeysClaimed:
		for _, c := range r.Claimed {
			alg, kid, ok := SplitKeyID(c.KeyID)
			if !ok {
				return fmt.Errorf("e2ekeys: malformed claimed key id %q", c.KeyID)
			}
			if c.Fallback {
				// Only the key that was claimed: a replacement uploaded since stays unused.
				b.Queue(`UPDATE e2e_fallback_keys SET used = true
					WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4 AND stream_id <= $5`,
					u, c.Device, alg, kid, pos)
			} else {
				b.Queue(`DELETE FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4`,
					u, c.Device, alg, kid)
			}
		}
	case schemas.CrossSigningKeysSet:
		for typ, key := range r.CrossSigning {
			b.Queue(`INSERT INTO e2e_cross_signing_keys (user_id, key_type, key_json, stream_id) VALUES ($1, $2, $3, $4)
				ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json, stream_id = excluded.stream_id
				WHERE e2e_cross_signing_keys.stream_id < excluded.stream_id`, u, typ, string(key), pos)
		}
	case schemas.SignaturesAdded:
		for _, s := range r.Signatures {
			b.Queue(`INSERT INTO e2e_cross_signing_signatures (user_id, key_id, target_user_id, target_id, signature, stream_id)
				VALUES ($1, $2, $3, $4, $5, $6)
				ON CONFLICT (target_user_id, target_id, user_id, key_id) DO UPDATE
				SET signature = excluded.signature, stream_id = excluded.stream_id
				WHERE e2e_cross_signing_signatures.stream_id < excluded.stream_id`,
				u, s.SigningKey, s.TargetUser, s.Target, s.Signature, pos)
		}
	case schemas.DeviceDeleted:
		// Rows written before the deletion go; a device created again with the same ID
		// after it keeps what it uploaded since.
		for _, table := range []string{"e2e_device_keys", "e2e_one_time_keys", "e2e_fallback_keys"} {
			b.Queue(`DELETE FROM `+table+` WHERE user_id = $1 AND device_id = $2 AND stream_id < $3`, u, r.Device, pos)
		}
		b.Queue(`DELETE FROM e2e_cross_signing_signatures WHERE target_user_id = $1 AND target_id = $2 AND stream_id < $3`,
			u, r.Device, pos)
	case schemas.DeviceChanged:
		// Nothing is stored but the change itself, below.
	case schemas.BackupVersionSet:
		v := r.Backup
		b.Queue(`INSERT INTO e2e_room_keys_versions (user_id, version, algorithm, auth_data, etag, deleted, stream_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (user_id, version) DO UPDATE
			SET algorithm = excluded.algorithm, auth_data = excluded.auth_data, etag = excluded.etag,
			    deleted = excluded.deleted, stream_id = excluded.stream_id
			WHERE e2e_room_keys_versions.stream_id < excluded.stream_id`,
			u, v.Version, v.Algorithm, string(v.AuthData), v.ETag, v.Deleted, pos)
		if v.Deleted {
			b.Queue(`DELETE FROM e2e_room_keys WHERE user_id = $1 AND version = $2 AND stream_id < $3`, u, v.Version, pos)
		}
	case schemas.BackupKeysSet:
		queueETag(b, r, pos)
		for _, k := range r.BackupKeys {
			b.Queue(`INSERT INTO e2e_room_keys (user_id, version, room_id, session_id, first_message_index,
					forwarded_count, is_verified, session_data, stream_id)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
				ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE
				SET first_message_index = excluded.first_message_index, forwarded_count = excluded.forwarded_count,
				    is_verified = excluded.is_verified, session_data = excluded.session_data, stream_id = excluded.stream_id
				WHERE e2e_room_keys.stream_id < excluded.stream_id`,
				u, r.Backup.Version, k.Room, k.Session, k.FirstMessageIndex, k.ForwardedCount, k.IsVerified, string(k.SessionData), pos)
		}
	case schemas.BackupKeysDeleted:
		queueETag(b, r, pos)
		b.Queue(`DELETE FROM e2e_room_keys WHERE user_id = $1 AND version = $2 AND stream_id < $5
			AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4)`,
			u, r.Backup.Version, r.Backup.Room, r.Backup.Session, pos)
	default:
		return fmt.Errorf("e2ekeys: unknown record kind %q", r.Kind)
	}
	for _, d := range r.Changed {
		b.Queue(`INSERT INTO device_list_changes (stream_id, user_id, device_id, viewer) VALUES ($1, $2, $3, '')
			ON CONFLICT DO NOTHING`, pos, u, d)
	}
	for _, target := range r.SignedUsers {
		b.Queue(`INSERT INTO device_list_changes (stream_id, user_id, device_id, viewer) VALUES ($1, $2, '', $3)
			ON CONFLICT DO NOTHING`, pos, target, u)
	}
	return nil
}

// queueETag moves a backup version's etag forward to the record's.
func queueETag(b *pgx.Batch, r *schemas.DeviceListRecord, pos int64) {
	b.Queue(`UPDATE e2e_room_keys_versions SET etag = $3, stream_id = $4
		WHERE user_id = $1 AND version = $2 AND stream_id < $4`, r.User, r.Backup.Version, r.Backup.ETag, pos)
}
