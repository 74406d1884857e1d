package persist

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
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
		p.DisplayName = defaultDisplayName(userID)
	}
	return p, nil
}

// ProfileField is one field of a profile, named as its column and as the client API
// names it.
type ProfileField string

// The fields of a profile.
const (
	DisplayName ProfileField = "displayname"
	AvatarURL   ProfileField = "avatar_url"
)

// SetProfileField sets one field of a local user's profile (nil unsets it) and returns
// the profile as this update left it. The update is one statement that writes only its
// own field, so concurrent updates of different fields both survive. A user without a
// profile row gets one, with their localpart as display name unless that is the field
// set. An unknown user is ErrNotFound.
func (db *DB) SetProfileField(ctx context.Context, userID string, field ProfileField, value *string) (Profile, error) {
	displayName, avatarURL := defaultDisplayName(userID), (*string)(nil)
	switch field {
	case DisplayName:
		displayName = value
	case AvatarURL:
		avatarURL = value
	default:
		return Profile{}, fmt.Errorf("persist: unknown profile field %q", field)
	}
	var p Profile
	// field is one of the constants above, never client input.
	err := db.Pool.QueryRow(ctx, `INSERT INTO profiles (user_id, displayname, avatar_url) VALUES ($1, $2, $3)
		ON CONFLICT (user_id) DO UPDATE SET `+string(field)+` = excluded.`+string(field)+`
		RETURNING displayname, avatar_url`, userID, displayName, avatarURL).Scan(&p.DisplayName, &p.AvatarURL)
	if pgCode(err) == pgForeignKeyViolation {
		return Profile{}, ErrNotFound
	}
	if err != nil {
		return Profile{}, fmt.Errorf("persist: set profile %s: %w", field, err)
	}
	return p, nil
}

// defaultDisplayName is the display name of a user who never set one: their localpart.
func defaultDisplayName(userID string) *string {
	local, _, _ := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	return &local
}
