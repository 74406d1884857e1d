package persist

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// bcryptInput cuts a password to the 72 bytes bcrypt reads. Synapse's hashes were made the
// same way (its bcrypt ignored the rest), so hashes imported from Synapse keep verifying.
func bcryptInput(password string) []byte {
	b := []byte(password)
	if len(b) > 72 {
		b = b[:72]
	}
	return b
}

// UserExists reports whether userID is registered.
func (db *DB) UserExists(ctx context.Context, userID string) (bool, error) {
	var exists bool
	err := db.Pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM users WHERE user_id = $1)", userID).Scan(&exists)
	if err != nil {
		return false, fmt.Errorf("persist: user exists: %w", err)
	}
	return exists, nil
}

// CheckPassword returns nil when password is userID's password, ErrNotFound when the user
// does not exist and ErrWrongPassword otherwise (also for accounts without a password).
// Every answer costs one bcrypt comparison: without a stored hash, password is compared
// with a dummy hash of the configured cost, so the time a login takes does not tell
// whether the account exists.
func (db *DB) CheckPassword(ctx context.Context, userID, password string) error {
	var hash *string
	err := db.Pool.QueryRow(ctx, "SELECT password_hash FROM users WHERE user_id = $1", userID).Scan(&hash)
	unknown := errors.Is(err, pgx.ErrNoRows)
	if err != nil && !unknown {
		return fmt.Errorf("persist: read password hash: %w", err)
	}
	if hash == nil {
		if _, err := db.passwordMatches(ctx, db.dummyHash(), password); err != nil {
			return fmt.Errorf("persist: check password: %w", err)
		}
		if unknown {
			return ErrNotFound
		}
		return ErrWrongPassword
	}
	if ok, err := db.passwordMatches(ctx, []byte(*hash), password); err != nil {
		return fmt.Errorf("persist: check password: %w", err)
	} else if !ok {
		return ErrWrongPassword
	}
	return nil
}

// NextLocalpart returns a fresh numeric localpart for a registration that did not ask for
// a username. Numbers are never reused, but an imported account may already hold one, so
// a registration with it may still find it taken.
func (db *DB) NextLocalpart(ctx context.Context) (string, error) {
	var n int64
	if err := db.Pool.QueryRow(ctx, "SELECT nextval('user_localpart_seq')").Scan(&n); err != nil {
		return "", fmt.Errorf("persist: next localpart: %w", err)
	}
	return strconv.FormatInt(n, 10), nil
}

// LookupToken returns the user and device an access token (by its SHA-256) belongs to,
// and when it expires (zero for never), or ErrNotFound. It also records when and from
// where (ip, when known) the device was last seen, at most once a minute unless the
// address changed, in the same round trip, so tracking activity costs no extra query
// on the request path. An expired token is found; its caller refuses it.
func (db *DB) LookupToken(ctx context.Context, tokenHash []byte, ip string) (userID, deviceID string, expires time.Time, err error) {
	var exp *time.Time
	err = db.Pool.QueryRow(ctx, `WITH t AS (
			SELECT user_id, device_id, expires_at FROM access_tokens WHERE token_hash = $1
		), seen AS (
			UPDATE devices d SET last_seen = now(), last_seen_ip = coalesce(nullif($2, ''), d.last_seen_ip) FROM t
			WHERE d.user_id = t.user_id AND d.device_id = t.device_id
			  AND (d.last_seen < now() - interval '1 minute' OR ($2 <> '' AND d.last_seen_ip IS DISTINCT FROM $2))
		)
		SELECT user_id, device_id, expires_at FROM t`, tokenHash, ip).Scan(&userID, &deviceID, &exp)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", time.Time{}, ErrNotFound
	}
	if err != nil {
		return "", "", time.Time{}, fmt.Errorf("persist: look up access token: %w", err)
	}
	if exp != nil {
		expires = *exp
	}
	return userID, deviceID, expires, nil
}

// Device is a stored device of a user.
type Device struct {
	UserID      string
	DeviceID    string
	DisplayName string
	LastSeenMS  int64
	// LastSeenIP is "" until a request of the device was seen with a client address.
	LastSeenIP string
}

const deviceColumns = `device_id, coalesce(display_name, ''), (extract(epoch FROM last_seen) * 1000)::bigint,
	coalesce(last_seen_ip, '')`

func scanDevice(userID string) pgx.RowToFunc[Device] {
	return func(row pgx.CollectableRow) (Device, error) {
		d := Device{UserID: userID}
		return d, row.Scan(&d.DeviceID, &d.DisplayName, &d.LastSeenMS, &d.LastSeenIP)
	}
}

// Devices lists userID's devices, ordered by device ID.
func (db *DB) Devices(ctx context.Context, userID string) ([]Device, error) {
	rows, err := db.Pool.Query(ctx, `SELECT `+deviceColumns+` FROM devices WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("persist: list devices: %w", err)
	}
	devs, err := pgx.CollectRows(rows, scanDevice(userID))
	if err != nil {
		return nil, fmt.Errorf("persist: list devices: %w", err)
	}
	return devs, nil
}

// GetDevice returns one of userID's devices, or ErrNotFound.
func (db *DB) GetDevice(ctx context.Context, userID, deviceID string) (Device, error) {
	rows, err := db.Pool.Query(ctx, `SELECT `+deviceColumns+` FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID)
	if err != nil {
		return Device{}, fmt.Errorf("persist: get device: %w", err)
	}
	d, err := pgx.CollectExactlyOneRow(rows, scanDevice(userID))
	if errors.Is(err, pgx.ErrNoRows) {
		return Device{}, ErrNotFound
	}
	if err != nil {
		return Device{}, fmt.Errorf("persist: get device: %w", err)
	}
	return d, nil
}

