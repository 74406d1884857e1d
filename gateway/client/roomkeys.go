package client

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist/e2ekeys"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// maxBackupKeys bounds the session keys of one backup upload (clients send a few
// hundred at a time; the upload travels to the writer in one bus message).
const maxBackupKeys = 1000

func (s *Server) registerRoomKeys(r router) {
	r.handle("GET", "/room_keys/version", modernVersions, s.authed(s.getBackupVersion))
	r.handle("POST", "/room_keys/version", modernVersions, s.authed(s.createBackupVersion))
	r.handle("GET", "/room_keys/version/{version}", modernVersions, s.authed(s.getBackupVersion))
	r.handle("PUT", "/room_keys/version/{version}", modernVersions, s.authed(s.updateBackupVersion))
	r.handle("DELETE", "/room_keys/version/{version}", modernVersions, s.authed(s.deleteBackupVersion))
	for _, path := range []string{"/room_keys/keys", "/room_keys/keys/{room}", "/room_keys/keys/{room}/{session}"} {
		r.handle("GET", path, modernVersions, s.authed(s.getBackupKeys))
		r.handle("PUT", path, modernVersions, s.authed(s.putBackupKeys))
		r.handle("DELETE", path, modernVersions, s.authed(s.deleteBackupKeys))
	}
}

var errNoBackup = matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "No backup found")

// backupVersionInfo is a backup version as the spec shows it.
type backupVersionInfo struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Count     int64           `json:"count"`
	ETag      string          `json:"etag"`
	Version   string          `json:"version"`
}

// lookupBackup reads the backup version named v ("" for the current one). Versions
// are numbers: anything else names none.
func (s *Server) lookupBackup(r *http.Request, user, v string) (e2ekeys.Backup, error) {
	store := s.keyStore()
	if v == "" {
		b, err := store.CurrentBackup(r.Context(), user)
		if errors.Is(err, e2ekeys.ErrNotFound) {
			err = errNoBackup
		}
		return b, err
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return e2ekeys.Backup{}, errNoBackup
	}
	b, err := store.BackupVersion(r.Context(), user, n)
	if errors.Is(err, e2ekeys.ErrNotFound) {
		err = errNoBackup
	}
	return b, err
}

func (s *Server) getBackupVersion(w http.ResponseWriter, r *http.Request, dev Device) {
	b, err := s.lookupBackup(r, dev.UserID, r.PathValue("version"))
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, backupVersionInfo{Algorithm: b.Algorithm, AuthData: b.AuthData, Count: b.Count,
		ETag: strconv.FormatInt(b.ETag, 10), Version: strconv.FormatInt(b.Version, 10)})
}

type backupVersionRequest struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Version   *string         `json:"version"`
}

func decodeBackupVersion(r *http.Request) (*backupVersionRequest, error) {
	var req backupVersionRequest
	if err := matrix.DecodeBody(r, matrix.DefaultBodyLimit, &req); err != nil {
		return nil, err
	}
	if req.Algorithm == "" || !schemas.IsObject(req.AuthData) {
		return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeMissingParam, "algorithm and auth_data (an object) are required")
	}
	return &req, nil
}

