package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// Synapse's room deletion in the admin API: local members are made to leave (and
// joined to a new room, when asked), the room leaves the directory and loses its
// aliases, is blocked when asked, and is purged: the room's writer appends a purged
// batch, every projection drops the room, and the log keeps none of its messages.

func (s *Server) registerRoomDeletion(r router) {
	r.raw("DELETE", adminPrefix+"/v1/rooms/{room}", s.authed(s.asAdmin(s.deleteRoomNow)))
	r.raw("DELETE", adminPrefix+"/v2/rooms/{room}", s.authed(s.asAdmin(s.deleteRoomLater)))
	// v2/rooms/{roomId}/delete_status and v2/rooms/delete_status/{deleteId} overlap
	// as patterns: one route takes both.
	r.raw("GET", adminPrefix+"/v2/rooms/{a}/{b}", s.authed(s.asAdmin(s.deleteStatuses)))
}

// Synapse's defaults for the room the members are moved to.
const (
	defaultNewRoomName = "Content Violation Notification"
	defaultNewRoomText = "Sharing illegal content on this server is not permitted and rooms in violation will be blocked."
	// deletionStatusLifetime is how long a finished deletion's status is kept.
	deletionStatusLifetime = 24 * time.Hour
)

// roomDeletion is the body of a room deletion.
type roomDeletion struct {
	NewRoomUserID string `json:"new_room_user_id"`
	RoomName      string `json:"room_name"`
	Message       string `json:"message"`
	Block         bool   `json:"block"`
	Purge         *bool  `json:"purge"`
	ForcePurge    bool   `json:"force_purge"`
}

// shutdown is what a room deletion did.
type shutdown struct {
	KickedUsers       []string `json:"kicked_users"`
	FailedToKickUsers []string `json:"failed_to_kick_users"`
	LocalAliases      []string `json:"local_aliases"`
	NewRoomID         *string  `json:"new_room_id"`
}

// deletionStatus is a deletion of the v2 API as its status endpoints show it.
type deletionStatus struct {
	DeleteID string   `json:"delete_id"`
	RoomID   string   `json:"-"`
	Status   string   `json:"status"`
	Shutdown shutdown `json:"shutdown_room"`
	Error    string   `json:"error,omitempty"`
	done     time.Time
}

// deletions are this process's v2 deletions, kept in memory for a day after they end.
type deletions struct {
	mu   sync.Mutex
	byID map[string]*deletionStatus
}

func (d *deletions) add(st *deletionStatus) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.byID == nil {
		d.byID = map[string]*deletionStatus{}
	}
	for id, old := range d.byID {
		if !old.done.IsZero() && time.Since(old.done) > deletionStatusLifetime {
			delete(d.byID, id)
		}
	}
	d.byID[st.DeleteID] = st
}

func (d *deletions) update(id string, f func(*deletionStatus)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if st := d.byID[id]; st != nil {
		f(st)
	}
}

// get returns copies of the statuses match picks.
func (d *deletions) get(match func(*deletionStatus) bool) []deletionStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []deletionStatus
	for _, st := range d.byID {
		if match(st) {
			out = append(out, *st)
		}
	}
	return out
}

// readDeletion reads and checks a deletion request, or writes the error.
func (s *Server) readDeletion(w http.ResponseWriter, r *http.Request) (string, roomDeletion, bool) {
	var req roomDeletion
	room, err := roomParam(r)
	if err == nil && r.ContentLength != 0 {
		err = matrix.DecodeBody(r, maxAdminBody, &req)
	}
	if err == nil && req.NewRoomUserID != "" {
		var exists bool
		if !validUserID(req.NewRoomUserID) || !isLocal(req.NewRoomUserID, s.ServerName) {
			err = matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "new_room_user_id must be a local user")
		} else if exists, err = s.DB.UserExists(r.Context(), req.NewRoomUserID); err == nil && !exists {
			err = matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "User %s does not exist", req.NewRoomUserID)
		}
	}
	if err == nil && !req.Block {
		// A room this server does not know may still be blocked, against later joins.
		var exists bool
		if exists, err = s.DB.RoomExists(r.Context(), room); err == nil && !exists {
			err = matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "Unknown room %s", room)
		}
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return "", req, false
	}
	return room, req, true
}

// deleteRoomNow deletes a room and answers what it did (the v1 API).
func (s *Server) deleteRoomNow(w http.ResponseWriter, r *http.Request, dev Device) {
	room, req, ok := s.readDeletion(w, r)
	if !ok {
		return
	}
	res, err := s.deleteRoom(context.WithoutCancel(r.Context()), dev, room, req)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, res)
}

// deleteRoomLater starts a room's deletion and answers its ID (the v2 API); the status
// endpoints of the process that took it follow it.
func (s *Server) deleteRoomLater(w http.ResponseWriter, r *http.Request, dev Device) {
	room, req, ok := s.readDeletion(w, r)
	if !ok {
		return
	}
	st := &deletionStatus{DeleteID: randomString(16, letters), RoomID: room, Status: "shutting_down"}
	s.deletions.add(st)
	go func() {
		res, err := s.deleteRoom(context.WithoutCancel(r.Context()), dev, room, req)
		s.deletions.update(st.DeleteID, func(st *deletionStatus) {
			st.Shutdown, st.Status, st.done = res, "complete", time.Now()
			if err != nil {
				st.Status, st.Error = "failed", err.Error()
			}
		})
	}()
	matrix.WriteJSON(w, http.StatusOK, map[string]string{"delete_id": st.DeleteID})
}

