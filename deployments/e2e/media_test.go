package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	_ "image/jpeg"
	_ "image/png"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/ganglionhq/ganglion/gateway/media/mediatest"
)

// mediaResponse is a media read's answer, its body read.
type mediaResponse struct {
	status int
	header http.Header
	body   []byte
	// errcode is the Matrix error's code, when the body is one.
	errcode string
}

// mediaGet reads url, with token when set and the extra header lines.
func mediaGet(ctx context.Context, t *testing.T, method, url, token string, body []byte, header ...string) mediaResponse {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var e struct {
		ErrCode string `json:"errcode"`
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		_ = json.Unmarshal(data, &e)
	}
	return mediaResponse{status: resp.StatusCode, header: resp.Header, body: data, errcode: e.ErrCode}
}

// mediaPath is the path of a read of mxc: kind is download or thumbnail, api "v1" for
// the authenticated one or "legacy".
func mediaPath(base, api, kind string, mxc id.ContentURI) string {
	prefix := "/_matrix/client/v1/media/"
	if api == "legacy" {
		prefix = "/_matrix/media/v3/"
	}
	return base + prefix + kind + "/" + mxc.Homeserver + "/" + mxc.FileID
}

func wantMedia(t *testing.T, what string, r mediaResponse, status int, code string) {
	t.Helper()
	if r.status != status || r.errcode != code {
		t.Errorf("%s: HTTP %d %s (%.200s), want %d %s", what, r.status, r.errcode, r.body, status, code)
	}
}

// imageSize decodes the size of an image body.
func imageSize(t *testing.T, what string, body []byte) (int, int, string) {
	t.Helper()
	cfg, format, err := image.DecodeConfig(bytes.NewReader(body))
	if err != nil {
		t.Errorf("%s: not an image: %v", what, err)
	}
	return cfg.Width, cfg.Height, format
}

