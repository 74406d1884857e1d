package persist

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// OpenIDUser returns the user an OpenID token (its SHA-256) was given to;
// ErrNotFound when no such token is valid at now.
func (db *DB) OpenIDUser(ctx context.Context, tokenHash []byte, now time.Time) (string, error) {
	var user string
	err := db.Pool.QueryRow(ctx, `SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_at > $2`, tokenHash, now).Scan(&user)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("persist: openid token: %w", err)
	}
	return user, nil
}
