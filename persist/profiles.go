package persist

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/ganglionhq/ganglion/persist/accounts"
)

// Profile is a user's public profile; nil fields are unset.
type Profile struct {
	DisplayName *string
	AvatarURL   *string
}

// GetProfile returns a local user's profile, or ErrNotFound for an unknown user. A user
// who never set one has their localpart as display name.
func (db *DB) GetProfile(ctx context.Context, userID string) (Profile, error) {
	var p Profile
	var hasRow bool
	err := db.Pool.QueryRow(ctx, `SELECT p.user_id IS NOT NULL, p.displayname, p.avatar_url
		FROM users u LEFT JOIN profiles p USING (user_id) WHERE u.user_id = $1`, userID).
		Scan(&hasRow, &p.DisplayName, &p.AvatarURL)
	if errors.Is(err, pgx.ErrNoRows) {
		return Profile{}, ErrNotFound
	}
	if err != nil {
		return Profile{}, fmt.Errorf("persist: get profile: %w", err)
	}
	if !hasRow {
		p.DisplayName = accounts.DefaultDisplayName(userID)
	}
	return p, nil
}
