package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// ServerNotices are the settings of Synapse's server notices: with a system user's
// Localpart, server admins may send a user notices into a room the system user keeps
// with that user.
type ServerNotices struct {
	Localpart, DisplayName, AvatarURL  string
	RoomName, RoomAvatarURL, RoomTopic string
	// AutoJoin joins the user to their notices room instead of leaving them invited.
	AutoJoin bool
}

const (
	// serverNoticeTag marks the notices room in its user's tags.
	serverNoticeTag = "m.server_notice"
	// noticesUsersDefault is the power level of the user in their notices room: below
	// the events default, so only the system user speaks there.
	noticesUsersDefault       = -10
	codeCannotLeaveNoticeRoom = "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM"
)

func (s *Server) registerServerNotices(r router) {
	r.raw("POST", adminPrefix+"/v1/send_server_notice", s.authed(s.asAdmin(s.sendServerNotice)))
	r.raw("PUT", adminPrefix+"/v1/send_server_notice/{txn}", s.authed(s.asAdmin(s.sendServerNotice)))
}

// noticesUser is the system user who sends server notices.
func (s *Server) noticesUser() string { return "@" + s.Notices.Localpart + ":" + s.ServerName }

// noticeRoomID is the one notices room of user, for ever: derived from the user ID, so
// two notices sent at once create one room, and leaving it is checked without a query.
func (s *Server) noticeRoomID(user string) string {
	h := sha256.Sum256([]byte("server notices\x00" + user))
	return "!n" + hex.EncodeToString(h[:12]) + ":" + s.ServerName
}

// refuseNoticeRoomLeave is 403 M_CANNOT_LEAVE_SERVER_NOTICE_ROOM when user would reject
// the invite to their notices room, as Synapse refuses it; once joined, they may leave.
func (s *Server) refuseNoticeRoomLeave(ctx context.Context, room, user string) error {
	if s.Notices.Localpart == "" || room != s.noticeRoomID(user) {
		return nil
	}
	m, err := s.DB.Membership(ctx, room, user)
	if err != nil {
		return err
	}
	if m.Membership == "invite" {
		return matrix.Errorf(http.StatusForbidden, codeCannotLeaveNoticeRoom, "You cannot reject this invite")
	}
	return nil
}

// serverNoticeRequest is the body of send_server_notice.
type serverNoticeRequest struct {
	UserID   string          `json:"user_id"`
	Content  json.RawMessage `json:"content"`
	Type     string          `json:"type"`
	StateKey *string         `json:"state_key"`
}

// sendServerNotice sends an event (m.room.message unless the body names a type) from
// the system user into the user's notices room, creating the room, and inviting the
// user back after they left it. With a transaction ID the same notice is sent once.
func (s *Server) sendServerNotice(w http.ResponseWriter, r *http.Request, dev Device) {
	if s.Notices.Localpart == "" {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeUnknown, "Server notices are not enabled on this server"))
		return
	}
	var req serverNoticeRequest
	if err := matrix.DecodeBody(r, maxEventBody, &req); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if req.Type == "" {
		req.Type = "m.room.message"
	}
	switch {
	case !validUserID(req.UserID) || !isLocal(req.UserID, s.ServerName):
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "Server notices can only be sent to local users"))
		return
	case !schemas.IsObject(req.Content):
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "content must be an object"))
		return
	}
	ctx := context.WithoutCancel(r.Context())
	exists, err := s.DB.UserExists(ctx, req.UserID)
	if err == nil && !exists {
		err = matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "Unknown user %s", req.UserID)
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	room, err := s.noticeRoom(ctx, req.UserID)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	id := randomIntentID()
	if txn := r.PathValue("txn"); txn != "" {
		id = txnIntentID(dev, r)
	}
	ids, err := s.submit(ctx, &schemas.Intent{Kind: schemas.KindClientEvent, ID: id, RoomID: room, Sender: s.noticesUser(),
		Event: &schemas.ProtoEvent{Type: req.Type, StateKey: req.StateKey, Content: req.Content}})
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]string{"event_id": ids[0]})
}