func (s *Server) createBackupVersion(w http.ResponseWriter, r *http.Request, dev Device) {
	req, err := decodeBackupVersion(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	s.backupWrite(w, r, dev, userstreams.OpBackupCreate, userstreams.BackupOp{Algorithm: req.Algorithm, AuthData: req.AuthData})
}

func (s *Server) updateBackupVersion(w http.ResponseWriter, r *http.Request, dev Device) {
	req, err := decodeBackupVersion(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	v := r.PathValue("version")
	if req.Version != nil && *req.Version != v {
		s.writeErr(w, r.Pattern, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "Version in body does not match"))
		return
	}
	s.backupWrite(w, r, dev, userstreams.OpBackupUpdate, userstreams.BackupOp{Version: v, Algorithm: req.Algorithm, AuthData: req.AuthData})
}

func (s *Server) deleteBackupVersion(w http.ResponseWriter, r *http.Request, dev Device) {
	s.backupWrite(w, r, dev, userstreams.OpBackupDelete, userstreams.BackupOp{Version: r.PathValue("version")})
}

// backupWrite sends one backup operation to the user's writer and relays its answer.
func (s *Server) backupWrite(w http.ResponseWriter, r *http.Request, dev Device, op string, body userstreams.BackupOp) {
	res, err := s.writeStream(r.Context(), dev, streamWrite{stream: schemas.StreamDeviceLists, op: op, key: dev.UserID, body: body})
	var me *matrix.Error
	if errors.As(err, &me) && me.Code == userstreams.CodeWrongRoomKeysVersion {
		// The writer refused an old version: tell the client which one is current.
		if cur, cerr := s.keyStore().CurrentBackup(r.Context(), dev.UserID); cerr == nil {
			err = me.With("current_version", strconv.FormatInt(cur.Version, 10))
		}
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, res.Body)
}

// backupKeysParams reads the version query parameter, required, and the optional room
// and session of the path.
func backupKeysParams(r *http.Request) (version, room, session string, err error) {
	version = r.URL.Query().Get("version")
	if version == "" {
		return "", "", "", matrix.Errorf(http.StatusBadRequest, matrix.CodeMissingParam, "Missing string query parameter 'version'")
	}
	if r.PathValue("room") != "" {
		if room, err = roomParam(r); err != nil {
			return "", "", "", err
		}
	}
	return version, room, r.PathValue("session"), nil
}

// keyBackupData is one session key as clients read it.
type keyBackupData struct {
	FirstMessageIndex *int64          `json:"first_message_index"`
	ForwardedCount    *int64          `json:"forwarded_count"`
	IsVerified        *bool           `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// roomKeyBackup is one room's keys as clients read them.
type roomKeyBackup struct {
	Sessions map[string]keyBackupData `json:"sessions"`
}

func (s *Server) getBackupKeys(w http.ResponseWriter, r *http.Request, dev Device) {
	version, room, session, err := backupKeysParams(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	b, err := s.lookupBackup(r, dev.UserID, version)
	if errors.Is(err, errNoBackup) {
		err = matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "Unknown backup version")
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	keys, err := s.keyStore().BackupKeys(r.Context(), dev.UserID, b.Version, room, session)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	rooms := map[string]roomKeyBackup{}
	for _, k := range keys {
		if rooms[k.Room].Sessions == nil {
			rooms[k.Room] = roomKeyBackup{Sessions: map[string]keyBackupData{}}
		}
		rooms[k.Room].Sessions[k.Session] = keyBackupData{FirstMessageIndex: &k.FirstMessageIndex,
			ForwardedCount: &k.ForwardedCount, IsVerified: &k.IsVerified, SessionData: k.SessionData}
	}
	switch {
	case session != "":
		data, ok := rooms[room].Sessions[session]
		if !ok {
			s.writeErr(w, r.Pattern, matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "No room_keys found"))
			return
		}
		matrix.WriteJSON(w, http.StatusOK, data)
	case room != "":
		rk := rooms[room]
		if rk.Sessions == nil {
			rk.Sessions = map[string]keyBackupData{}
		}
		matrix.WriteJSON(w, http.StatusOK, rk)
	default:
		matrix.WriteJSON(w, http.StatusOK, map[string]any{"rooms": rooms})
	}
}

// uploadedKey is one session key as clients send it; is_verified is read by hand so a
// value that is not a boolean gets Synapse's error rather than a decoding one.
type uploadedKey struct {
	FirstMessageIndex *int64          `json:"first_message_index"`
	ForwardedCount    *int64          `json:"forwarded_count"`
	IsVerified        json.RawMessage `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

type uploadedRoom struct {
	Sessions map[string]uploadedKey `json:"sessions"`
}

// decodeBackupKeys reads the session keys of a backup upload, whichever of the three
// paths it came by.
func decodeBackupKeys(r *http.Request, room, session string) ([]schemas.BackupKey, error) {
	var rooms map[string]uploadedRoom
	switch {
	case session != "":
		var k uploadedKey
		if err := matrix.DecodeBody(r, maxKeysUploadBody, &k); err != nil {
			return nil, err
		}
		rooms = map[string]uploadedRoom{room: {Sessions: map[string]uploadedKey{session: k}}}
	case room != "":
		var rk uploadedRoom
		if err := matrix.DecodeBody(r, maxKeysUploadBody, &rk); err != nil {
			return nil, err
		}
		rooms = map[string]uploadedRoom{room: rk}
	default:
		var all struct {
			Rooms map[string]uploadedRoom `json:"rooms"`
		}
		if err := matrix.DecodeBody(r, maxKeysUploadBody, &all); err != nil {
			return nil, err
		}
		rooms = all.Rooms
	}
	var keys []schemas.BackupKey
	for roomID, rk := range rooms {
		if room == "" && !validRoomID(roomID) {
			return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "invalid room id %q", roomID)
		}
		for sessionID, k := range rk.Sessions {
			var verified bool
			if json.Unmarshal(k.IsVerified, &verified) != nil {
				return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam,
					"is_verified must be a boolean in keys for session %s in room %s", sessionID, roomID)
			}
			if sessionID == "" || k.FirstMessageIndex == nil || k.ForwardedCount == nil || !schemas.IsObject(k.SessionData) {
				return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON,
					"keys need first_message_index, forwarded_count, is_verified and session_data (session %s)", sessionID)
			}
			keys = append(keys, schemas.BackupKey{Room: roomID, Session: sessionID, FirstMessageIndex: *k.FirstMessageIndex,
				ForwardedCount: *k.ForwardedCount, IsVerified: verified, SessionData: k.SessionData})
		}
	}
	if len(keys) > maxBackupKeys {
		return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeTooLarge, "at most %d keys may be uploaded at once", maxBackupKeys)
	}
	return keys, nil
}

func (s *Server) putBackupKeys(w http.ResponseWriter, r *http.Request, dev Device) {
	version, room, session, err := backupKeysParams(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	keys, err := decodeBackupKeys(r, room, session)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	s.backupWrite(w, r, dev, userstreams.OpBackupKeysPut, userstreams.BackupOp{Version: version, Keys: keys})
}

func (s *Server) deleteBackupKeys(w http.ResponseWriter, r *http.Request, dev Device) {
	version, room, session, err := backupKeysParams(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	s.backupWrite(w, r, dev, userstreams.OpBackupKeysDelete, userstreams.BackupOp{Version: version, Room: room, Session: session})
}
