package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist/presence"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// presenceStore reads the presence projection and who shares a room with whom.
type presenceStore interface {
	Get(ctx context.Context, user string) (presence.Item, error)
	Users(ctx context.Context, users []string) ([]presence.Item, error)
	Visible(ctx context.Context, user string, includeOffline bool) ([]presence.Item, error)
	Changed(ctx context.Context, user string, from, to uint64) ([]presence.Item, error)
	SharesRoom(ctx context.Context, a, b string) (bool, error)
	JoinedMembers(ctx context.Context, rooms []string) ([]string, error)
}

// maxPresenceBody bounds a PUT /presence body: a state and a status message of at most
// userstreams.MaxStatusMsg bytes, however the client escapes it.
const maxPresenceBody = 64 << 10

func (s *Server) registerPresence(r router) {
	r.handle("GET", "/presence/{user}/status", allVersions, s.authed(s.getPresence))
	r.handle("PUT", "/presence/{user}/status", allVersions, s.authed(s.putPresence))
}

// presenceUser reads the path's user ID; Synapse answers 400 M_INVALID_PARAM for one
// that is not a user ID.
func presenceUser(r *http.Request) (string, error) {
	user := r.PathValue("user")
	if !validUserID(user) {
		return "", matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "invalid user id %q", user)
	}
	return user, nil
}

// getPresence answers a user's presence to themselves and to users sharing a room with
// them; anyone else, whether the user exists or not, gets 403 as from Synapse.
func (s *Server) getPresence(w http.ResponseWriter, r *http.Request, dev Device) {
	user, err := presenceUser(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if !s.Presence.Enabled {
		// Synapse's answer with presence off.
		matrix.WriteJSON(w, http.StatusOK, schemas.PresenceContent{Presence: schemas.PresenceOffline})
		return
	}
	if user != dev.UserID {
		shares, err := s.presence.SharesRoom(r.Context(), dev.UserID, user)
		if err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
		if !shares {
			s.writeErr(w, r.Pattern, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "You are not allowed to see their presence."))
			return
		}
	}
	it, err := s.presence.Get(r.Context(), user)
	if errors.Is(err, presence.ErrNotFound) {
		it, err = presence.Item{PresenceRecord: offline(user)}, nil
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, schemas.FormatPresence(&it.PresenceRecord, time.Now()))
}

// offline is the presence of a user nothing was ever announced for.
func offline(user string) schemas.PresenceRecord {
	return schemas.PresenceRecord{V: schemas.PresenceVersion, User: user, State: schemas.PresenceOffline}
}

// putPresence sets the requester's own presence, with Synapse's checks in Synapse's
// order: whose it is, the rate limit, then the body.
func (s *Server) putPresence(w http.ResponseWriter, r *http.Request, dev Device) {
	user, err := presenceUser(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if user != dev.UserID {
		s.writeErr(w, r.Pattern, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "Can only set your own presence state"))
		return
	}
	if !take(w, s.limits.presencePut, dev.UserID) {
		return
	}
	body, err := decodePresence(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if s.Presence.Track() {
		_, err = s.writeStream(r.Context(), dev, streamWrite{stream: schemas.StreamPresence, op: userstreams.OpPresenceSet,
			key: dev.UserID, body: body})
		if err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}

// decodePresence reads a PUT /presence body as Synapse does: presence is required,
// status_msg is an optional string, and nothing else is allowed.
func decodePresence(r *http.Request) (*userstreams.PresenceSet, error) {
	var fields map[string]json.RawMessage
	if err := matrix.DecodeBody(r, maxPresenceBody, &fields); err != nil {
		return nil, err
	}
	body := &userstreams.PresenceSet{}
	for k, v := range fields {
		var str *string
		switch k {
		case "presence":
			str = &body.Presence
		case "status_msg":
			body.StatusMsg = new(string)
			str = body.StatusMsg
		default:
			return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "Unable to parse state: unknown key %q", k)
		}
		// null is not a string either (Synapse refuses it too).
		if string(v) == "null" || json.Unmarshal(v, str) != nil {
			return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "Unable to parse state: %s must be a string", k)
		}
	}
	if _, ok := fields["presence"]; !ok {
		return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "Unable to parse state: presence is required")
	}
	if e := body.Validate(); e != nil {
		return nil, matrix.Errorf(e.Status, e.Code, "%s", e.Message)
	}
	return body, nil
}
