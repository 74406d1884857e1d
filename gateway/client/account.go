package client

import (
	"context"
	"net/http"
	"slices"

	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// Account management: the password, deactivation and third-party identifiers (of which
// Ganglion has none: it has no identity server).

func (s *Server) registerAccount(r router) {
	r.handle("POST", "/account/password", modernVersions, s.authed(s.changePassword))
	r.handle("POST", "/account/deactivate", modernVersions, s.authed(s.deactivate))
	r.handle("GET", "/account/3pid", modernVersions, s.authed(s.threepids))
}

// underPassword runs do once the user has given their password again (user-interactive
// auth with the m.login.password stage, bound to this user and request path), and
// answers what do returns ({} for nil) or what it failed with.
func (s *Server) underPassword(w http.ResponseWriter, r *http.Request, dev Device, auth *uiaAuth, do func(ctx context.Context) (any, error)) {
	if !check(w, s.limits.loginFailed, dev.UserID) {
		return
	}
	ctx := r.Context()
	op := uiaOp{kind: dev.UserID + " " + r.Method + " " + r.URL.Path, flows: [][]string{{stagePassword}}, check: s.passwordStage(dev)}
	session, incomplete, err := s.interactiveAuth(ctx, op, auth)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if incomplete != nil {
		matrix.WriteJSON(w, http.StatusUnauthorized, incomplete)
		return
	}
	res, err := do(ctx)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	s.endUIASession(ctx, session)
	if res == nil {
		res = struct{}{}
	}
	matrix.WriteJSON(w, http.StatusOK, res)
}

type changePasswordRequest struct {
	NewPassword   *string  `json:"new_password"`
	LogoutDevices *bool    `json:"logout_devices"`
	Auth          *uiaAuth `json:"auth"`
}

// changePassword sets a new password and, unless logout_devices is false, logs out
// every other device of the user (their pushers go with them).
func (s *Server) changePassword(w http.ResponseWriter, r *http.Request, dev Device) {
	var req changePasswordRequest
	if err := matrix.DecodeBody(r, accountBodyLimit, &req); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if req.NewPassword == nil && req.Auth != nil {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeMissingParam, "new_password is required"))
		return
	}
	if req.NewPassword != nil && len(*req.NewPassword) > maxPasswordLen {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "Password is longer than %d bytes", maxPasswordLen))
		return
	}
	s.underPassword(w, r, dev, req.Auth, func(ctx context.Context) (any, error) {
		if req.NewPassword == nil || *req.NewPassword == "" {
			return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeMissingParam, "new_password is required")
		}
		hash, err := s.DB.HashPassword(ctx, *req.NewPassword)
		if err != nil {
			return nil, err
		}
		if _, err := s.writeAccounts(ctx, dev, dev.UserID, userstreams.OpSetPassword, userstreams.SetPassword{PasswordHash: string(hash)}); err != nil {
			return nil, err
		}
		if req.LogoutDevices != nil && !*req.LogoutDevices {
			return nil, nil
		}
		devices, err := s.DB.Devices(ctx, dev.UserID)
		if err != nil {
			return nil, err
		}
		var others []string
		for _, d := range devices {
			if d.DeviceID != dev.DeviceID {
				others = append(others, d.DeviceID)
			}
		}
		if len(others) == 0 {
			return nil, nil
		}
		return nil, s.deleteDevices(ctx, dev, others, false)
	})
}

type deactivateRequest struct {
	Auth  *uiaAuth `json:"auth"`
	Erase bool     `json:"erase"`
}

// deactivate deactivates the account, as Synapse does: the profile is cleared, the
// user leaves every room and rejects every invite, every device goes, and the user ID
// stays taken; the password no longer logs in. With erase, the user's events are shown
// redacted to whoever was not in the room when they were sent, as Synapse does.
func (s *Server) deactivate(w http.ResponseWriter, r *http.Request, dev Device) {
	var req deactivateRequest
	if err := matrix.DecodeBody(r, accountBodyLimit, &req); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	s.underPassword(w, r, dev, req.Auth, func(ctx context.Context) (any, error) {
		for _, field := range []string{schemas.ProfileDisplayName, schemas.ProfileAvatarURL} {
			if _, err := s.writeAccounts(ctx, dev, dev.UserID, userstreams.OpSetProfile, userstreams.SetProfile{Field: field}); err != nil {
				return nil, err
			}
		}
		rooms, err := s.DB.RoomsOfUser(ctx, dev.UserID, "join", "invite", "knock")
		if err != nil {
			return nil, err
		}
		leave := memberContent("leave", membershipBody{}, persist.Profile{})
		for _, room := range slices.Compact(rooms) {
			target := dev.UserID
			if _, err := s.submit(ctx, &schemas.Intent{
				Kind: schemas.KindClientEvent, ID: randomIntentID(), RoomID: room, Sender: dev.UserID, DeviceID: dev.DeviceID,
				Event: &schemas.ProtoEvent{Type: "m.room.member", StateKey: &target, Content: leave},
			}); err != nil {
				s.Log.Warn("a deactivated user did not leave a room", zap.String("room_id", room), zap.Error(err))
			}
		}
		if err := s.deleteDevices(ctx, dev, nil, true); err != nil {
			return nil, err
		}
		if _, err = s.writeAccounts(ctx, dev, dev.UserID, userstreams.OpDeactivate, userstreams.Deactivate{Erase: req.Erase}); err != nil {
			return nil, err
		}
		// No identity server holds a binding of Ganglion's.
		return map[string]string{"id_server_unbind_result": "no-support"}, nil
	})
}

type threepidsResponse struct {
	Threepids []struct{} `json:"threepids"`
}

// threepids lists the user's third-party identifiers: none, since Ganglion binds none.
func (s *Server) threepids(w http.ResponseWriter, _ *http.Request, _ Device) {
	matrix.WriteJSON(w, http.StatusOK, threepidsResponse{Threepids: []struct{}{}})
}
