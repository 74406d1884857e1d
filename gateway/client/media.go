package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/gateway/media"
	store "github.com/ganglionhq/ganglion/persist/media"
	"github.com/ganglionhq/ganglion/processors/pusher"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// mediaStore reads the media table.
type mediaStore interface {
	Get(ctx context.Context, id string) (store.Item, error)
	UploadedSince(ctx context.Context, user string, t time.Time) (int64, error)
	List(ctx context.Context, user string, offset, limit int, oldest bool) ([]store.Item, int, error)
}

// The legacy media API's versions, and how long a download waits for an asynchronous
// upload (timeout_ms) by default and at most, as Synapse.
var legacyMediaVersions = []string{"r0", "v1", "v3"}

const (
	defaultUploadWait = 20 * time.Second
	maxUploadWait     = 60 * time.Second
	uploadPoll        = 250 * time.Millisecond
	// mediaIDLength is the length of a media ID, as Synapse's: 24 letters.
	mediaIDLength = 24
	// maxMediaText bounds a content type or a file name.
	maxMediaText = 1024
)

// registerMedia serves the media repository under both its APIs: the legacy one
// (/_matrix/media/, whose downloads need no access token) and the authenticated one
// (/_matrix/client/v1/media/).
func (s *Server) registerMedia(r router) {
	if s.Media == nil {
		return
	}
	for _, v := range legacyMediaVersions {
		p := "/_matrix/media/" + v
		r.raw("POST", p+"/upload", s.authed(s.uploadMedia))
		r.raw("GET", p+"/config", s.authed(s.mediaConfig))
		r.raw("GET", p+"/preview_url", s.authed(s.previewURL))
		r.raw("GET", p+"/download/{server}/{media}", s.legacyMedia(s.download))
		r.raw("GET", p+"/download/{server}/{media}/{name}", s.legacyMedia(s.download))
		r.raw("GET", p+"/thumbnail/{server}/{media}", s.legacyMedia(s.thumbnail))
	}
	s.registerMediaAdmin(r)
	r.raw("POST", "/_matrix/media/v1/create", s.authed(s.createMedia))
	r.raw("PUT", "/_matrix/media/v3/upload/{server}/{media}", s.authed(s.uploadReserved))
	p := "/_matrix/client/v1/media"
	r.raw("GET", p+"/config", s.authed(s.mediaConfig))
	r.raw("GET", p+"/preview_url", s.authed(s.previewURL))
	r.raw("GET", p+"/download/{server}/{media}", s.authed(s.authedMedia(s.download)))
	r.raw("GET", p+"/download/{server}/{media}/{name}", s.authed(s.authedMedia(s.download)))
	r.raw("GET", p+"/thumbnail/{server}/{media}", s.authed(s.authedMedia(s.thumbnail)))
}

// mediaRead serves a read of one media item, found, uploaded and readable through the
// API it came by.
type mediaRead func(w http.ResponseWriter, r *http.Request, it store.Item)

// legacyMedia serves a read of the unauthenticated API: media uploaded while
// enable_authenticated_media was on is not found there.
func (s *Server) legacyMedia(h mediaRead) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.readMedia(w, r, false, h)
	}
}

func (s *Server) authedMedia(h mediaRead) func(http.ResponseWriter, *http.Request, Device) {
	return func(w http.ResponseWriter, r *http.Request, _ Device) {
		s.readMedia(w, r, true, h)
	}
}

var errMediaNotFound = matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "Media not found")

