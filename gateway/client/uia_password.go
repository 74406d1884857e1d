package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
)

// passwordAuth is the auth object of a request under user-interactive authentication
// with the password stage (m.login.password).
type passwordAuth struct {
	uiaAuth
	Password   string `json:"password"`
	Identifier *struct {
		Type string `json:"type"`
		User string `json:"user"`
	} `json:"identifier"`
	// User is the pre-identifier form, still sent by older clients.
	User string `json:"user"`
}

// requirePassword runs user-interactive authentication with the password stage for an
// operation of kind by dev's user, as Synapse does for sensitive operations. It returns
// true once auth proves the account's password; otherwise it has answered: 401 with
// the flow to follow (and M_FORBIDDEN for a wrong password), or an error.
func (s *Server) requirePassword(ctx context.Context, w http.ResponseWriter, dev Device, kind string, raw json.RawMessage) bool {
	var auth passwordAuth
	if raw != nil && json.Unmarshal(raw, &auth) != nil {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "auth must be an object"))
		return false
	}
	session := auth.Session
	var completed []string
	var err error
	if session == "" {
		session, err = s.DB.CreateUIASession(ctx, kind)
	} else {
		completed, err = s.DB.UIASession(ctx, session, kind)
	}
	if err != nil {
		s.writeErr(w, "auth session", uiaSessionError(err))
		return false
	}
	challenge := func(code, msg string) bool {
		resp := uiaResponse{Flows: []uiaFlow{{Stages: []string{loginTypePassword}}}, Params: map[string]any{},
			Session: session, Completed: completed, ErrCode: code, Error: msg}
		if resp.Completed == nil {
			resp.Completed = []string{}
		}
		matrix.WriteJSON(w, http.StatusUnauthorized, resp)
		return false
	}
	switch auth.Type {
	case "":
		return challenge("", "")
	case loginTypePassword:
	default:
		return challenge(matrix.CodeUnrecognized, "Unsupported authentication type "+auth.Type)
	}
	user := auth.User
	if auth.Identifier != nil {
		user = auth.Identifier.User
	}
	if id, ok := s.localUserID(user); !ok || id != dev.UserID {
		matrix.WriteError(w, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "Invalid auth"))
		return false
	}
	if !check(w, s.limits.loginFailed, dev.UserID) {
		return false
	}
	switch err := s.DB.CheckPassword(ctx, dev.UserID, auth.Password); {
	case errors.Is(err, persist.ErrWrongPassword), errors.Is(err, persist.ErrNotFound):
		s.limits.loginFailed.Take(dev.UserID)
		return challenge(matrix.CodeForbidden, "Invalid password")
	case err != nil:
		s.writeErr(w, "check password", err)
		return false
	}
	// The session authorised this one operation; a replay must authenticate again.
	if err := s.DB.DeleteUIASession(ctx, session); err != nil {
		s.Log.Warn("could not end auth session", zap.Error(err))
	}
	return true
}
