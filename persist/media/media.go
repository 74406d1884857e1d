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
	it.fill(ctype, name, sha, size, expires)
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

// List returns a page of user's media, newest first unless oldest, and how many they
// have.
func (s Store) List(ctx context.Context, user string, offset, limit int, oldest bool) ([]Item, int, error) {
	order := "DESC"
	if oldest {
		order = "ASC"
	}
	var total int
	if err := s.Pool.QueryRow(ctx, `SELECT count(*) FROM media WHERE user_id = $1`, user).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("media: list %s: %w", user, err)
	}
	rows, err := s.Pool.Query(ctx, `SELECT media_id, content_type, upload_name, size, sha256, created_at, expires_at, authenticated
		FROM media WHERE user_id = $1 ORDER BY created_at `+order+`, media_id `+order+` OFFSET $2 LIMIT $3`, user, offset, limit)
	if err != nil {
		return nil, 0, fmt.Errorf("media: list %s: %w", user, err)
	}
	items, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Item, error) {
		it := Item{User: user}
		var ctype, name, sha *string
		var size *int64
		var expires *time.Time
		err := row.Scan(&it.ID, &ctype, &name, &size, &sha, &it.Created, &expires, &it.Authenticated)
		it.fill(ctype, name, sha, size, expires)
		return it, err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("media: list %s: %w", user, err)
	}
	return items, total, nil
}

// fill sets the item's nullable columns.
func (i *Item) fill(ctype, name, sha *string, size *int64, expires *time.Time) {
	i.ContentType, i.UploadName, i.SHA256 = deref(ctype), deref(name), deref(sha)
	if size != nil {
		i.Size = *size
	}
	if expires != nil {
		i.Expires = *expires
	}
}

// Orphans returns the content no media has named since before cutoff.
func (s Store) Orphans(ctx context.Context, cutoff time.Time) ([]string, error) {
	rows, err := s.Pool.Query(ctx, `SELECT o.sha256 FROM media_orphans o
		WHERE o.since < $1 AND NOT EXISTS (SELECT 1 FROM media m WHERE m.sha256 = o.sha256)`, cutoff)
	if err != nil {
		return nil, fmt.Errorf("media: orphans: %w", err)
	}
	shas, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("media: orphans: %w", err)
	}
	return shas, nil
}

// ForgetOrphan drops sha from the orphans once its file is gone; named again since,
// it is no orphan and is dropped too.
func (s Store) ForgetOrphan(ctx context.Context, sha string) error {
	if _, err := s.Pool.Exec(ctx, `DELETE FROM media_orphans WHERE sha256 = $1`, sha); err != nil {
		return fmt.Errorf("media: forget orphan: %w", err)
	}
	return nil
}