// readMedia finds the item a read names, waiting (timeout_ms) for the upload of a
// reservation.
func (s *Server) readMedia(w http.ResponseWriter, r *http.Request, authenticated bool, h mediaRead) {
	id := r.PathValue("media")
	if r.PathValue("server") != s.ServerName || !schemas.ValidMediaID(id) {
		// Remote media comes with federation; a name that cannot be local is nobody's.
		matrix.WriteError(w, errMediaNotFound)
		return
	}
	ms, err := intParam(r.URL.Query().Get("timeout_ms"), int(defaultUploadWait/time.Millisecond), 0, int(maxUploadWait/time.Millisecond))
	if err != nil {
		matrix.WriteError(w, err)
		return
	}
	deadline := time.Now().Add(time.Duration(ms) * time.Millisecond)
	for {
		it, err := s.mediaStore.Get(r.Context(), id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			matrix.WriteError(w, errMediaNotFound)
			return
		case err != nil:
			s.writeErr(w, "media", err)
			return
		case it.Authenticated && !authenticated:
			matrix.WriteError(w, errMediaNotFound)
			return
		case it.Uploaded():
			h(w, r, it)
			return
		case !time.Now().Before(it.Expires):
			matrix.WriteError(w, errMediaNotFound)
			return
		case !time.Now().Before(deadline):
			matrix.WriteError(w, matrix.Errorf(http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED", "The media has not been uploaded yet"))
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(min(uploadPoll, time.Until(deadline))):
		}
	}
}

func (s *Server) download(w http.ResponseWriter, r *http.Request, it store.Item) {
	f, err := s.Media.Files.Open(it.SHA256)
	if err != nil {
		s.writeErr(w, "media download", err)
		return
	}
	defer f.Close()
	name := it.UploadName
	if n := r.PathValue("name"); n != "" {
		name = n
	}
	media.SetDownloadHeaders(w.Header(), it.ContentType, name)
	http.ServeContent(w, r, "", it.Created, f)
}

func (s *Server) thumbnail(w http.ResponseWriter, r *http.Request, it store.Item) {
	q := r.URL.Query()
	width, werr := strconv.Atoi(q.Get("width"))
	height, herr := strconv.Atoi(q.Get("height"))
	if werr != nil || herr != nil || width < 1 || height < 1 {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "width and height must be positive integers"))
		return
	}
	method := q.Get("method")
	if method == "" {
		method = media.Scale
	}
	if method != media.Scale && method != media.Crop {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "method must be crop or scale"))
		return
	}
	size := media.Size{Width: width, Height: height, Method: method}
	if !s.Media.Dynamic || width > maxDynamicThumbnail || height > maxDynamicThumbnail {
		var ok bool
		if size, ok = media.Choose(s.Media.Sizes, width, height, method); !ok {
			matrix.WriteError(w, errNoThumbnail)
			return
		}
	}
	f, typ, err := s.Media.Thumbnail(r.Context(), it.SHA256, it.ContentType, size)
	if errors.Is(err, media.ErrNotImage) || errors.Is(err, media.ErrTooManyPixels) {
		matrix.WriteError(w, errNoThumbnail)
		return
	}
	if err != nil {
		s.writeErr(w, "media thumbnail", err)
		return
	}
	defer f.Close()
	media.SetDownloadHeaders(w.Header(), typ, "")
	http.ServeContent(w, r, "", it.Created, f)
}

// maxDynamicThumbnail bounds a thumbnail made to the size asked for
// (dynamic_thumbnails); larger requests get the closest configured size.
const maxDynamicThumbnail = 2048

var errNoThumbnail = matrix.Errorf(http.StatusBadRequest, matrix.CodeUnknown, "Cannot find any thumbnails for the requested media")

type mediaConfigResponse struct {
	UploadSize int64 `json:"m.upload.size"`
}

func (s *Server) mediaConfig(w http.ResponseWriter, _ *http.Request, _ Device) {
	matrix.WriteJSON(w, http.StatusOK, mediaConfigResponse{UploadSize: s.Media.MaxUploadSize})
}

type contentURIResponse struct {
	ContentURI string `json:"content_uri"`
	Expires    int64  `json:"unused_expires_at,omitempty"`
}

func (s *Server) mxc(id string) string { return "mxc://" + s.ServerName + "/" + id }

