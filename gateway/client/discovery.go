package client

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
)

// Discovery and calls: /.well-known/matrix/client, TURN credentials, and finding the
// event of a room nearest a time.

// TURN is the turn_* configuration: the TURN servers clients may use and how their
// credentials are made (a shared secret, Synapse's scheme, or a fixed user).
type TURN struct {
	URIs         []string
	SharedSecret string
	Username     string
	Password     string
	// UserLifetime is how long shared-secret credentials last (turn_user_lifetime).
	UserLifetime time.Duration
}

func (s *Server) registerDiscovery(r router) {
	r.mux.HandleFunc("GET /.well-known/matrix/client", s.clientWellKnown)
	r.handle("GET", "/voip/turnServer", allVersions, s.authed(s.turnServer))
	r.handle("GET", "/rooms/{room}/timestamp_to_event", []string{"v1"}, s.authed(s.timestampToEvent))
}

// clientWellKnown serves the client discovery file when configured (Synapse's
// serve_client_wellknown with public_baseurl), 404 otherwise.
func (s *Server) clientWellKnown(w http.ResponseWriter, _ *http.Request) {
	if s.ClientWellKnown == nil {
		matrix.WriteError(w, matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "No .well-known/matrix/client here"))
		return
	}
	matrix.WriteJSON(w, http.StatusOK, s.ClientWellKnown)
}

// turnServer gives TURN credentials: with turn_shared_secret, Synapse's time-limited
// scheme (the username is the expiry in seconds and the user ID, the password the
// base64 HMAC-SHA1 of the username); else the configured username and password; {}
// without turn_uris.
func (s *Server) turnServer(w http.ResponseWriter, _ *http.Request, dev Device) {
	t := s.TURN
	if len(t.URIs) == 0 {
		matrix.WriteJSON(w, http.StatusOK, struct{}{})
		return
	}
	life := t.UserLifetime
	if life <= 0 {
		life = time.Hour
	}
	user, pass := t.Username, t.Password
	if t.SharedSecret != "" {
		user = strconv.FormatInt(time.Now().Add(life).Unix(), 10) + ":" + dev.UserID
		m := hmac.New(sha1.New, []byte(t.SharedSecret))
		m.Write([]byte(user))
		pass = base64.StdEncoding.EncodeToString(m.Sum(nil))
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"username": user, "password": pass, "uris": t.URIs, "ttl": int(life.Seconds())})
}

// timestampToEvent finds the room's event nearest ts the user may read: the first at or
// after it (dir f) or the last at or before it (dir b).
func (s *Server) timestampToEvent(w http.ResponseWriter, r *http.Request, dev Device) {
	room, bound, ok := s.readableRoom(w, r, dev)
	if !ok {
		return
	}
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "ts must be a timestamp in milliseconds"))
		return
	}
	dir := q.Get("dir")
	if dir != "f" && dir != "b" {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "dir must be f or b"))
		return
	}
	ev, err := s.DB.EventNearTime(r.Context(), room, ts, dir == "f", bound.floor(), bound.ceiling())
	if errors.Is(err, persist.ErrNotFound) {
		matrix.WriteError(w, matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "No event found"))
		return
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"event_id": ev.EventID, "origin_server_ts": ev.TS})
}
