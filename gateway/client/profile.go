package client

import (
	"errors"
	"net/http"

	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/schemas"
)

// maxDisplayName bounds a display name, as Synapse does.
const maxDisplayName = 256

func (s *Server) registerProfile(r router) {
	// Profiles are public: reading one needs no authentication.
	r.handle("GET", "/profile/{user}", allVersions, s.getProfile)
	r.handle("GET", "/profile/{user}/{field}", allVersions, s.getProfile)
	r.handle("PUT", "/profile/{user}/{field}", allVersions, s.authed(s.putProfileField))
}

// profileBody is a profile as the client API shows it.
type profileBody struct {
	DisplayName *string `json:"displayname,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
}

func (s *Server) getProfile(w http.ResponseWriter, r *http.Request) {
	p, err := s.DB.GetProfile(r.Context(), r.PathValue("user"))
	if errors.Is(err, persist.ErrNotFound) {
		matrix.WriteError(w, matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "no such user"))
		return
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	body := profileBody{DisplayName: p.DisplayName, AvatarURL: p.AvatarURL}
	switch r.PathValue("field") {
	case "":
	case "displayname":
		body.AvatarURL = nil
	case "avatar_url":
		body.DisplayName = nil
	default:
		matrix.WriteError(w, matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "no such profile field"))
		return
	}
	matrix.WriteJSON(w, http.StatusOK, body)
}

// putProfileField sets the caller's display name or avatar, then announces it in every
// room they are joined to with a new member event, as clients expect.
func (s *Server) putProfileField(w http.ResponseWriter, r *http.Request, dev Device) {
	if r.PathValue("user") != dev.UserID {
		matrix.WriteError(w, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "you may only change your own profile"))
		return
	}
	field := r.PathValue("field")
	if field != "displayname" && field != "avatar_url" {
		matrix.WriteError(w, matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "no such profile field"))
		return
	}
	var body profileBody
	if err := matrix.DecodeBody(r, maxEventBody, &body); err != nil {
		matrix.WriteError(w, err)
		return
	}
	p, err := s.DB.GetProfile(r.Context(), dev.UserID)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if field == "displayname" {
		if body.DisplayName != nil && len(*body.DisplayName) > maxDisplayName {
			matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "display names are at most %d bytes", maxDisplayName))
			return
		}
		p.DisplayName = body.DisplayName
	} else {
		p.AvatarURL = body.AvatarURL
	}
	if err := s.DB.SetProfile(r.Context(), dev.UserID, p); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	rooms, err := s.DB.RoomsOfUser(r.Context(), dev.UserID, "join")
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	content := memberContent("join", "", p)
	for _, room := range rooms {
		target := dev.UserID
		if _, err := s.submit(r.Context(), &schemas.Intent{
			Kind: schemas.KindClientEvent, ID: randomIntentID(), RoomID: room, Sender: dev.UserID, DeviceID: dev.DeviceID,
			Event: &schemas.ProtoEvent{Type: "m.room.member", StateKey: &target, Content: content},
		}); err != nil {
			// The profile is stored; a room that refuses the update keeps the old one.
			s.Log.Warn("profile not announced in a room", zap.String("room_id", room), zap.Error(err))
		}
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}
