package client

import (
	"errors"
	"net/http"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	store "github.com/ganglionhq/ganglion/persist/media"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// Synapse's admin API for local media, served with the media repository (the seed
// routes /_synapse/admin/v1/media/ and users' media to media workers).

func (s *Server) registerMediaAdmin(r router) {
	r.raw("GET", adminPrefix+"/v1/users/{user}/media", s.authed(s.asAdmin(s.listUserMedia)))
	r.raw("DELETE", adminPrefix+"/v1/users/{user}/media", s.authed(s.asAdmin(s.deleteUserMedia)))
	r.raw("DELETE", adminPrefix+"/v1/media/{server}/{media}", s.authed(s.asAdmin(s.deleteMedia)))
}

// adminMedia is a media item as the admin API lists it.
type adminMedia struct {
	MediaID     string `json:"media_id"`
	MediaType   string `json:"media_type"`
	MediaLength int64  `json:"media_length"`
	UploadName  string `json:"upload_name,omitempty"`
	CreatedTS   int64  `json:"created_ts"`
}

// userMediaPage reads the page of a user's media the request names (from, limit, dir),
// or writes the error.
func (s *Server) userMediaPage(w http.ResponseWriter, r *http.Request) (string, []store.Item, int, int, bool) {
	user, ok := s.adminTarget(w, r)
	if !ok {
		return "", nil, 0, 0, false
	}
	offset, limit, err := adminPage(r)
	dir := r.URL.Query().Get("dir")
	if err == nil && dir != "" && dir != "b" && dir != "f" {
		err = matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "dir must be b or f")
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return "", nil, 0, 0, false
	}
	items, total, err := s.mediaStore.List(r.Context(), user, offset, limit, dir == "f")
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return "", nil, 0, 0, false
	}
	return user, items, offset, total, true
}

// listUserMedia lists a user's media, newest first unless dir=f.
func (s *Server) listUserMedia(w http.ResponseWriter, r *http.Request, _ Device) {
	_, items, offset, total, ok := s.userMediaPage(w, r)
	if !ok {
		return
	}
	media := make([]adminMedia, len(items))
	for i, it := range items {
		media[i] = adminMedia{MediaID: it.ID, MediaType: it.ContentType, MediaLength: it.Size, UploadName: it.UploadName,
			CreatedTS: it.Created.UnixMilli()}
	}
	resp := map[string]any{"media": media, "total": total}
	if offset+len(items) < total {
		resp["next_token"] = offset + len(items)
	}
	matrix.WriteJSON(w, http.StatusOK, resp)
}

// deleteUserMedia deletes the page of a user's media the request names, as Synapse.
func (s *Server) deleteUserMedia(w http.ResponseWriter, r *http.Request, _ Device) {
	user, items, _, _, ok := s.userMediaPage(w, r)
	if !ok {
		return
	}
	deleted := []string{}
	for _, it := range items {
		if err := s.deleteMediaOf(r, user, it.ID); err != nil && !hasCode(err, matrix.CodeNotFound) {
			s.writeErr(w, r.Pattern, err)
			return
		}
		deleted = append(deleted, it.ID)
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"deleted_media": deleted, "total": len(deleted)})
}

// deleteMedia deletes one local media item.
func (s *Server) deleteMedia(w http.ResponseWriter, r *http.Request, _ Device) {
	id := r.PathValue("media")
	if r.PathValue("server") != s.ServerName {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "Can only delete local media"))
		return
	}
	it, err := s.mediaStore.Get(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || !schemas.ValidMediaID(id) {
		err = errMediaNotFound
	}
	if err == nil {
		err = s.deleteMediaOf(r, it.User, id)
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"deleted_media": []string{id}, "total": 1})
}

// deleteMediaOf deletes user's media id through the accounts stream, a write of the
// user's (their writer holds their media).
func (s *Server) deleteMediaOf(r *http.Request, user, id string) error {
	_, err := s.writeAccounts(r.Context(), Device{UserID: user}, user, userstreams.OpDeleteMedia, userstreams.DeleteMedia{ID: id})
	return err
}
