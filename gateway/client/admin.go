package client

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// Synapse's admin API, the part operators and provisioning tools use. Every endpoint
// but the shared-secret registration needs a server admin's access token (403
// M_FORBIDDEN otherwise).

// ServerVersion is what GET /_synapse/admin/v1/server_version reports.
const ServerVersion = "ganglion 0.1"

const (
	adminPrefix       = "/_synapse/admin"
	registerNonceKind = "admin_register_nonce"
	maxAdminBody      = 64 << 10
)

func (s *Server) registerAdmin(r router) {
	r.raw("GET", adminPrefix+"/v1/register", s.registerNonce)
	r.raw("POST", adminPrefix+"/v1/register", s.sharedSecretRegister)
	r.raw("GET", adminPrefix+"/v1/server_version", s.authed(s.asAdmin(s.serverVersion)))
	r.raw("GET", adminPrefix+"/v2/users", s.authed(s.asAdmin(s.adminUsers)))
	r.raw("GET", adminPrefix+"/v2/users/{user}", s.authed(s.asAdmin(s.adminGetUser)))
	r.raw("PUT", adminPrefix+"/v2/users/{user}", s.authed(s.asAdmin(s.adminPutUser)))
	r.raw("POST", adminPrefix+"/v1/reset_password/{user}", s.authed(s.asAdmin(s.adminResetPassword)))
	r.raw("GET", adminPrefix+"/v1/users/{user}/joined_rooms", s.authed(s.asAdmin(s.adminJoinedRooms)))
	r.raw("GET", adminPrefix+"/v1/rooms", s.authed(s.asAdmin(s.adminRooms)))
	r.raw("GET", adminPrefix+"/v1/rooms/{room}", s.authed(s.asAdmin(s.adminRoom)))
}

// asAdmin lets only server admins through.
func (s *Server) asAdmin(h func(http.ResponseWriter, *http.Request, Device)) func(http.ResponseWriter, *http.Request, Device) {
	return func(w http.ResponseWriter, r *http.Request, dev Device) {
		admin, err := s.DB.IsAdmin(r.Context(), dev.UserID)
		if err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
		if !admin {
			matrix.WriteError(w, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "You are not a server admin"))
			return
		}
		h(w, r, dev)
	}
}

func (s *Server) serverVersion(w http.ResponseWriter, _ *http.Request, _ Device) {
	matrix.WriteJSON(w, http.StatusOK, map[string]string{"server_version": ServerVersion})
}

var errNoSharedSecret = matrix.Errorf(http.StatusBadRequest, matrix.CodeUnknown, "Shared secret registration is not enabled")

// registerNonce gives a nonce for one shared-secret registration within the UIA
// session lifetime (Postgres holds it, so any process takes the registration).
func (s *Server) registerNonce(w http.ResponseWriter, r *http.Request) {
	if s.RegistrationSharedSecret == "" {
		matrix.WriteError(w, errNoSharedSecret)
		return
	}
	nonce, err := s.DB.CreateUIASession(r.Context(), registerNonceKind)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]string{"nonce": nonce})
}

type sharedSecretRequest struct {
	Nonce       string  `json:"nonce"`
	Username    string  `json:"username"`
	DisplayName *string `json:"displayname"`
	Password    string  `json:"password"`
	Admin       bool    `json:"admin"`
	UserType    *string `json:"user_type"`
	MAC         string  `json:"mac"`
}

// RegistrationMAC is the mac of a shared-secret registration, as Synapse's: the hex
// HMAC-SHA1, keyed by the secret, of nonce, username, password and admin or notadmin
// (then user_type when set), joined by NUL bytes.
func RegistrationMAC(secret, nonce, username, password string, admin bool, userType *string) string {
	m := hmac.New(sha1.New, []byte(secret))
	role := "notadmin"
	if admin {
		role = "admin"
	}
	parts := []string{nonce, username, password, role}
	if userType != nil {
		parts = append(parts, *userType)
	}
	for i, p := range parts {
		if i > 0 {
			m.Write([]byte{0})
		}
		m.Write([]byte(p))
	}
	return hex.EncodeToString(m.Sum(nil))
}

