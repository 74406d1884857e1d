package client

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/processors/userstreams"
)

// openIDTokenLifetime is how long an OpenID token stays valid, as Synapse's.
const openIDTokenLifetime = time.Hour

func (s *Server) registerOpenID(r router) {
	r.handle("POST", "/user/{user}/openid/request_token", allVersions, s.authed(s.requestOpenIDToken))
}

// requestOpenIDToken gives the user a token a third party checks with this server's
// federation API (GET /_matrix/federation/v1/openid/userinfo), to learn who they are.
func (s *Server) requestOpenIDToken(w http.ResponseWriter, r *http.Request, dev Device) {
	if r.PathValue("user") != dev.UserID {
		matrix.WriteError(w, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "Cannot request tokens for other users."))
		return
	}
	var body map[string]json.RawMessage
	if err := matrix.DecodeBody(r, maxEventBody, &body); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	tok := randomString(43, alphanumeric)
	hash := hashToken(tok)
	expires := time.Now().Add(openIDTokenLifetime)
	if _, err := s.writeAccounts(r.Context(), dev, dev.UserID, userstreams.OpCreateOpenIDToken,
		userstreams.OpenIDToken{TokenHash: hash[:], Expires: expires.UnixMilli()}); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"access_token": tok, "token_type": "Bearer",
		"matrix_server_name": s.ServerName, "expires_in": int(openIDTokenLifetime / time.Second)})
}
