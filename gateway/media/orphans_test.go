package media_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/gateway/media"
	"github.com/ganglionhq/ganglion/persist"
	store "github.com/ganglionhq/ganglion/persist/media"
	"github.com/ganglionhq/ganglion/persist/pgtest"
)

// RemoveOrphans deletes the content (and thumbnails) of deleted media that nothing has
// named since the cutoff, and keeps content named again or orphaned too recently.
func TestRemoveOrphans(t *testing.T) {
	ctx := context.Background()
	db, err := persist.Open(ctx, pgtest.DSN(t), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	files := store.Files{Root: t.TempDir()}
	if err := files.Init(); err != nil {
		t.Fatal(err)
	}
	put := func(data string) string {
		sha, _, err := files.Put(strings.NewReader(data), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if err := files.PutThumbnail(sha, "32x32-crop", []byte("thumb")); err != nil {
			t.Fatal(err)
		}
		return sha
	}
	old, named, recent := put("orphaned long ago"), put("named again"), put("orphaned just now")
	long := time.Now().Add(-2 * time.Hour)
	if _, err := db.Pool.Exec(ctx, `INSERT INTO media_orphans (sha256, since) VALUES ($1, $4), ($2, $4), ($3, now())`,
		old, named, recent, long); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO media (media_id, user_id, created_at, content_type, size, sha256, authenticated, stream_id)
		VALUES ('again', '@a:h', now(), 'text/plain', 11, $1, true, 1)`, named); err != nil {
		t.Fatal(err)
	}
	repo := media.NewRepo(media.Config{}, files, zap.NewNop())
	n, err := repo.RemoveOrphans(ctx, store.Store{Pool: db.Pool}, time.Now().Add(-time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("removed %d, %v; want 1", n, err)
	}
	if _, err := files.Open(old); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the old orphan's content is still there: %v", err)
	}
	if _, err := files.OpenThumbnail(old, "32x32-crop"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the old orphan's thumbnail is still there: %v", err)
	}
	for _, sha := range []string{named, recent} {
		f, err := files.Open(sha)
		if err != nil {
			t.Errorf("content %s removed: %v", sha[:8], err)
			continue
		}
		_ = f.Close()
	}
	var left int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM media_orphans`).Scan(&left); err != nil || left != 2 {
		t.Errorf("orphan rows left: %d %v, want 2", left, err)
	}
	// Removing what is already gone is no error.
	if err := files.RemoveContent(old); err != nil {
		t.Errorf("removing again: %v", err)
	}
}
