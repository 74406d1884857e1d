package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist/accountdata"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// accountDataStore reads the account_data projection.
type accountDataStore interface {
	Get(ctx context.Context, user, room, typ string) (json.RawMessage, error)
	Changed(ctx context.Context, user string, from, to uint64) ([]accountdata.Item, error)
}

// maxAccountDataBody bounds one account data value (Synapse's is the whole request
// size limit; one value this large is already far beyond what clients store).
const maxAccountDataBody = 1 << 20

// serverControlled are account data types only the server writes (spec: 405
// M_BAD_JSON when a client tries).
var serverControlled = map[string]bool{"m.fully_read": true, pushRulesType: true}

func (s *Server) registerAccountData(r router) {
	r.handle("GET", "/user/{user}/account_data/{type}", modernVersions, s.authed(s.getAccountData))
	r.handle("PUT", "/user/{user}/account_data/{type}", modernVersions, s.authed(s.putAccountData))
	r.handle("GET", "/user/{user}/rooms/{room}/account_data/{type}", modernVersions, s.authed(s.getAccountData))
	r.handle("PUT", "/user/{user}/rooms/{room}/account_data/{type}", modernVersions, s.authed(s.putAccountData))
	r.handle("GET", "/user/{user}/rooms/{room}/tags", modernVersions, s.authed(s.getTags))
	r.handle("PUT", "/user/{user}/rooms/{room}/tags/{tag}", modernVersions, s.authed(s.putTag))
	r.handle("DELETE", "/user/{user}/rooms/{room}/tags/{tag}", modernVersions, s.authed(s.deleteTag))
}

// ownData checks that the path's user is the requester and reads the optional room.
func ownData(r *http.Request, dev Device) (room string, err error) {
	if r.PathValue("user") != dev.UserID {
		return "", matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "cannot access another user's account data")
	}
	if r.PathValue("room") == "" {
		return "", nil
	}
	return roomParam(r)
}

func (s *Server) getAccountData(w http.ResponseWriter, r *http.Request, dev Device) {
	room, err := ownData(r, dev)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if r.PathValue("type") == pushRulesType {
		s.getPushRulesAccountData(w, r, dev, room)
		return
	}
	content, err := s.accountData.Get(r.Context(), dev.UserID, room, r.PathValue("type"))
	if errors.Is(err, accountdata.ErrNotFound) {
		err = matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "account data not found")
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, content)
}

func (s *Server) putAccountData(w http.ResponseWriter, r *http.Request, dev Device) {
	room, err := ownData(r, dev)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	typ := r.PathValue("type")
	if serverControlled[typ] {
		s.writeErr(w, r.Pattern, matrix.Errorf(http.StatusMethodNotAllowed, matrix.CodeBadJSON, "%s is controlled by the server", typ))
		return
	}
	var content json.RawMessage
	if err := matrix.DecodeBody(r, maxAccountDataBody, &content); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if !schemas.IsObject(content) {
		s.writeErr(w, r.Pattern, matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "account data must be a JSON object"))
		return
	}
	_, err = s.writeStream(r.Context(), dev, streamWrite{stream: schemas.StreamAccountData, op: userstreams.OpAccountDataPut,
		key: dev.UserID, body: userstreams.AccountDataPut{Room: room, Type: typ, Content: content}})
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}

func (s *Server) getTags(w http.ResponseWriter, r *http.Request, dev Device) {
	room, err := ownData(r, dev)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	content, err := s.accountData.Get(r.Context(), dev.UserID, room, userstreams.TagType)
	if errors.Is(err, accountdata.ErrNotFound) {
		content, err = json.RawMessage(`{"tags":{}}`), nil
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, content)
}

// maxTagBody bounds a tag's object and maxTagName its name (Synapse's limit).
const (
	maxTagBody = 4096
	maxTagName = 255
)

func (s *Server) putTag(w http.ResponseWriter, r *http.Request, dev Device) {
	var content json.RawMessage
	if err := matrix.DecodeBody(r, maxTagBody, &content); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	var tag struct {
		Order *float64 `json:"order"`
	}
	if !schemas.IsObject(content) || json.Unmarshal(content, &tag) != nil {
		s.writeErr(w, r.Pattern, matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "a tag must be a JSON object with a numeric order"))
		return
	}
	s.changeTag(w, r, dev, userstreams.OpTagPut, content)
}

func (s *Server) deleteTag(w http.ResponseWriter, r *http.Request, dev Device) {
	s.changeTag(w, r, dev, userstreams.OpTagDelete, nil)
}

func (s *Server) changeTag(w http.ResponseWriter, r *http.Request, dev Device, op string, content json.RawMessage) {
	room, err := ownData(r, dev)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	tag := r.PathValue("tag")
	if len(tag) > maxTagName {
		s.writeErr(w, r.Pattern, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "tag names are at most %d bytes", maxTagName))
		return
	}
	_, err = s.writeStream(r.Context(), dev, streamWrite{stream: schemas.StreamAccountData, op: op, key: dev.UserID,
		body: userstreams.TagChange{Room: room, Tag: tag, Content: content}})
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}

// ignoredUsers returns the users in the user's m.ignored_user_list.
func (s *Server) ignoredUsers(ctx context.Context, user string) (map[string]bool, error) {
	raw, err := s.accountData.Get(ctx, user, "", "m.ignored_user_list")
	if errors.Is(err, accountdata.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var content struct {
		IgnoredUsers map[string]json.RawMessage `json:"ignored_users"`
	}
	_ = json.Unmarshal(raw, &content) // a malformed list ignores nobody
	ignored := make(map[string]bool, len(content.IgnoredUsers))
	for u := range content.IgnoredUsers {
		ignored[u] = true
	}
	return ignored, nil
}