// DeviceIDs returns the devices of each of users that has any.
func (db *DB) DeviceIDs(ctx context.Context, users []string) (map[string][]string, error) {
	rows, err := db.Pool.Query(ctx, "SELECT user_id, device_id FROM devices WHERE user_id = ANY($1) ORDER BY user_id, device_id", users)
	if err != nil {
		return nil, fmt.Errorf("persist: device ids: %w", err)
	}
	out := map[string][]string{}
	var u, d string
	if _, err := pgx.ForEachRow(rows, []any{&u, &d}, func() error {
		out[u] = append(out[u], d)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("persist: device ids: %w", err)
	}
	return out, nil
}

// uiaLifetime bounds how long a user-interactive auth session may be continued; Synapse
// uses the same 48 hours.
const uiaLifetime = "48 hours"

// CreateUIASession starts a user-interactive auth session for the operation kind (e.g.
// "register") and returns its ID: 128 random bits, unguessable by other clients.
// Expired sessions are swept here, so the table stays small without a background job.
func (db *DB) CreateUIASession(ctx context.Context, kind string) (string, error) {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	id := base64.RawURLEncoding.EncodeToString(b[:])
	if _, err := db.Pool.Exec(ctx, "DELETE FROM uia_sessions WHERE created_at < now() - $1::interval", uiaLifetime); err != nil {
		return "", fmt.Errorf("persist: sweep UIA sessions: %w", err)
	}
	if _, err := db.Pool.Exec(ctx, "INSERT INTO uia_sessions (session_id, kind) VALUES ($1, $2)", id, kind); err != nil {
		return "", fmt.Errorf("persist: create UIA session: %w", err)
	}
	return id, nil
}

// CompleteUIAStage records stage as completed in the session and returns every completed
// stage, in completion order. Completing a stage twice records it once. ErrNotFound when the
// session does not exist, has expired or belongs to another kind of operation.
func (db *DB) CompleteUIAStage(ctx context.Context, sessionID, kind, stage string) ([]string, error) {
	var completed []string
	err := db.Pool.QueryRow(ctx, `UPDATE uia_sessions
		SET completed = CASE WHEN $3 = ANY (completed) THEN completed ELSE array_append(completed, $3) END
		WHERE session_id = $1 AND kind = $2 AND created_at >= now() - $4::interval
		RETURNING completed`, sessionID, kind, stage, uiaLifetime).Scan(&completed)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("persist: complete UIA stage: %w", err)
	}
	return completed, nil
}

// UIASession returns the completed stages of a live session of the given kind, or
// ErrNotFound.
func (db *DB) UIASession(ctx context.Context, sessionID, kind string) ([]string, error) {
	var completed []string
	err := db.Pool.QueryRow(ctx, `SELECT completed FROM uia_sessions
		WHERE session_id = $1 AND kind = $2 AND created_at >= now() - $3::interval`,
		sessionID, kind, uiaLifetime).Scan(&completed)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("persist: read UIA session: %w", err)
	}
	return completed, nil
}

// DeleteUIASession ends a session once the operation it authorised is done, so it cannot
// authorise a second one.
func (db *DB) DeleteUIASession(ctx context.Context, sessionID string) error {
	if _, err := db.Pool.Exec(ctx, "DELETE FROM uia_sessions WHERE session_id = $1", sessionID); err != nil {
		return fmt.Errorf("persist: delete UIA session: %w", err)
	}
	return nil
}

// TakeUIASession deletes a session of kind younger than its lifetime and reports
// whether there was one: a single-use token (the admin API's registration nonces).
func (db *DB) TakeUIASession(ctx context.Context, sessionID, kind string) (bool, error) {
	tag, err := db.Pool.Exec(ctx, `DELETE FROM uia_sessions WHERE session_id = $1 AND kind = $2 AND created_at >= now() - $3::interval`,
		sessionID, kind, uiaLifetime)
	if err != nil {
		return false, fmt.Errorf("persist: take UIA session: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// GetFilter returns the JSON of userID's filter filterID, or ErrNotFound.
func (db *DB) GetFilter(ctx context.Context, userID string, filterID int64) ([]byte, error) {
	var filter []byte
	err := db.Pool.QueryRow(ctx, "SELECT filter FROM filters WHERE user_id = $1 AND filter_id = $2",
		userID, filterID).Scan(&filter)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("persist: read filter: %w", err)
	}
	return filter, nil
}

// ErasedUsers lists the users deactivated with erase.
func (db *DB) ErasedUsers(ctx context.Context) ([]string, error) {
	rows, err := db.Pool.Query(ctx, `SELECT user_id FROM users WHERE erased`)
	if err != nil {
		return nil, fmt.Errorf("persist: erased users: %w", err)
	}
	users, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("persist: erased users: %w", err)
	}
	return users, nil
}
