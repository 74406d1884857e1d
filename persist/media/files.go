package media

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// ErrTooLarge is returned for content over the size it may have.
var ErrTooLarge = errors.New("media: content too large")

// Files is the media store on local disk (media_store_path):
//
//	content/ab/cd/abcd…    the content whose SHA-256 is abcd…, in hex
//	thumbnails/ab/cd/abcd…/<name>   thumbnails made from it
//	tmp/                   files being written
//
// Every name below Root is made from a SHA-256 in hex and names this package makes;
// nothing a client sends names a path.
type Files struct{ Root string }

// Init makes the store's directories.
func (f Files) Init() error {
	for _, d := range []string{"content", "thumbnails", "tmp"} {
		if err := os.MkdirAll(filepath.Join(f.Root, d), 0o750); err != nil {
			return fmt.Errorf("media store: %w", err)
		}
	}
	return nil
}

// Put stores what r holds, up to max bytes (ErrTooLarge past it), and returns its
// SHA-256 in hex and its size. The file is on disk (fsynced) when Put returns, so a
// record naming it can be appended; content already stored is not written again.
func (f Files) Put(r io.Reader, max int64) (sha string, size int64, err error) {
	tmp, err := os.CreateTemp(filepath.Join(f.Root, "tmp"), "upload-*")
	if err != nil {
		return "", 0, fmt.Errorf("media store: %w", err)
	}
	defer func() {
		if tmp != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, max+1))
	if err != nil {
		return "", 0, fmt.Errorf("media store: write: %w", err)
	}
	if size > max {
		return "", 0, ErrTooLarge
	}
	sha = hex.EncodeToString(h.Sum(nil))
	dst := f.ContentPath(sha)
	if _, err := os.Stat(dst); err == nil {
		return sha, size, nil
	}
	if err := tmp.Sync(); err != nil {
		return "", 0, fmt.Errorf("media store: sync: %w", err)
	}
	if err := f.place(tmp, dst); err != nil {
		return "", 0, err
	}
	tmp = nil
	return sha, size, nil
}

// place closes tmp and renames it to dst, making dst's directory, and syncs the
// directory so the name survives a crash.
func (f Files) place(tmp *os.File, dst string) error {
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("media store: close: %w", err)
	}
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("media store: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("media store: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("media store: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("media store: sync %s: %w", dir, err)
	}
	return nil
}

// ContentPath is where the content of SHA-256 sha (in hex, as Put returns it) is.
func (f Files) ContentPath(sha string) string {
	return filepath.Join(f.Root, "content", sha[:2], sha[2:4], sha)
}

// Open opens the content of sha.
func (f Files) Open(sha string) (*os.File, error) {
	file, err := os.Open(f.ContentPath(sha))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotFound
	}
	return file, err
}

// thumbnailPath is where the thumbnail name (made by this package's callers from
// numbers and fixed words) of sha's content is.
func (f Files) thumbnailPath(sha, name string) string {
	return filepath.Join(f.Root, "thumbnails", sha[:2], sha[2:4], sha, name)
}

// OpenThumbnail opens the thumbnail name of sha's content, or returns ErrNotFound.
func (f Files) OpenThumbnail(sha, name string) (*os.File, error) {
	file, err := os.Open(f.thumbnailPath(sha, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotFound
	}
	return file, err
}

// PutThumbnail stores data as the thumbnail name of sha's content. A thumbnail can be
// made again from its content, so it is not synced.
func (f Files) PutThumbnail(sha, name string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Join(f.Root, "tmp"), "thumb-"+rand.Text()[:8]+"-*")
	if err != nil {
		return fmt.Errorf("media store: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("media store: write thumbnail: %w", err)
	}
	dst := f.thumbnailPath(sha, name)
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("media store: %w", err)
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("media store: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("media store: %w", err)
	}
	return nil
}

// RemoveStale deletes the files in tmp/ older than age: what an upload that never
// finished (a crash, a client gone) left. It returns how many it deleted.
func (f Files) RemoveStale(age time.Duration) (int, error) {
	dir := filepath.Join(f.Root, "tmp")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("media store: %w", err)
	}
	cutoff := time.Now().Add(-age)
	n := 0
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || e.IsDir() || info.ModTime().After(cutoff) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err == nil {
			n++
		}
	}
	return n, nil
}

// RemoveContent deletes the content of sha and its thumbnails; what is already gone is
// no error.
func (f Files) RemoveContent(sha string) error {
	if err := os.Remove(f.ContentPath(sha)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("media store: %w", err)
	}
	if err := os.RemoveAll(filepath.Dir(f.thumbnailPath(sha, "x"))); err != nil {
		return fmt.Errorf("media store: %w", err)
	}
	return nil
}
