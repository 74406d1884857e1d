package client

import (
	"net/http"
	"time"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// maxTypingBody bounds a typing request, two small fields.
const maxTypingBody = 4096

func (s *Server) registerTyping(r router) {
	r.handle("PUT", "/rooms/{room}/typing/{user}", allVersions, s.authed(s.putTyping))
}

// typingRequest is the body of PUT /rooms/{roomId}/typing/{userId}.
type typingRequest struct {
	Typing *bool `json:"typing"`
	// Timeout is in milliseconds; Synapse takes any number.
	Timeout *float64 `json:"timeout"`
}

// decodeTyping reads a typing request: typing is required, and a start's timeout
// defaults to 30 s and is capped at 2 minutes, as Synapse caps it.
func decodeTyping(r *http.Request) (userstreams.TypingSet, error) {
	var req typingRequest
	if err := matrix.DecodeBody(r, maxTypingBody, &req); err != nil {
		return userstreams.TypingSet{}, err
	}
	if req.Typing == nil {
		return userstreams.TypingSet{}, matrix.Errorf(http.StatusBadRequest, matrix.CodeMissingParam, "Missing params: ['typing']")
	}
	set := userstreams.TypingSet{Typing: *req.Typing}
	if set.Typing {
		timeout := userstreams.TypingDefaultTimeout
		if req.Timeout != nil {
			ms := min(max(*req.Timeout, 0), float64(userstreams.TypingMaxTimeout/time.Millisecond))
			timeout = time.Duration(ms) * time.Millisecond
		}
		set.TimeoutMS = timeout.Milliseconds()
	}
	return set, nil
}

// putTyping serves PUT /rooms/{roomId}/typing/{userId}: only the user themselves, and
// only in a room they are joined to.
func (s *Server) putTyping(w http.ResponseWriter, r *http.Request, dev Device) {
	room, err := roomParam(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	target := r.PathValue("user")
	if !validUserID(target) {
		s.writeErr(w, r.Pattern, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "invalid user id %q", target))
		return
	}
	set, err := decodeTyping(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if target != dev.UserID {
		// Synapse answers 400 with this errcode; 403 is what the refusal is.
		s.writeErr(w, r.Pattern, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "Cannot set another user's typing state"))
		return
	}
	m, err := s.DB.Membership(r.Context(), room, dev.UserID)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if m.Membership != "join" {
		s.writeErr(w, r.Pattern, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "User %s not in room %s", dev.UserID, room))
		return
	}
	if _, err := s.writeStream(r.Context(), dev, streamWrite{stream: schemas.StreamTyping, op: userstreams.OpTypingSet, key: room, body: set}); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}