// TestMediaRoundTrip is issue 10's media acceptance on one process: every supported
// type goes up and comes back byte for byte with its type and a safe disposition;
// images get thumbnails of the right sizes and types; identical uploads share one file;
// a decompression bomb is refused without the process's memory growing; names from
// clients never reach the file system; and the error paths answer the spec's codes.
func TestMediaRoundTrip(t *testing.T) {
	ctx, d, hs := singleProcess(t)
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")

	cases := []struct {
		name, ctype, filename string
		data                  []byte
		wantType, disposition string
		// w and h are an image's size, thumb its thumbnails' format ("" for none).
		w, h  int
		thumb string
	}{
		{"png", "image/png", "ascii.png", mediatest.PNG(1000, 673), "image/png", "inline", 1000, 673, "png"},
		{"jpeg", "image/jpeg", "name with spaces.jpg", mediatest.JPEG(640, 960), "image/jpeg", "inline", 640, 960, "jpeg"},
		{"gif", "image/gif", "name;with;semicolons.gif", mediatest.GIF(300, 200), "image/gif", "inline", 300, 200, "png"},
		{"webp", "image/webp", "🐔.webp", mediatest.WebP, "image/webp", "inline", mediatest.WebPWidth, mediatest.WebPHeight, "jpeg"},
		{"text", "text/plain", "", []byte("plain text"), "text/plain; charset=UTF-8", "inline", 0, 0, ""},
		{"html", "text/html", "page.html", []byte("<script>alert(1)</script>"), "text/html; charset=UTF-8", "attachment", 0, 0, ""},
		{"svg", "image/svg+xml", "x.svg", []byte(`<svg xmlns="http://www.w3.org/2000/svg"/>`), "image/svg+xml; charset=UTF-8", "attachment", 0, 0, ""},
		{"binary", "", "../../../etc/passwd", []byte{0, 1, 2, 3, 4, 5}, "application/octet-stream", "attachment", 0, 0, ""},
	}
	for _, c := range cases {
		up, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: c.data, ContentType: c.ctype, FileName: c.filename})
		if err != nil {
			t.Fatalf("%s: upload: %v", c.name, err)
		}
		r := mediaGet(ctx, t, "GET", mediaPath(hs.url(), "v1", "download", up.ContentURI), bob.AccessToken, nil)
		if r.status != http.StatusOK || !bytes.Equal(r.body, c.data) {
			t.Errorf("%s: download: HTTP %d, %d bytes, want 200 and the %d bytes uploaded", c.name, r.status, len(r.body), len(c.data))
		}
		if got := r.header.Get("Content-Type"); got != c.wantType {
			t.Errorf("%s: Content-Type %q, want %q", c.name, got, c.wantType)
		}
		disp, params, err := mime.ParseMediaType(r.header.Get("Content-Disposition"))
		if err != nil || disp != c.disposition || params["filename"] != c.filename {
			t.Errorf("%s: Content-Disposition %q: %s %v (%v), want %s with filename %q", c.name, r.header.Get("Content-Disposition"),
				disp, params, err, c.disposition, c.filename)
		}
		if csp := r.header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "sandbox") {
			t.Errorf("%s: Content-Security-Policy %q", c.name, csp)
		}
		// Uploaded while enable_authenticated_media is on (the default): not served
		// without an access token.
		wantMedia(t, c.name+": legacy download", mediaGet(ctx, t, "GET", mediaPath(hs.url(), "legacy", "download", up.ContentURI), "", nil),
			http.StatusNotFound, "M_NOT_FOUND")

		for _, s := range []struct {
			w, h           int
			method         string
			wantW, wantH   int
			scaledFromSize bool
		}{
			{32, 32, "crop", 32, 32, false},
			{96, 96, "crop", 96, 96, false},
			{320, 240, "scale", 320, 240, true},
			{700, 500, "scale", 800, 600, true}, // the closest larger configured size
		} {
			url := fmt.Sprintf("%s?width=%d&height=%d&method=%s", mediaPath(hs.url(), "v1", "thumbnail", up.ContentURI), s.w, s.h, s.method)
			r := mediaGet(ctx, t, "GET", url, bob.AccessToken, nil)
			what := fmt.Sprintf("%s: thumbnail %dx%d %s", c.name, s.w, s.h, s.method)
			if c.thumb == "" {
				wantMedia(t, what, r, http.StatusBadRequest, "M_UNKNOWN")
				continue
			}
			if r.status != http.StatusOK {
				t.Errorf("%s: HTTP %d %s", what, r.status, r.body)
				continue
			}
			ww, wh := s.wantW, s.wantH
			if s.scaledFromSize {
				ww, wh = fitWithin(c.w, c.h, s.wantW, s.wantH)
			}
			if w, h, format := imageSize(t, what, r.body); w != ww || h != wh || format != c.thumb {
				t.Errorf("%s: %dx%d %s, want %dx%d %s", what, w, h, format, ww, wh, c.thumb)
			}
		}
	}

	// The name in the path is the one a download is saved as; it names no file.
	up, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: []byte("shared"), ContentType: "text/plain", FileName: "a.txt"})
	if err != nil {
		t.Fatal(err)
	}
	r := mediaGet(ctx, t, "GET", mediaPath(hs.url(), "v1", "download", up.ContentURI)+"/..%2F..%2Fhomeserver.yaml", bob.AccessToken, nil)
	if _, params, _ := mime.ParseMediaType(r.header.Get("Content-Disposition")); r.status != http.StatusOK ||
		string(r.body) != "shared" || params["filename"] != "../../homeserver.yaml" {
		t.Errorf("a download named in its path: HTTP %d %q, disposition %q", r.status, r.body, r.header.Get("Content-Disposition"))
	}
	for _, path := range []string{"..%2F..%2Fhomeserver.yaml", "%2E%2E", "a.b", strings.Repeat("x", 300)} {
		wantMedia(t, "a media ID "+path, mediaGet(ctx, t, "GET", hs.url()+"/_matrix/client/v1/media/download/"+d.serverName+"/"+path,
			bob.AccessToken, nil), http.StatusNotFound, "M_NOT_FOUND")
	}
	// A path with a ".." segment is cleaned into one no endpoint has.
	wantMedia(t, "a media ID ..", mediaGet(ctx, t, "GET", hs.url()+"/_matrix/client/v1/media/download/"+d.serverName+"/..",
		bob.AccessToken, nil), http.StatusNotFound, "M_UNRECOGNIZED")
	// Ranges are served.
	r = mediaGet(ctx, t, "GET", mediaPath(hs.url(), "v1", "download", up.ContentURI), bob.AccessToken, nil, "Range", "bytes=1-3")
	if r.status != http.StatusPartialContent || string(r.body) != "har" {
		t.Errorf("a range: HTTP %d %q, want 206 \"har\"", r.status, r.body)
	}
	// The same bytes again, by another user: one more media ID, no second file.
	again, err := bob.UploadBytes(ctx, []byte("shared"), "text/plain")
	if err != nil {
		t.Fatal(err)
	}
	if again.ContentURI == up.ContentURI {
		t.Error("two uploads got one media ID")
	}
	files := 0
	_ = filepath.WalkDir(filepath.Join(d.dir, "media_store", "content"), func(_ string, e fs.DirEntry, _ error) error {
		if e != nil && !e.IsDir() {
			files++
		}
		return nil
	})
	if want := len(cases) + 1; files != want {
		t.Errorf("%d files in the media store, want %d: one per distinct content", files, want)
	}

	// A 10,000 × 10,000 PNG (100 MB of pixels in about 100 KB) is stored, but never
	// decoded: it gets no thumbnail, and the process's peak memory does not grow by
	// what its pixels would take.
	before := peakRSS(t, hs)
	bomb, err := alice.UploadBytes(ctx, mediatest.Bomb(10_000, 10_000), "image/png")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"crop", "scale"} {
		wantMedia(t, "a thumbnail of a bomb", mediaGet(ctx, t, "GET", mediaPath(hs.url(), "v1", "thumbnail", bomb.ContentURI)+
			"?width=640&height=480&method="+m, bob.AccessToken, nil), http.StatusBadRequest, "M_UNKNOWN")
	}
	if grew := peakRSS(t, hs) - before; grew > 50<<20 {
		t.Errorf("refusing the bomb's thumbnails raised the peak memory by %d MB", grew>>20)
	}

	// Errors.
	conf, err := bob.GetMediaConfig(ctx)
	if err != nil || conf.UploadSize != 50<<20 {
		t.Errorf("media config: %+v %v, want m.upload.size 50 MiB", conf, err)
	}
	wantMedia(t, "an unknown media ID", mediaGet(ctx, t, "GET", hs.url()+"/_matrix/client/v1/media/download/"+d.serverName+"/nosuchmedia",
		bob.AccessToken, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantMedia(t, "another server's media", mediaGet(ctx, t, "GET", hs.url()+"/_matrix/client/v1/media/download/elsewhere.example/abc",
		bob.AccessToken, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantMedia(t, "a download without an access token", mediaGet(ctx, t, "GET", mediaPath(hs.url(), "v1", "download", up.ContentURI), "", nil),
		http.StatusUnauthorized, "M_MISSING_TOKEN")
	wantMedia(t, "a thumbnail without a width", mediaGet(ctx, t, "GET", mediaPath(hs.url(), "v1", "thumbnail", up.ContentURI)+"?height=3",
		bob.AccessToken, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	wantMedia(t, "a thumbnail method", mediaGet(ctx, t, "GET", mediaPath(hs.url(), "v1", "thumbnail", up.ContentURI)+"?width=3&height=3&method=zoom",
		bob.AccessToken, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	wantMedia(t, "a URL preview while they are off", mediaGet(ctx, t, "GET", hs.url()+"/_matrix/client/v1/media/preview_url?url=http://example.org/",
		bob.AccessToken, nil), http.StatusNotFound, "M_UNRECOGNIZED")
	wantMedia(t, "an unknown media endpoint", mediaGet(ctx, t, "GET", hs.url()+"/_matrix/media/v3/unknown", "", nil),
		http.StatusNotFound, "M_UNRECOGNIZED")
	wantMedia(t, "PATCH of upload", mediaGet(ctx, t, "PATCH", hs.url()+"/_matrix/media/v3/upload", bob.AccessToken, nil),
		http.StatusMethodNotAllowed, "M_UNRECOGNIZED")
	wantMedia(t, "an upload of 51 MiB", mediaGet(ctx, t, "POST", hs.url()+"/_matrix/media/v3/upload", bob.AccessToken,
		make([]byte, 51<<20)), http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
}

// fitWithin is the size of a w × h image scaled to fit bw × bh, never larger.
func fitWithin(w, h, bw, bh int) (int, int) {
	bw, bh = min(bw, w), min(bh, h)
	if w*bh > h*bw {
		return bw, max(1, h*bw/w)
	}
	return max(1, w*bh/h), bh
}

// peakRSS is the process's peak resident memory (VmHWM), in bytes.
func peakRSS(t *testing.T, p *process) int {
	t.Helper()
	cmd, _, _ := p.current()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				t.Fatalf("VmHWM %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/<pid>/status")
	return 0
}

// TestMediaLimitsAndAsyncUploads covers the configurable bounds (max_upload_size,
// media_upload_limits, max_pending_media_uploads), unauthenticated media
// (enable_authenticated_media: false), thumbnails of any size (dynamic_thumbnails) and
// asynchronous uploads with every error of the spec.
func TestMediaLimitsAndAsyncUploads(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{})
	d.shared["max_upload_size"] = "200K"
	d.shared["media_upload_limits"] = []map[string]any{{"time_period": "1d", "max_size": "300K"}}
	d.shared["max_pending_media_uploads"] = 2
	d.shared["enable_authenticated_media"] = false
	d.shared["dynamic_thumbnails"] = true
	hs := d.startMain()
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")

	_, err := alice.UploadBytes(ctx, make([]byte, 201<<10), "application/octet-stream")
	wantError(t, "an upload over max_upload_size", err, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	png := mediatest.PNG(1000, 673)
	up, err := alice.UploadBytes(ctx, png, "image/png")
	if err != nil {
		t.Fatal(err)
	}
	r := mediaGet(ctx, t, "GET", mediaPath(hs.url(), "legacy", "download", up.ContentURI), "", nil)
	if r.status != http.StatusOK || !bytes.Equal(r.body, png) {
		t.Errorf("a legacy download of media uploaded with enable_authenticated_media off: HTTP %d", r.status)
	}
	r = mediaGet(ctx, t, "GET", mediaPath(hs.url(), "legacy", "thumbnail", up.ContentURI)+"?width=50&height=40", "", nil)
	if w, h, _ := imageSize(t, "a dynamic thumbnail", r.body); r.status != http.StatusOK || w != 50 || h != 33 {
		t.Errorf("a dynamic 50x40 scale thumbnail of 1000x673: HTTP %d, %dx%d, want 50x33", r.status, w, h)
	}
	if _, err := alice.UploadBytes(ctx, make([]byte, 150<<10), "application/octet-stream"); err != nil {
		t.Fatal(err)
	}
	_, err = alice.UploadBytes(ctx, make([]byte, 150<<10), "application/octet-stream")
	wantError(t, "an upload over media_upload_limits", err, http.StatusBadRequest, "M_RESOURCE_LIMIT_EXCEEDED")
	if _, err := bob.UploadBytes(ctx, make([]byte, 150<<10), "application/octet-stream"); err != nil {
		t.Errorf("another user's upload: %v", err)
	}

	// Asynchronous uploads.
	first, err := alice.CreateMXC(ctx)
	if err != nil || first.UnusedExpiresAt.IsZero() {
		t.Fatalf("create: %+v %v", first, err)
	}
	if _, err := alice.CreateMXC(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = alice.CreateMXC(ctx)
	wantError(t, "a third pending upload over max_pending_media_uploads", err, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	wantMedia(t, "a download before the upload", mediaGet(ctx, t, "GET", mediaPath(hs.url(), "v1", "download", first.ContentURI)+"?timeout_ms=300",
		bob.AccessToken, nil), http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED")
	_, err = bob.UploadMedia(ctx, mautrix.ReqUploadMedia{MXC: first.ContentURI, ContentBytes: []byte("x"), ContentType: "text/plain"})
	wantError(t, "an upload into another user's reservation", err, http.StatusForbidden, "M_FORBIDDEN")
	// A download waiting for the upload gets it.
	waited := make(chan mediaResponse, 1)
	go func() {
		waited <- mediaGet(ctx, t, "GET", mediaPath(hs.url(), "v1", "download", first.ContentURI)+"?timeout_ms=10000", bob.AccessToken, nil)
	}()
	if _, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{MXC: first.ContentURI, ContentBytes: []byte("async"), ContentType: "text/plain"}); err != nil {
		t.Fatalf("the upload into the reservation: %v", err)
	}
	if r := <-waited; r.status != http.StatusOK || string(r.body) != "async" {
		t.Errorf("a download waiting for the upload: HTTP %d %q", r.status, r.body)
	}
	_, err = alice.UploadMedia(ctx, mautrix.ReqUploadMedia{MXC: first.ContentURI, ContentBytes: []byte("y"), ContentType: "text/plain"})
	wantError(t, "a second upload", err, http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA")
	wantMedia(t, "an upload to an unknown media ID", mediaGet(ctx, t, "PUT", hs.url()+"/_matrix/media/v3/upload/"+d.serverName+"/nosuchmedia",
		alice.AccessToken, []byte("z")), http.StatusNotFound, "M_NOT_FOUND")
	// The filled reservation no longer counts.
	if _, err := alice.CreateMXC(ctx); err != nil {
		t.Errorf("a reservation after one was filled: %v", err)
	}
}

// TestMediaWorker is the media acceptance's multi-process test: the main process has
// enable_media_repo: false and serves no media, and a synapse.app.media_repository
// worker with a media listener serves uploads, downloads and thumbnails for users the
// main process registered.
func TestMediaWorker(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{externalNATS: true})
	d.shared["enable_media_repo"] = false
	hs := d.startMain()
	port := freePort(t)
	worker := d.start("media1", port, d.writeYAML("shared.yaml", d.shared), d.writeYAML("media1.yaml", map[string]any{
		"worker_app": "synapse.app.media_repository", "worker_name": "media1",
		"worker_listeners": []map[string]any{{"port": port, "bind_addresses": []string{"127.0.0.1"}, "type": "http",
			"resources": []map[string]any{{"names": []string{"media"}}}}},
	}))
	worker.waitLogged("process started")
	alice := newUser(ctx, t, hs.url(), "alice")
	onWorker := at(alice, worker.url())

	_, err := alice.UploadBytes(ctx, []byte("to main"), "text/plain")
	wantError(t, "an upload to the main process", err, http.StatusNotFound, "M_UNRECOGNIZED")
	png := mediatest.PNG(400, 300)
	up, err := onWorker.UploadBytes(ctx, png, "image/png")
	if err != nil {
		t.Fatalf("an upload to the media worker: %v", err)
	}
	got, err := onWorker.DownloadBytes(ctx, up.ContentURI)
	if err != nil || !bytes.Equal(got, png) {
		t.Errorf("a download from the media worker: %d bytes, %v", len(got), err)
	}
	resp, err := onWorker.DownloadThumbnail(ctx, up.ContentURI, 32, 32, mautrix.DownloadThumbnailExtra{Method: "crop"})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if w, h, _ := imageSize(t, "the worker's thumbnail", body); w != 32 || h != 32 {
		t.Errorf("the worker's 32x32 crop: %dx%d", w, h)
	}
	_, err = alice.Download(ctx, up.ContentURI)
	wantError(t, "a download from the main process", err, http.StatusNotFound, "M_UNRECOGNIZED")
	// The worker's media listener serves nothing else.
	_, err = onWorker.Whoami(ctx)
	wantError(t, "the client API on a media listener", err, http.StatusNotFound, "M_UNRECOGNIZED")
	// The main process still serves rooms, and the media's event.
	room := createRoomWith(ctx, t, alice, "private_chat")
	if _, err := alice.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.image", "body": "pic.png", "url": up.ContentURI.String()}); err != nil {
		t.Fatal(err)
	}
}

// TestURLPreview fetches a page of a local server, with its OpenGraph image stored as
// media, and refuses an address of url_preview_ip_range_blacklist.
func TestURLPreview(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	png := mediatest.PNG(279, 129)
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/test.html":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = io.WriteString(w, `<html><head><title>ignored</title><meta property="og:title" content="The Rock">
				<meta property="og:type" content="video.movie"><meta property="og:image" content="test.png"></head></html>`)
		case "/test.png":
			w.Header().Set("Content-Type", "image/png")
			_, _ = w.Write(png)
		case "/redirect":
			http.Redirect(w, r, "/test.html", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(site.Close)
	d := newDeployment(t, deploymentOptions{})
	d.shared["url_preview_enabled"] = true
	d.shared["url_preview_ip_range_blacklist"] = []string{"127.0.0.0/8", "10.0.0.0/8"}
	d.shared["url_preview_ip_range_whitelist"] = []string{"127.0.0.1"}
	hs := d.startMain()
	alice := newUser(ctx, t, hs.url(), "alice")

	for _, path := range []string{"/test.html", "/redirect"} {
		r := mediaGet(ctx, t, "GET", hs.url()+"/_matrix/client/v1/media/preview_url?url="+site.URL+path, alice.AccessToken, nil)
		var props map[string]any
		if err := json.Unmarshal(r.body, &props); err != nil || r.status != http.StatusOK {
			t.Fatalf("preview of %s: HTTP %d %s", path, r.status, r.body)
		}
		if props["og:title"] != "The Rock" || props["og:type"] != "video.movie" || props["matrix:image:size"] != float64(len(png)) ||
			props["og:image:width"] != float64(279) || props["og:image:height"] != float64(129) {
			t.Errorf("preview of %s: %v", path, props)
		}
		mxc, err := id.ParseContentURI(fmt.Sprint(props["og:image"]))
		if err != nil {
			t.Fatalf("og:image %v: %v", props["og:image"], err)
		}
		if got, err := alice.DownloadBytes(ctx, mxc); err != nil || !bytes.Equal(got, png) {
			t.Errorf("the preview's image: %d bytes, %v", len(got), err)
		}
	}
	// The same site by an address of the blacklist that the whitelist does not name.
	blocked := strings.Replace(site.URL, "127.0.0.1", "127.0.0.2", 1)
	wantMedia(t, "a preview of a blocked address", mediaGet(ctx, t, "GET", hs.url()+"/_matrix/media/v3/preview_url?url="+blocked+"/test.html",
		alice.AccessToken, nil), http.StatusForbidden, "M_UNKNOWN")
	wantMedia(t, "a preview of a missing page", mediaGet(ctx, t, "GET", hs.url()+"/_matrix/media/v3/preview_url?url="+site.URL+"/gone",
		alice.AccessToken, nil), http.StatusBadGateway, "M_UNKNOWN")
	wantMedia(t, "a preview of no URL", mediaGet(ctx, t, "GET", hs.url()+"/_matrix/media/v3/preview_url?url=file:///etc/passwd",
		alice.AccessToken, nil), http.StatusBadRequest, "M_INVALID_PARAM")
}
