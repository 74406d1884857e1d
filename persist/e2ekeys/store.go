package e2ekeys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNotFound is returned for keys or backups that do not exist.
var ErrNotFound = errors.New("e2ekeys: not found")

// Querier is what the store reads through: the pool, or the transaction in which a
// writer sees the records of its batch before they are appended.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Store reads the projection.
type Store struct{ DB Querier }

// DeviceKeys returns a device's stored keys object, as uploaded, or ErrNotFound.
func (s Store) DeviceKeys(ctx context.Context, user, device string) (json.RawMessage, error) {
	var keys string
	err := s.DB.QueryRow(ctx, `SELECT key_json FROM e2e_device_keys WHERE user_id = $1 AND device_id = $2`,
		user, device).Scan(&keys)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("e2ekeys: device keys: %w", err)
	}
	return json.RawMessage(keys), nil
}

// OneTimeKeys returns, of the key ids ("<algorithm>:<id>") asked for, those a device
// holds, with their keys.
func (s Store) OneTimeKeys(ctx context.Context, user, device string, ids []string) (map[string]json.RawMessage, error) {
	rows, err := s.DB.Query(ctx, `SELECT algorithm || ':' || key_id, key_json FROM e2e_one_time_keys
		WHERE user_id = $1 AND device_id = $2 AND algorithm || ':' || key_id = ANY($3)`, user, device, ids)
	if err != nil {
		return nil, fmt.Errorf("e2ekeys: one-time keys: %w", err)
	}
	return collectKeys(rows)
}

// FallbackKeys returns a device's fallback keys by "<algorithm>:<id>".
func (s Store) FallbackKeys(ctx context.Context, user, device string) (map[string]json.RawMessage, error) {
	rows, err := s.DB.Query(ctx, `SELECT algorithm || ':' || key_id, key_json FROM e2e_fallback_keys
		WHERE user_id = $1 AND device_id = $2`, user, device)
	if err != nil {
		return nil, fmt.Errorf("e2ekeys: fallback keys: %w", err)
	}
	return collectKeys(rows)
}

func collectKeys(rows pgx.Rows) (map[string]json.RawMessage, error) {
	out := map[string]json.RawMessage{}
	for rows.Next() {
		var id, key string
		if err := rows.Scan(&id, &key); err != nil {
			rows.Close()
			return nil, err
		}
		out[id] = json.RawMessage(key)
	}
	return out, rows.Err()
}

// OldestOneTimeKey returns the one-time key of an algorithm a device uploaded first, or
// ErrNotFound when it has none left.
func (s Store) OldestOneTimeKey(ctx context.Context, user, device, algorithm string) (id string, key json.RawMessage, err error) {
	var kid, js string
	err = s.DB.QueryRow(ctx, `SELECT key_id, key_json FROM e2e_one_time_keys
		WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 ORDER BY stream_id, key_id LIMIT 1`,
		user, device, algorithm).Scan(&kid, &js)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil, ErrNotFound
	}
	if err != nil {
		return "", nil, fmt.Errorf("e2ekeys: claim one-time key: %w", err)
	}
	return algorithm + ":" + kid, json.RawMessage(js), nil
}

// FallbackKey returns a device's fallback key of an algorithm, used or not.
func (s Store) FallbackKey(ctx context.Context, user, device, algorithm string) (id string, key json.RawMessage, err error) {
	var kid, js string
	err = s.DB.QueryRow(ctx, `SELECT key_id, key_json FROM e2e_fallback_keys
		WHERE user_id = $1 AND device_id = $2 AND algorithm = $3`, user, device, algorithm).Scan(&kid, &js)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil, ErrNotFound
	}
	if err != nil {
		return "", nil, fmt.Errorf("e2ekeys: fallback key: %w", err)
	}
	return algorithm + ":" + kid, json.RawMessage(js), nil
}

// KeyCounts are what /sync and /keys/upload tell a device about its keys.
type KeyCounts struct {
	// OneTimeKeys counts the unclaimed one-time keys by algorithm.
	OneTimeKeys map[string]int
	// UnusedFallback lists the algorithms of fallback keys not yet claimed.
	UnusedFallback []string
}

// Counts returns a device's key counts in one round trip. signed_curve25519 is always
// counted, as Synapse does, so clients see a zero rather than nothing.
func (s Store) Counts(ctx context.Context, user, device string) (KeyCounts, error) {
	c := KeyCounts{OneTimeKeys: map[string]int{"signed_curve25519": 0}, UnusedFallback: []string{}}
	rows, err := s.DB.Query(ctx, `SELECT algorithm, count(*), false FROM e2e_one_time_keys
			WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm
		UNION ALL
		SELECT algorithm, 0, true FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = $2 AND NOT used
		ORDER BY 1`, user, device)
	if err != nil {
		return c, fmt.Errorf("e2ekeys: key counts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var alg string
		var n int
		var fallback bool
		if err := rows.Scan(&alg, &n, &fallback); err != nil {
			return c, fmt.Errorf("e2ekeys: key counts: %w", err)
		}
		if fallback {
			c.UnusedFallback = append(c.UnusedFallback, alg)
		} else {
			c.OneTimeKeys[alg] = n
		}
	}
	return c, rows.Err()
}

// CrossSigningKey returns a user's cross-signing key of a type, as uploaded.
func (s Store) CrossSigningKey(ctx context.Context, user, keyType string) (json.RawMessage, error) {
	var js string
	err := s.DB.QueryRow(ctx, `SELECT key_json FROM e2e_cross_signing_keys WHERE user_id = $1 AND key_type = $2`,
		user, keyType).Scan(&js)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("e2ekeys: cross-signing key: %w", err)
	}
	return json.RawMessage(js), nil
}

// UserDeviceKeys returns every stored device keys object of a user, by device.
func (s Store) UserDeviceKeys(ctx context.Context, user string) (map[string]json.RawMessage, error) {
	rows, err := s.DB.Query(ctx, `SELECT device_id, key_json FROM e2e_device_keys WHERE user_id = $1`, user)
	if err != nil {
		return nil, fmt.Errorf("e2ekeys: device keys of user: %w", err)
	}
	return collectKeys(rows)
}

// HasSignature reports whether signer's key keyID has signed target of targetUser.
func (s Store) HasSignature(ctx context.Context, signer, keyID, targetUser, target string) (bool, error) {
	var ok bool
	err := s.DB.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM e2e_cross_signing_signatures
		WHERE target_user_id = $1 AND target_id = $2 AND user_id = $3 AND key_id = $4)`,
		targetUser, target, signer, keyID).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("e2ekeys: signature: %w", err)
	}
	return ok, nil
}

// HasKeys reports whether any of a user's devices has keys stored: identity, one-time
// or fallback keys. A device without any is not in anyone's view of the user's devices.
func (s Store) HasKeys(ctx context.Context, user string, devices []string) (bool, error) {
	var ok bool
	err := s.DB.QueryRow(ctx, `SELECT
		EXISTS (SELECT 1 FROM e2e_device_keys WHERE user_id = $1 AND device_id = ANY($2))
		OR EXISTS (SELECT 1 FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = ANY($2))
		OR EXISTS (SELECT 1 FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = ANY($2))`, user, devices).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("e2ekeys: has keys: %w", err)
	}
	return ok, nil
}
