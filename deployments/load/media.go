package load

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// mediaFileSize is the size of scenario (j)'s files.
const mediaFileSize = 1 << 20

// mediaRun is scenario (j): 1 MB uploads and downloads, and the disk's own write
// speed for the same files, measured in the same run.
type mediaRun struct {
	files, clients   int
	upload, download result
	// disk is writing the files with fsync and a rename, as the media store does,
	// from as many writers, without the server: the ceiling of uploads.
	disk    time.Duration
	diskDir string
}

func (r mediaRun) mbps(d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(r.files) * mediaFileSize / (1 << 20) / d.Seconds()
}

// measureMedia uploads n distinct 1 MB files from the users (one client each), then
// downloads each once; before that it writes the same files into dir (the server's
// media_store_path when it is on this machine) as the store does.
func measureMedia(ctx context.Context, hs *homeserver, m *meter, users []*user, n int, dir string) (mediaRun, error) {
	run := mediaRun{files: n, clients: len(users), diskDir: dir}
	files := make([][]byte, n)
	for i := range files {
		files[i] = make([]byte, mediaFileSize)
		_, _ = rand.Read(files[i]) // crypto/rand.Read never fails
	}
	var err error
	if run.disk, err = diskWrites(dir, files, len(users)); err != nil {
		return run, err
	}
	uris := make([]string, n)
	run.upload, err = mediaPhase(ctx, m, "upload", users, n, func(u *user, i int) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, hs.base+"/_matrix/media/v3/upload", bytes.NewReader(files[i]))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+u.token)
		req.Header.Set("Content-Type", "application/octet-stream")
		var res struct {
			ContentURI string `json:"content_uri"`
		}
		if err := hs.do(req, &res); err != nil {
			return err
		}
		uris[i] = res.ContentURI
		return nil
	})
	if err != nil {
		return run, err
	}
	run.download, err = mediaPhase(ctx, m, "download", users, n, func(u *user, i int) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet,
			hs.base+"/_matrix/client/v1/media/download/"+strings.TrimPrefix(uris[i], "mxc://"), nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+u.token)
		resp, err := hs.http.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || !bytes.Equal(got, files[i]) {
			var e json.RawMessage = got[:min(len(got), 200)]
			return fmt.Errorf("download %s: HTTP %d, %d bytes (%s)", uris[i], resp.StatusCode, len(got), e)
		}
		return nil
	})
	return run, err
}

// mediaPhase runs op for files 0..n-1, each user taking every len(users)-th file.
func mediaPhase(ctx context.Context, m *meter, name string, users []*user, n int, op func(u *user, i int) error) (result, error) {
	res := result{name: name, lat: make([]time.Duration, 0, n)}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	cpu0 := m.sample(ctx)
	t0 := time.Now()
	for k, u := range users {
		wg.Go(func() {
			for i := k; i < n; i += len(users) {
				t := time.Now()
				err := op(u, i)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				res.lat = append(res.lat, time.Since(t))
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	res.elapsed, res.cpu, res.ops = time.Since(t0), m.since(ctx, cpu0), n
	return res, firstErr
}

// diskWrites writes files into a new directory in dir as the media store writes an
// upload (a temporary file, fsync, rename, fsync of the directory), from as many
// writers as the scenario has clients, and returns the time taken.
func diskWrites(dir string, files [][]byte, writers int) (time.Duration, error) {
	tmp, err := os.MkdirTemp(dir, "ganglion-load-disk-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	write := func(i int) error {
		f, err := os.CreateTemp(tmp, "w-*")
		if err != nil {
			return err
		}
		_, err = f.Write(files[i])
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(f.Name(), filepath.Join(tmp, fmt.Sprint(i)))
		}
		if err == nil {
			err = syncDir(tmp)
		}
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, writers)
	t0 := time.Now()
	for k := range writers {
		wg.Go(func() {
			for i := k; i < len(files) && errs[k] == nil; i += writers {
				errs[k] = write(i)
			}
		})
	}
	wg.Wait()
	return time.Since(t0), errors.Join(errs...)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func printMedia(out io.Writer, r *mediaRun) {
	if r == nil {
		return
	}
	disk := r.mbps(r.disk)
	ratio := func(d time.Duration) string {
		if disk == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", r.mbps(d)/disk)
	}
	fmt.Fprintf(out, "(j) media: %d files of 1 MiB from %d clients: uploads %.0f MB/s (p50 %s, p99 %s, CPU/file %s), %s of the disk's %.0f MB/s written the same way in %s;"+
		" downloads %.0f MB/s (p50 %s, p99 %s, CPU/file %s)\n",
		r.files, r.clients, r.mbps(r.upload.elapsed), fmtDur(percentile(r.upload.lat, 0.5)), fmtDur(percentile(r.upload.lat, 0.99)),
		fmtDur(r.upload.cpuPerOp()), ratio(r.upload.elapsed), disk, r.diskDir,
		r.mbps(r.download.elapsed), fmtDur(percentile(r.download.lat, 0.5)), fmtDur(percentile(r.download.lat, 0.99)), fmtDur(r.download.cpuPerOp()))
}
