// Package federation serves the server-server API on listeners with the federation
// or openid resource. Only what other servers need of local users without federating
// rooms is built so far: the OpenID userinfo endpoint, which an integration manager or
// widget server calls to learn which user an OpenID token stands for.
package federation

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
)

// Prefix starts the paths of the federation API.
const Prefix = "/_matrix/federation/"

// OpenIDTokens finds the user of a live OpenID token by its SHA-256
// (persist.ErrNotFound when none).
type OpenIDTokens interface {
	OpenIDUser(ctx context.Context, tokenHash []byte, now time.Time) (string, error)
}

// Server serves the federation API.
type Server struct {
	Tokens OpenIDTokens
	Log    *zap.Logger
}

// Handler serves the federation API's routes; other paths under Prefix are 404
// M_UNRECOGNIZED.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+Prefix+"v1/openid/userinfo", s.userinfo)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		matrix.WriteError(w, matrix.Errorf(http.StatusNotFound, matrix.CodeUnrecognized, "Unrecognized request"))
	})
	return mux
}

// userinfo answers which user an OpenID token stands for; a missing, unknown or
// expired token is 401 M_UNKNOWN_TOKEN.
func (s *Server) userinfo(w http.ResponseWriter, r *http.Request) {
	tok := r.URL.Query().Get("access_token")
	unknown := matrix.Errorf(http.StatusUnauthorized, matrix.CodeUnknownToken, "Invalid access token")
	if tok == "" {
		matrix.WriteError(w, unknown)
		return
	}
	h := sha256.Sum256([]byte(tok))
	user, err := s.Tokens.OpenIDUser(r.Context(), h[:], time.Now())
	switch {
	case errors.Is(err, persist.ErrNotFound):
		matrix.WriteError(w, unknown)
	case err != nil:
		s.Log.Error("openid userinfo", zap.Error(err))
		matrix.WriteError(w, matrix.Errorf(http.StatusInternalServerError, matrix.CodeUnknown, "Internal error"))
	default:
		matrix.WriteJSON(w, http.StatusOK, map[string]string{"sub": user})
	}
}