// sharedSecretRegister registers a user, an admin when asked, for whoever knows
// registration_shared_secret (register_new_matrix_user, ganglion register-user), and
// logs them in.
func (s *Server) sharedSecretRegister(w http.ResponseWriter, r *http.Request) {
	if s.RegistrationSharedSecret == "" {
		matrix.WriteError(w, errNoSharedSecret)
		return
	}
	var req sharedSecretRequest
	if err := matrix.DecodeBody(r, maxAdminBody, &req); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	ctx := r.Context()
	want := RegistrationMAC(s.RegistrationSharedSecret, req.Nonce, req.Username, req.Password, req.Admin, req.UserType)
	if !hmac.Equal([]byte(want), []byte(req.MAC)) {
		matrix.WriteError(w, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "HMAC incorrect"))
		return
	}
	if ok, err := s.DB.TakeUIASession(ctx, req.Nonce, registerNonceKind); err != nil || !ok {
		s.writeErr(w, r.Pattern, errors.Join(err, matrix.Errorf(http.StatusBadRequest, matrix.CodeUnknown, "unrecognised nonce")))
		return
	}
	localpart := strings.ToLower(req.Username)
	if err := s.validateLocalpart(localpart, false); err != nil {
		matrix.WriteError(w, err)
		return
	}
	if req.Password == "" || len(req.Password) > maxPasswordLen {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "Invalid password"))
		return
	}
	userID := s.userID(localpart)
	hash, err := s.DB.HashPassword(ctx, req.Password)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	dev := &userstreams.NewDevice{ID: deviceIDOrNew("")}
	toks := s.newDeviceTokens(userID, dev, false)
	if _, err := s.writeAccounts(ctx, Device{UserID: userID}, userID, userstreams.OpRegister,
		userstreams.Register{PasswordHash: string(hash), Device: dev, Admin: req.Admin}); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if req.DisplayName != nil {
		if _, err := s.writeAccounts(ctx, Device{UserID: userID}, userID, userstreams.OpSetProfile,
			userstreams.SetProfile{Field: schemas.ProfileDisplayName, Value: req.DisplayName}); err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
	}
	matrix.WriteJSON(w, http.StatusOK, credentialsResponse{UserID: userID, DeviceID: dev.ID, HomeServer: s.ServerName, deviceTokens: toks})
}

// adminTarget is the local user an admin endpoint names, or writes the error.
func (s *Server) adminTarget(w http.ResponseWriter, r *http.Request) (string, bool) {
	user := r.PathValue("user")
	if !validUserID(user) || !isLocal(user, s.ServerName) {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "Only local users can be administered"))
		return "", false
	}
	return user, true
}

func isLocal(userID, serverName string) bool {
	return len(userID) > len(serverName)+1 && userID[len(userID)-len(serverName)-1:] == ":"+serverName
}

func (s *Server) adminGetUser(w http.ResponseWriter, r *http.Request, _ Device) {
	user, ok := s.adminTarget(w, r)
	if !ok {
		return
	}
	u, err := s.DB.GetAdminUser(r.Context(), user)
	if errors.Is(err, persist.ErrNotFound) {
		matrix.WriteError(w, matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "User not found"))
		return
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, adminUserBody(u))
}

// adminUserBody is a user with the lists Synapse adds (none here).
func adminUserBody(u persist.AdminUser) map[string]any {
	return map[string]any{"name": u.Name, "displayname": u.DisplayName, "avatar_url": u.AvatarURL, "admin": u.Admin,
		"deactivated": u.Deactivated, "creation_ts": u.CreationTS, "is_guest": false, "shadow_banned": false,
		"locked": false, "user_type": nil, "threepids": []any{}, "external_ids": []any{}}
}

type adminPutUserRequest struct {
	Password      *string `json:"password"`
	LogoutDevices *bool   `json:"logout_devices"`
	DisplayName   *string `json:"displayname"`
	AvatarURL     *string `json:"avatar_url"`
	Admin         *bool   `json:"admin"`
	Deactivated   *bool   `json:"deactivated"`
}

// adminPutUser creates a user (201) or changes one (200): password, profile, admin
// flag, deactivation; each change through the accounts stream.
func (s *Server) adminPutUser(w http.ResponseWriter, r *http.Request, admin Device) {
	user, ok := s.adminTarget(w, r)
	if !ok {
		return
	}
	var req adminPutUserRequest
	if err := matrix.DecodeBody(r, maxAdminBody, &req); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	ctx := context.WithoutCancel(r.Context())
	exists, err := s.DB.UserExists(ctx, user)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	target := Device{UserID: user}
	write := func(op string, body any) error {
		_, err := s.writeAccounts(ctx, target, user, op, body)
		return err
	}
	hashOf := func(pw string) (string, error) {
		h, err := s.DB.HashPassword(ctx, pw)
		return string(h), err
	}
	err = func() error {
		if !exists {
			if err := s.validateLocalpart(user[1:len(user)-len(s.ServerName)-1], false); err != nil {
				return err
			}
			reg := userstreams.Register{Admin: req.Admin != nil && *req.Admin}
			if req.Password != nil {
				h, err := hashOf(*req.Password)
				if err != nil {
					return err
				}
				reg.PasswordHash = h
			}
			if err := write(userstreams.OpRegister, reg); err != nil {
				return err
			}
		} else {
			if req.Password != nil {
				h, err := hashOf(*req.Password)
				if err != nil {
					return err
				}
				if err := write(userstreams.OpSetPassword, userstreams.SetPassword{PasswordHash: h}); err != nil {
					return err
				}
				if req.LogoutDevices == nil || *req.LogoutDevices {
					if err := s.deleteDevices(ctx, target, nil, true); err != nil {
						return err
					}
				}
			}
			if req.Admin != nil {
				if err := write(userstreams.OpSetAdmin, userstreams.SetAdmin{Admin: *req.Admin}); err != nil {
					return err
				}
			}
		}
		for field, v := range map[string]*string{schemas.ProfileDisplayName: req.DisplayName, schemas.ProfileAvatarURL: req.AvatarURL} {
			if v != nil {
				if err := write(userstreams.OpSetProfile, userstreams.SetProfile{Field: field, Value: v}); err != nil {
					return err
				}
			}
		}
		if req.Deactivated != nil && *req.Deactivated {
			if err := s.deleteDevices(ctx, target, nil, true); err != nil {
				return err
			}
			return write(userstreams.OpDeactivate, userstreams.Deactivate{})
		}
		return nil
	}()
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	u, err := s.DB.GetAdminUser(ctx, user)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	status := http.StatusOK
	if !exists {
		status = http.StatusCreated
	}
	matrix.WriteJSON(w, status, adminUserBody(u))
}