// uploadMedia stores a new media item: its content in the media store, then its
// metadata through the accounts stream.
func (s *Server) uploadMedia(w http.ResponseWriter, r *http.Request, dev Device) {
	m, err := s.storeUpload(r, dev)
	if err != nil {
		s.writeErr(w, "media upload", err)
		return
	}
	m.ID = randomString(mediaIDLength, letters)
	if err := s.recordUpload(r.Context(), dev, m, false); err != nil {
		s.writeErr(w, "media upload", err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, contentURIResponse{ContentURI: s.mxc(m.ID)})
}

// createMedia reserves a media ID for an asynchronous upload.
func (s *Server) createMedia(w http.ResponseWriter, r *http.Request, dev Device) {
	id := randomString(mediaIDLength, letters)
	res, err := s.writeAccounts(r.Context(), dev, dev.UserID, userstreams.OpReserveMedia, userstreams.ReserveMedia{
		ID: id, LifetimeMS: s.Media.UnusedExpiration.Milliseconds(), MaxPending: s.Media.MaxPending,
		Authenticated: s.Media.Authenticated})
	if err != nil {
		s.writeErr(w, "media create", err)
		return
	}
	var ans schemas.MediaReservedAnswer
	if err := json.Unmarshal(res.Body, &ans); err != nil {
		s.writeErr(w, "media create", fmt.Errorf("accounts writer's answer to a media reservation: %w", err))
		return
	}
	matrix.WriteJSON(w, http.StatusOK, contentURIResponse{ContentURI: s.mxc(id), Expires: ans.Expires})
}

// uploadReserved uploads the content of a reservation. What the reservation allows is
// checked before the body is read, so a second upload is refused whatever it holds;
// the accounts writer checks again when it records the upload.
func (s *Server) uploadReserved(w http.ResponseWriter, r *http.Request, dev Device) {
	id := r.PathValue("media")
	if r.PathValue("server") != s.ServerName || !schemas.ValidMediaID(id) {
		matrix.WriteError(w, errMediaNotFound)
		return
	}
	it, err := s.mediaStore.Get(r.Context(), id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		err = errMediaNotFound
	case err != nil:
	case it.User != dev.UserID:
		err = matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "You may not upload to this media ID")
	case it.Uploaded():
		err = matrix.Errorf(http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA", "The media has already been uploaded")
	case !time.Now().Before(it.Expires):
		err = matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "The media ID has expired")
	}
	if err != nil {
		s.writeErr(w, "media upload", err)
		return
	}
	m, err := s.storeUpload(r, dev)
	if err != nil {
		s.writeErr(w, "media upload", err)
		return
	}
	m.ID, m.Authenticated = id, it.Authenticated
	if err := s.recordUpload(r.Context(), dev, m, true); err != nil {
		s.writeErr(w, "media upload", err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}

// storeUpload stores an upload's body in the media store and returns its description:
// a body over max_upload_size is 413 M_TOO_LARGE, one over the user's
// media_upload_limits 400 M_RESOURCE_LIMIT_EXCEEDED.
func (s *Server) storeUpload(r *http.Request, dev Device) (schemas.Media, error) {
	if r.ContentLength > s.Media.MaxUploadSize {
		return schemas.Media{}, errUploadTooLarge
	}
	ctype := r.Header.Get("Content-Type")
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	name := r.URL.Query().Get("filename")
	if len(ctype) > maxMediaText || len(name) > maxMediaText || !schemas.StorableText(ctype) {
		return schemas.Media{}, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "The content type or file name is too long or not text")
	}
	sha, size, err := s.Media.Files.Put(r.Body, s.Media.MaxUploadSize)
	if errors.Is(err, store.ErrTooLarge) {
		return schemas.Media{}, errUploadTooLarge
	}
	if err != nil {
		return schemas.Media{}, err
	}
	for _, l := range s.Media.UploadLimits {
		used, err := s.mediaStore.UploadedSince(r.Context(), dev.UserID, time.Now().Add(-l.Period))
		if err != nil {
			return schemas.Media{}, err
		}
		if used+size > l.MaxSize {
			return schemas.Media{}, matrix.Errorf(http.StatusBadRequest, "M_RESOURCE_LIMIT_EXCEEDED", "Media upload limit exceeded")
		}
	}
	return schemas.Media{ContentType: ctype, UploadName: name, Size: size, SHA256: sha, Authenticated: s.Media.Authenticated}, nil
}

var errUploadTooLarge = matrix.Errorf(http.StatusRequestEntityTooLarge, matrix.CodeTooLarge, "Upload request body is too large")

// recordUpload records stored content as media m through the accounts stream, then has
// its thumbnails made.
func (s *Server) recordUpload(ctx context.Context, dev Device, m schemas.Media, reserved bool) error {
	if _, err := s.writeAccounts(ctx, dev, dev.UserID, userstreams.OpUploadMedia, userstreams.UploadMedia{Media: m, Reserved: reserved}); err != nil {
		return err
	}
	s.Media.Pregenerate(m.SHA256, m.ContentType)
	return nil
}

// previewURL answers the OpenGraph properties of a URL, its image stored as the
// requesting user's media (url_preview_enabled; 404 M_UNRECOGNIZED when off, as in
// Synapse).
func (s *Server) previewURL(w http.ResponseWriter, r *http.Request, dev Device) {
	if s.Media.Preview == nil {
		matrix.WriteError(w, matrix.Errorf(http.StatusNotFound, matrix.CodeUnrecognized, "URL previews are disabled"))
		return
	}
	u, err := parsePreviewURL(r.URL.Query().Get("url"))
	if err != nil {
		matrix.WriteError(w, err)
		return
	}
	props, err := s.Media.Preview.Preview(r.Context(), u, func(ctx context.Context, data []byte, ctype, name string) (string, error) {
		return s.storePreviewImage(ctx, dev, data, ctype, name)
	})
	switch {
	case errors.Is(err, pusher.ErrBlockedAddress):
		matrix.WriteError(w, matrix.Errorf(http.StatusForbidden, matrix.CodeUnknown, "IP address blocked"))
	case errors.Is(err, media.ErrPreviewFetch):
		s.Log.Debug("url preview not fetched", zap.Error(err))
		matrix.WriteError(w, matrix.Errorf(http.StatusBadGateway, matrix.CodeUnknown, "The URL could not be fetched"))
	case err != nil:
		s.writeErr(w, "url preview", err)
	default:
		matrix.WriteJSON(w, http.StatusOK, props)
	}
}

// parsePreviewURL reads preview_url's url parameter: an absolute http or https URL.
func parsePreviewURL(v string) (*url.URL, error) {
	if v == "" {
		return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeMissingParam, "Missing url parameter")
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "url must be an absolute http or https URL")
	}
	u.Fragment = ""
	return u, nil
}

// storePreviewImage stores a preview's image as dev's user's media.
func (s *Server) storePreviewImage(ctx context.Context, dev Device, data []byte, ctype, name string) (string, error) {
	if _, _, err := mime.ParseMediaType(ctype); err != nil || len(ctype) > maxMediaText || !schemas.StorableText(ctype) {
		ctype = "application/octet-stream"
	}
	sha, size, err := s.Media.Files.Put(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return "", err
	}
	m := schemas.Media{ID: randomString(mediaIDLength, letters), ContentType: ctype, UploadName: name, Size: size, SHA256: sha,
		Authenticated: s.Media.Authenticated}
	if err := s.recordUpload(ctx, dev, m, false); err != nil {
		return "", err
	}
	return s.mxc(m.ID), nil
}