// deleteStatuses answers the deletions of a room, or one deletion by its ID.
func (s *Server) deleteStatuses(w http.ResponseWriter, r *http.Request, _ Device) {
	a, b := r.PathValue("a"), r.PathValue("b")
	switch {
	case a == "delete_status":
		if found := s.deletions.get(func(st *deletionStatus) bool { return st.DeleteID == b }); len(found) > 0 {
			matrix.WriteJSON(w, http.StatusOK, found[0])
			return
		}
	case b == "delete_status":
		if found := s.deletions.get(func(st *deletionStatus) bool { return st.RoomID == a }); len(found) > 0 {
			matrix.WriteJSON(w, http.StatusOK, map[string]any{"results": found})
			return
		}
	default:
		matrix.WriteError(w, matrix.Errorf(http.StatusNotFound, matrix.CodeUnrecognized, "Unrecognized request"))
		return
	}
	matrix.WriteError(w, matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "No such deletion on this process"))
}

// deleteRoom does a room's deletion, step by step; a step that fails ends it, and the
// request may be made again (every step is idempotent).
func (s *Server) deleteRoom(ctx context.Context, admin Device, room string, req roomDeletion) (shutdown, error) {
	res := shutdown{KickedUsers: []string{}, FailedToKickUsers: []string{}, LocalAliases: []string{}}
	if req.Block {
		if _, err := s.writeAccounts(ctx, admin, room, userstreams.OpBlockRoom, userstreams.ListRoom{Room: room}); err != nil {
			return res, err
		}
	}
	exists, err := s.DB.RoomExists(ctx, room)
	if err != nil || !exists {
		return res, err
	}
	if _, err := s.writeAccounts(ctx, admin, room, userstreams.OpListRoom, userstreams.ListRoom{Room: room}); err != nil {
		return res, err
	}
	aliases, err := s.DB.AliasesOfRooms(ctx, []string{room})
	if err != nil {
		return res, err
	}
	for _, alias := range aliases[room] {
		_, err := s.writeAccounts(ctx, admin, alias, userstreams.OpDeleteAlias, userstreams.AliasChange{Alias: alias, Moderator: true})
		if err != nil && !hasCode(err, matrix.CodeNotFound) {
			return res, err
		}
		res.LocalAliases = append(res.LocalAliases, alias)
	}
	for _, membership := range []string{"join", "invite", "knock"} {
		members, err := s.DB.Members(ctx, room, membership)
		if err != nil {
			return res, err
		}
		for _, m := range members {
			user := *m.StateKey
			if !isLocal(user, s.ServerName) {
				continue
			}
			if err := s.memberEvent(ctx, room, user, user, "leave"); err != nil {
				s.Log.Warn("room deletion: member not removed", zap.String("room_id", room), zap.String("user_id", user), zap.Error(err))
				res.FailedToKickUsers = append(res.FailedToKickUsers, user)
				continue
			}
			res.KickedUsers = append(res.KickedUsers, user)
		}
	}
	if req.NewRoomUserID != "" {
		id, err := s.moveMembers(ctx, req, res.KickedUsers)
		if err != nil {
			return res, err
		}
		res.NewRoomID = &id
	}
	if req.Purge != nil && !*req.Purge {
		return res, nil
	}
	if len(res.FailedToKickUsers) > 0 && !req.ForcePurge {
		return res, matrix.Errorf(http.StatusBadRequest, matrix.CodeUnknown, "local users are still in the room; force_purge purges it anyway")
	}
	_, err = s.submit(ctx, &schemas.Intent{Kind: schemas.KindPurgeRoom, ID: randomIntentID(), RoomID: room, Sender: admin.UserID})
	if hasCode(err, matrix.CodeNotFound) {
		err = nil // purged already
	}
	return res, err
}

// moveMembers creates the room the removed members are joined to, with a message from
// its creator, new_room_user_id.
func (s *Server) moveMembers(ctx context.Context, req roomDeletion, users []string) (string, error) {
	name, text := req.RoomName, req.Message
	if name == "" {
		name = defaultNewRoomName
	}
	if text == "" {
		text = defaultNewRoomText
	}
	profile, err := s.DB.GetProfile(ctx, req.NewRoomUserID)
	if err != nil && !errors.Is(err, persist.ErrNotFound) {
		return "", err
	}
	create := &createRoomRequest{Preset: "private_chat", RoomVersion: DefaultRoomVersion, Name: &name, Invite: users,
		PowerLevelContentOverride: map[string]json.RawMessage{"users_default": mustJSON(noticesUsersDefault)}}
	events, err := s.initialEvents(create, req.NewRoomUserID, profile)
	if err != nil {
		return "", err
	}
	room := "!" + randomString(18, letters) + ":" + s.ServerName
	if _, err := s.submit(ctx, &schemas.Intent{Kind: schemas.KindCreateRoom, ID: randomIntentID(), RoomID: room, Sender: req.NewRoomUserID,
		CreateRoom: &schemas.CreateRoom{RoomVersion: create.RoomVersion, Events: events}}); err != nil {
		return "", err
	}
	if _, err := s.submit(ctx, &schemas.Intent{Kind: schemas.KindClientEvent, ID: randomIntentID(), RoomID: room, Sender: req.NewRoomUserID,
		Event: &schemas.ProtoEvent{Type: "m.room.message", Content: mustJSON(map[string]string{"msgtype": "m.text", "body": text})}}); err != nil {
		return "", err
	}
	for _, user := range users {
		if err := s.memberEvent(ctx, room, user, user, "join"); err != nil {
			s.Log.Warn("room deletion: member not moved", zap.String("room_id", room), zap.String("user_id", user), zap.Error(err))
		}
	}
	return room, nil
}
