package media

import (
	"context"
	"errors"
	"os"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	store "github.com/ganglionhq/ganglion/persist/media"
)

// Config is the media repository's configuration, in Synapse's terms.
type Config struct {
	// MaxUploadSize is max_upload_size, in bytes.
	MaxUploadSize int64
	// MaxPixels is max_image_pixels: larger images get no thumbnails.
	MaxPixels int64
	// Sizes are thumbnail_sizes, made at upload; Dynamic (dynamic_thumbnails) makes
	// any size asked for, on demand.
	Sizes   []Size
	Dynamic bool
	// Authenticated is enable_authenticated_media: media uploaded while it is on is
	// served only by the authenticated endpoints.
	Authenticated bool
	// MaxPending (max_pending_media_uploads) bounds a user's unused reservations, which
	// lapse after UnusedExpiration (unused_expiration_time).
	MaxPending       int
	UnusedExpiration time.Duration
	// UploadLimits are media_upload_limits: how much one user may upload per period.
	UploadLimits []UploadLimit
	// Preview serves URL previews (url_preview_enabled); nil when off.
	Preview *Previewer
}

// UploadLimit is one of media_upload_limits.
type UploadLimit struct {
	Period  time.Duration
	MaxSize int64
}

// Synapse's defaults.
const (
	DefaultMaxUploadSize    = 50 << 20
	DefaultMaxPending       = 5
	DefaultUnusedExpiration = 24 * time.Hour
)

// thumbnailJobs bounds the thumbnails made at once: decoding a large image takes a
// core and its pixels' memory.
const thumbnailJobs = 2

// Repo is the media repository of a process: its configuration, its store on disk, and
// the thumbnails being made.
type Repo struct {
	Config
	Files store.Files
	Log   *zap.Logger

	flight singleflight.Group
	jobs   chan struct{}
}

// NewRepo returns the repository of cfg over files.
func NewRepo(cfg Config, files store.Files, log *zap.Logger) *Repo {
	return &Repo{Config: cfg, Files: files, Log: log, jobs: make(chan struct{}, thumbnailJobs)}
}

// Thumbnail opens the thumbnail of size s of the content sha of contentType, making
// it first when it is not stored yet; requests for one being made wait for it. It
// returns ErrNotImage or ErrTooManyPixels for content that has none.
func (r *Repo) Thumbnail(ctx context.Context, sha, contentType string, s Size) (*os.File, string, error) {
	typ := ThumbnailType(contentType)
	if typ == "" {
		return nil, "", ErrNotImage
	}
	name := s.Name(typ)
	if f, err := r.Files.OpenThumbnail(sha, name); !errors.Is(err, store.ErrNotFound) {
		return f, typ, err
	}
	ch := r.flight.DoChan(sha+"/"+name, func() (any, error) { return nil, r.make(sha, contentType, []Size{s}) })
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, "", res.Err
		}
	case <-ctx.Done():
		return nil, "", ctx.Err()
	}
	f, err := r.Files.OpenThumbnail(sha, name)
	return f, typ, err
}

// Pregenerate makes, in the background, the configured thumbnails of new content.
func (r *Repo) Pregenerate(sha, contentType string) {
	if ThumbnailType(contentType) == "" || len(r.Sizes) == 0 {
		return
	}
	go func() {
		_, err, _ := r.flight.Do(sha+"/*", func() (any, error) { return nil, r.make(sha, contentType, r.Sizes) })
		if err != nil && !errors.Is(err, ErrNotImage) && !errors.Is(err, ErrTooManyPixels) {
			r.Log.Warn("thumbnails not made", zap.String("sha256", sha), zap.Error(err))
		}
	}()
}

// make decodes the content once and stores its thumbnails of sizes.
func (r *Repo) make(sha, contentType string, sizes []Size) error {
	r.jobs <- struct{}{}
	defer func() { <-r.jobs }()
	f, err := r.Files.Open(sha)
	if err != nil {
		return err
	}
	defer f.Close()
	src, err := Decode(f, contentType, r.MaxPixels)
	if err != nil {
		return err
	}
	src.Reduce(sizes)
	for _, s := range sizes {
		data, err := src.Thumbnail(s)
		if err != nil {
			return err
		}
		if err := r.Files.PutThumbnail(sha, s.Name(src.Type), data); err != nil {
			return err
		}
	}
	return nil
}

// staleUpload is how old a file in the store's tmp/ must be to be a leftover: an upload
// is written in far less (a request takes at most the listener's timeouts).
const staleUpload = time.Hour

// OrphanStore finds the content no media has named for a while, and forgets it once
// its file is gone.
type OrphanStore interface {
	Orphans(ctx context.Context, cutoff time.Time) ([]string, error)
	ForgetOrphan(ctx context.Context, sha string) error
}

// RunJobs does the media repository's background work until ctx ends, on the instance
// media_instance_running_background_jobs names: every hour, it deletes what unfinished
// uploads left in the store, and the files of deleted media that nothing has named for
// an hour (an upload of the same bytes in flight when the media was deleted has
// recorded itself by then).
func (r *Repo) RunJobs(ctx context.Context, orphans OrphanStore) {
	t := time.NewTicker(staleUpload)
	defer t.Stop()
	for {
		if n, err := r.Files.RemoveStale(staleUpload); err != nil {
			r.Log.Warn("media store: leftovers not removed", zap.Error(err))
		} else if n > 0 {
			r.Log.Info("media store: removed unfinished uploads", zap.Int("files", n))
		}
		if n, err := r.RemoveOrphans(ctx, orphans, time.Now().Add(-staleUpload)); err != nil {
			r.Log.Warn("media store: deleted media's files not removed", zap.Error(err))
		} else if n > 0 {
			r.Log.Info("media store: removed deleted media's files", zap.Int("files", n))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RemoveOrphans deletes the files (and thumbnails) of the content no media has named
// since before cutoff, and returns how many.
func (r *Repo) RemoveOrphans(ctx context.Context, orphans OrphanStore, cutoff time.Time) (int, error) {
	shas, err := orphans.Orphans(ctx, cutoff)
	if err != nil {
		return 0, err
	}
	for i, sha := range shas {
		if err := r.Files.RemoveContent(sha); err != nil {
			return i, err
		}
		if err := orphans.ForgetOrphan(ctx, sha); err != nil {
			return i + 1, err
		}
	}
	return len(shas), nil
}
