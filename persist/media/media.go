// Package media stores the media repository: files on local disk, named by the SHA-256
// of their content so identical uploads share one, and thumbnails derived from them;
// and reads the metadata the accounts stream projects into the media table.
package media

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrNotFound is returned for media that does not exist.
var ErrNotFound = errors.New("media: not found")

// Item is a stored media item. SHA256 is "" while a reservation waits for its upload.
type Item struct {
	ID            string
	User          string
	ContentType   string
	UploadName    string
	Size          int64
	SHA256        string
	Created       time.Time
	Expires       time.Time
	Authenticated bool
}

// Uploaded reports whether the item has content.
func (i Item) Uploaded() bool { return i.SHA256 != "" }

// Store reads the media table.
type Store struct{ Pool *pgxpool.Pool }

// Get returns the media item id, or ErrNotFound.
func (s Store) Get(ctx context.Context, id string) (Item, error) {
	it := Item{ID: id}
	var ctype, name, sha *string
	var size *int64
	var expires *time.Time
	err := s.Pool.QueryRow(ctx, `SELECT user_id, content_type, upload_name, size, sha256, created_at, expires_at, authenticated
		FROM media WHERE media_id = $1`, id).Scan(&it.User, &ctype, &name, &size, &sha, &it.Created, &expires, &it.Authenticated)
	if errors.Is(err, pgx.ErrNoRows) {
		return Item{}, ErrNotFound
	}
	if err != nil {
		return Item{}, fmt.Errorf("media: read %s: %w", id, err)
	}
	it.ContentType, it.UploadName, it.SHA256 = deref(ctype), deref(name), deref(sha)
	if size != nil {
		it.Size = *size
	}
	if expires != nil {
		it.Expires = *expires
	}
	return it, nil
}

// UploadedSince sums the sizes of what user uploaded since t (per-user upload limits).
func (s Store) UploadedSince(ctx context.Context, user string, t time.Time) (int64, error) {
	var n int64
	err := s.Pool.QueryRow(ctx, `SELECT coalesce(sum(size), 0) FROM media WHERE user_id = $1 AND created_at >= $2`,
		user, t).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("media: uploads of %s: %w", user, err)
	}
	return n, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
