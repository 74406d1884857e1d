package persist

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Postgres error codes this file reacts to.
const (
	pgUniqueViolation     = "23505"
	pgForeignKeyViolation = "23503"
)

func pgCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// bcryptInput cuts a password to the 72 bytes bcrypt reads. Synapse's hashes were made the
// same way (its bcrypt ignored the rest), so hashes imported from Synapse keep verifying.
func bcryptInput(password string) []byte {
	b := []byte(password)
	if len(b) > 72 {
		b = b[:72]
	}
	return b
}

// NewDevice is a device to create together with its first access token.
type NewDevice struct {
	DeviceID    string
	DisplayName string
	// TokenHash is the SHA-256 of the access token; the token itself is never stored.
	TokenHash []byte
}

// CreateUser creates userID with a bcrypt hash of password; an empty password makes an
// account that cannot log in with a password. When dev is not nil the device and its
// token are created in the same transaction, so a registration is all or nothing.
// It returns ErrUserExists when the user ID is taken.
func (db *DB) CreateUser(ctx context.Context, userID, password string, dev *NewDevice) error {
	var hash *string
	if password != "" {
		h, err := db.hashPassword(ctx, password)
		if err != nil {
			return fmt.Errorf("persist: hash password: %w", err)
		}
		s := string(h)
		hash = &s
	}
	return pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO users (user_id, password_hash) VALUES ($1, $2)", userID, hash); err != nil {
			if pgCode(err) == pgUniqueViolation {
				return ErrUserExists
			}
			return fmt.Errorf("persist: create user: %w", err)
		}
		if dev == nil {
			return nil
		}
		return createDevice(ctx, tx, userID, *dev)
	})
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
// callers still handle ErrUserExists.
func (db *DB) NextLocalpart(ctx context.Context) (string, error) {
	var n int64
	if err := db.Pool.QueryRow(ctx, "SELECT nextval('user_localpart_seq')").Scan(&n); err != nil {
		return "", fmt.Errorf("persist: next localpart: %w", err)
	}
	return strconv.FormatInt(n, 10), nil
}

// CreateDevice creates the device, or takes over an existing one with the same ID (the
// spec's login with a known device_id), and makes dev.TokenHash its only access token:
// tokens issued to the device earlier stop working. ErrNotFound if the user does not exist.
func (db *DB) CreateDevice(ctx context.Context, userID string, dev NewDevice) error {
	return pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		return createDevice(ctx, tx, userID, dev)
	})
}

func createDevice(ctx context.Context, tx pgx.Tx, userID string, dev NewDevice) error {
	var displayName *string
	if dev.DisplayName != "" {
		displayName = &dev.DisplayName
	}
	_, err := tx.Exec(ctx, `INSERT INTO devices (user_id, device_id, display_name) VALUES ($1, $2, $3)
		ON CONFLICT (user_id, device_id) DO UPDATE SET last_seen = now()`, userID, dev.DeviceID, displayName)
	if pgCode(err) == pgForeignKeyViolation {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("persist: create device: %w", err)
	}
	if _, err := tx.Exec(ctx, "DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2", userID, dev.DeviceID); err != nil {
		return fmt.Errorf("persist: replace device tokens: %w", err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO access_tokens (token_hash, user_id, device_id) VALUES ($1, $2, $3)",
		dev.TokenHash, userID, dev.DeviceID); err != nil {
		return fmt.Errorf("persist: store access token: %w", err)
	}
	return nil
}

// LookupToken returns the user and device an access token (by its SHA-256) belongs to, or
// ErrNotFound. It also records when and from where (ip, when known) the device was last
// seen, at most once a minute unless the address changed, in the same round trip, so
// tracking activity costs no extra query on the request path.
func (db *DB) LookupToken(ctx context.Context, tokenHash []byte, ip string) (userID, deviceID string, err error) {
	err = db.Pool.QueryRow(ctx, `WITH t AS (
			SELECT user_id, device_id FROM access_tokens WHERE token_hash = $1
		), seen AS (
			UPDATE devices d SET last_seen = now(), last_seen_ip = coalesce(nullif($2, ''), d.last_seen_ip) FROM t
			WHERE d.user_id = t.user_id AND d.device_id = t.device_id
			  AND (d.last_seen < now() - interval '1 minute' OR ($2 <> '' AND d.last_seen_ip IS DISTINCT FROM $2))
		)
		SELECT user_id, device_id FROM t`, tokenHash, ip).Scan(&userID, &deviceID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", ErrNotFound
	}
	if err != nil {
		return "", "", fmt.Errorf("persist: look up access token: %w", err)
	}
	return userID, deviceID, nil
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

// RenameDevice sets a device's display name, or keeps it when name is nil; ErrNotFound
// if the device does not exist.
func (db *DB) RenameDevice(ctx context.Context, userID, deviceID string, name *string) error {
	tag, err := db.Pool.Exec(ctx, `UPDATE devices SET display_name = coalesce($3, display_name)
		WHERE user_id = $1 AND device_id = $2`, userID, deviceID, name)
	if err != nil {
		return fmt.Errorf("persist: rename device: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteDevices deletes those of userID's devices that exist, with their access tokens.
func (db *DB) DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error {
	if _, err := db.Pool.Exec(ctx, "DELETE FROM devices WHERE user_id = $1 AND device_id = ANY($2)", userID, deviceIDs); err != nil {
		return fmt.Errorf("persist: delete devices: %w", err)
	}
	return nil
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

// PutFilter stores a filter (a JSON object) for userID and returns its ID, numbered per
// user from 0. Uploading a filter equal (as JSON) to a stored one returns the stored ID,
// as Synapse does, because clients upload the same filter at every start.
// ErrNotFound if the user does not exist.
func (db *DB) PutFilter(ctx context.Context, userID string, filter []byte) (int64, error) {
	var id int64
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		// Uploads by one user take turns on the user's row, so numbering needs no retry.
		// NO KEY UPDATE leaves foreign-key checks on the row (new devices) unblocked.
		err := tx.QueryRow(ctx, "SELECT 1 FROM users WHERE user_id = $1 FOR NO KEY UPDATE", userID).Scan(new(int))
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		err = tx.QueryRow(ctx, `SELECT filter_id FROM filters WHERE user_id = $1 AND filter = $2::jsonb
			ORDER BY filter_id LIMIT 1`, userID, string(filter)).Scan(&id)
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		return tx.QueryRow(ctx, `INSERT INTO filters (user_id, filter_id, filter)
			SELECT $1, coalesce(max(filter_id) + 1, 0), $2::jsonb FROM filters WHERE user_id = $1
			RETURNING filter_id`, userID, string(filter)).Scan(&id)
	})
	if errors.Is(err, ErrNotFound) {
		return 0, err
	}
	if err != nil {
		return 0, fmt.Errorf("persist: store filter: %w", err)
	}
	return id, nil
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