// noticeRoom returns the user's notices room, first creating the system user and the
// room (tagged m.server_notice for the user) when they do not exist, and inviting the
// user (joining them, with auto_join) when they are not in it.
func (s *Server) noticeRoom(ctx context.Context, user string) (string, error) {
	room := s.noticeRoomID(user)
	exists, err := s.DB.RoomExists(ctx, room)
	if err != nil {
		return "", err
	}
	system := s.noticesUser()
	if !exists {
		if err := s.ensureNoticesUser(ctx); err != nil {
			return "", err
		}
		if err := s.createNoticeRoom(ctx, room, user); err != nil {
			return "", err
		}
	} else {
		m, err := s.DB.Membership(ctx, room, user)
		if err != nil {
			return "", err
		}
		if m.Membership != "join" && m.Membership != "invite" {
			if err := s.memberEvent(ctx, room, system, user, "invite"); err != nil {
				return "", err
			}
		}
		if m.Membership == "join" || !s.Notices.AutoJoin {
			return room, nil
		}
	}
	if s.Notices.AutoJoin {
		if err := s.memberEvent(ctx, room, user, user, "join"); err != nil {
			return "", err
		}
	}
	return room, nil
}

// ensureNoticesUser registers the system user, with the configured profile, unless it
// exists.
func (s *Server) ensureNoticesUser(ctx context.Context) error {
	system := s.noticesUser()
	exists, err := s.DB.UserExists(ctx, system)
	if err != nil || exists {
		return err
	}
	dev := Device{UserID: system}
	if _, err := s.writeAccounts(ctx, dev, system, userstreams.OpRegister, userstreams.Register{}); err != nil && !hasCode(err, "M_USER_IN_USE") {
		return err
	}
	for field, v := range map[string]string{schemas.ProfileDisplayName: s.Notices.DisplayName, schemas.ProfileAvatarURL: s.Notices.AvatarURL} {
		if v == "" {
			continue
		}
		if _, err := s.writeAccounts(ctx, dev, system, userstreams.OpSetProfile, userstreams.SetProfile{Field: field, Value: &v}); err != nil {
			return err
		}
	}
	return nil
}

// createNoticeRoom creates the user's notices room, the user invited and unable to
// speak in it, and tags it for them. Its intent ID is the room's: two creations at
// once are one.
func (s *Server) createNoticeRoom(ctx context.Context, room, user string) error {
	system := s.noticesUser()
	profile, err := s.DB.GetProfile(ctx, system)
	if err != nil && !errors.Is(err, persist.ErrNotFound) {
		return err
	}
	req := &createRoomRequest{Preset: "private_chat", RoomVersion: DefaultRoomVersion, Invite: []string{user},
		CreationContent:           map[string]json.RawMessage{"m.federate": mustJSON(false)},
		PowerLevelContentOverride: map[string]json.RawMessage{"users_default": mustJSON(noticesUsersDefault)}}
	if n := s.Notices.RoomName; n != "" {
		req.Name = &n
	}
	if t := s.Notices.RoomTopic; t != "" {
		req.Topic = &t
	}
	if a := s.Notices.RoomAvatarURL; a != "" {
		req.InitialState = []initialStateEvent{{Type: "m.room.avatar", Content: mustJSON(map[string]string{"url": a})}}
	}
	events, err := s.initialEvents(req, system, profile)
	if err != nil {
		return err
	}
	if _, err := s.submit(ctx, &schemas.Intent{Kind: schemas.KindCreateRoom, ID: "n" + room, RoomID: room, Sender: system,
		CreateRoom: &schemas.CreateRoom{RoomVersion: req.RoomVersion, Events: events}}); err != nil {
		return err
	}
	_, err = s.writeStream(ctx, Device{UserID: user}, streamWrite{stream: schemas.StreamAccountData, op: userstreams.OpTagPut, key: user,
		body: userstreams.TagChange{Room: room, Tag: serverNoticeTag, Content: json.RawMessage(`{}`)}})
	return err
}

// memberEvent sends sender's member event of membership for target, without the
// checks of the membership endpoints (the server acts: notices, room deletion).
func (s *Server) memberEvent(ctx context.Context, room, sender, target, membership string) error {
	_, err := s.submit(ctx, &schemas.Intent{Kind: schemas.KindClientEvent, ID: randomIntentID(), RoomID: room, Sender: sender,
		Event: &schemas.ProtoEvent{Type: "m.room.member", StateKey: &target, Content: mustJSON(map[string]string{"membership": membership})}})
	return err
}