// adminPage reads the from and limit of an admin list (100 by default, as Synapse).
func adminPage(r *http.Request) (offset, limit int, err error) {
	q := r.URL.Query()
	if offset, err = intParam(q.Get("from"), 0, 0, 1<<31-1); err != nil {
		return 0, 0, err
	}
	limit, err = intParam(q.Get("limit"), 100, 1, 1000)
	return offset, limit, err
}

func (s *Server) adminUsers(w http.ResponseWriter, r *http.Request, _ Device) {
	offset, limit, err := adminPage(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	q := r.URL.Query()
	name := q.Get("name")
	if name == "" {
		name = q.Get("user_id")
	}
	users, total, err := s.DB.AdminUsers(r.Context(), offset, limit, name, q.Get("deactivated") == "true")
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if users == nil {
		users = []persist.AdminUser{}
	}
	resp := map[string]any{"users": users, "total": total}
	if offset+len(users) < total {
		resp["next_token"] = strconv.Itoa(offset + len(users))
	}
	matrix.WriteJSON(w, http.StatusOK, resp)
}

type resetPasswordRequest struct {
	NewPassword   string `json:"new_password"`
	LogoutDevices *bool  `json:"logout_devices"`
}

func (s *Server) adminResetPassword(w http.ResponseWriter, r *http.Request, _ Device) {
	user, ok := s.adminTarget(w, r)
	if !ok {
		return
	}
	var req resetPasswordRequest
	if err := matrix.DecodeBody(r, maxAdminBody, &req); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if req.NewPassword == "" || len(req.NewPassword) > maxPasswordLen {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeMissingParam, "new_password is required"))
		return
	}
	ctx := context.WithoutCancel(r.Context())
	hash, err := s.DB.HashPassword(ctx, req.NewPassword)
	if err == nil {
		_, err = s.writeAccounts(ctx, Device{UserID: user}, user, userstreams.OpSetPassword, userstreams.SetPassword{PasswordHash: string(hash)})
	}
	if err == nil && (req.LogoutDevices == nil || *req.LogoutDevices) {
		err = s.deleteDevices(ctx, Device{UserID: user}, nil, true)
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}

func (s *Server) adminJoinedRooms(w http.ResponseWriter, r *http.Request, _ Device) {
	user, ok := s.adminTarget(w, r)
	if !ok {
		return
	}
	rooms, err := s.DB.RoomsOfUser(r.Context(), user, "join")
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if rooms == nil {
		rooms = []string{}
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"joined_rooms": rooms, "total": len(rooms)})
}

func (s *Server) adminRooms(w http.ResponseWriter, r *http.Request, _ Device) {
	offset, limit, err := adminPage(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	rooms, total, err := s.DB.AdminRooms(r.Context(), offset, limit, r.URL.Query().Get("search_term"), s.ServerName)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if rooms == nil {
		rooms = []persist.AdminRoom{}
	}
	resp := map[string]any{"rooms": rooms, "offset": offset, "total_rooms": total}
	if offset+len(rooms) < total {
		resp["next_batch"] = offset + len(rooms)
	}
	matrix.WriteJSON(w, http.StatusOK, resp)
}

func (s *Server) adminRoom(w http.ResponseWriter, r *http.Request, _ Device) {
	room, err := roomParam(r)
	if err != nil {
		matrix.WriteError(w, err)
		return
	}
	info, err := s.DB.GetAdminRoom(r.Context(), room, s.ServerName)
	if errors.Is(err, persist.ErrNotFound) {
		matrix.WriteError(w, matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "Room not found"))
		return
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, info)
}
