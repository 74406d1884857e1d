package client

import (
	"context"
	"errors"
	"net/http"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/processors/userstreams"
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
	// A user of an application service's exclusive namespace that nobody knows is asked
	// of the service, which may create it.
	if errors.Is(err, persist.ErrNotFound) && s.askAppServiceForUser(r.Context(), r.PathValue("user")) {
		p, err = s.DB.GetProfile(r.Context(), r.PathValue("user"))
	}
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
	case schemas.ProfileDisplayName:
		body.AvatarURL = nil
	case schemas.ProfileAvatarURL:
		body.DisplayName = nil
	default:
		matrix.WriteError(w, matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "no such profile field"))
		return
	}
	matrix.WriteJSON(w, http.StatusOK, body)
}

// Announcing a profile change: at most profileAnnounceParallel rooms at once, within
// profileAnnounceTimeout in all; the client is answered after profileAnswerWait at the
// latest (below the listeners' write timeout), the rest going on meanwhile.
const (
	profileAnnounceParallel = 8
	profileAnnounceTimeout  = time.Minute
	profileAnswerWait       = 25 * time.Second
)

// putProfileField sets the caller's display name or avatar, then announces it in every
// room they are joined to with a new member event, as clients expect, and answers once
// the rooms have it (as Synapse does). Both go on when the client disconnects: a stored
// profile that some of its rooms never hear of would stay inconsistent.
func (s *Server) putProfileField(w http.ResponseWriter, r *http.Request, dev Device) {
	if r.PathValue("user") != dev.UserID {
		matrix.WriteError(w, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "you may only change your own profile"))
		return
	}
	field := r.PathValue("field")
	if field != schemas.ProfileDisplayName && field != schemas.ProfileAvatarURL {
		matrix.WriteError(w, matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "no such profile field"))
		return
	}
	var body profileBody
	if err := matrix.DecodeBody(r, maxEventBody, &body); err != nil {
		matrix.WriteError(w, err)
		return
	}
	value := body.AvatarURL
	if field == schemas.ProfileDisplayName {
		if body.DisplayName != nil && len(*body.DisplayName) > maxDisplayName {
			matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "display names are at most %d bytes", maxDisplayName))
			return
		}
		value = body.DisplayName
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), profileAnnounceTimeout)
	// The profile announced is the one stored once this change is: a change of the
	// other field made meanwhile is announced with it, never undone.
	_, err := s.writeAccounts(ctx, dev, dev.UserID, userstreams.OpSetProfile, userstreams.SetProfile{Field: field, Value: value})
	var p persist.Profile
	if err == nil {
		p, err = s.DB.GetProfile(ctx, dev.UserID)
	}
	var rooms []string
	if err == nil {
		rooms, err = s.DB.RoomsOfUser(ctx, dev.UserID, "join")
	}
	if err != nil {
		cancel()
		s.writeErr(w, r.Pattern, err)
		return
	}
	announced := make(chan struct{})
	go func() {
		defer cancel()
		s.announceProfile(ctx, dev, rooms, p)
		close(announced)
	}()
	select {
	case <-announced:
	case <-time.After(profileAnswerWait):
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}

// announceProfile sends the user's member event carrying profile p to each of rooms,
// profileAnnounceParallel at a time. A room that refuses it keeps the old profile.
func (s *Server) announceProfile(ctx context.Context, dev Device, rooms []string, p persist.Profile) {
	content := memberContent("join", membershipBody{}, p)
	var g errgroup.Group
	g.SetLimit(profileAnnounceParallel)
	for _, room := range rooms {
		g.Go(func() error {
			target := dev.UserID
			if _, err := s.submit(ctx, &schemas.Intent{
				Kind: schemas.KindClientEvent, ID: randomIntentID(), RoomID: room, Sender: dev.UserID, DeviceID: dev.DeviceID,
				Event: &schemas.ProtoEvent{Type: "m.room.member", StateKey: &target, Content: content},
			}); err != nil {
				s.Log.Warn("profile not announced in a room", zap.String("room_id", room), zap.Error(err))
			}
			return nil
		})
	}
	_ = g.Wait() // every announcement returns nil; failures are logged
}
