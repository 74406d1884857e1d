package client

import (
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/processors/userstreams"
)

func (s *Server) registerDirectory(r router) {
	// Resolving an alias needs no authentication (spec: GET /directory/room/{roomAlias}).
	r.handle("GET", "/directory/room/{alias}", allVersions, s.resolveAlias)
	r.handle("PUT", "/directory/room/{alias}", allVersions, s.authed(s.putAlias))
	r.handle("DELETE", "/directory/room/{alias}", allVersions, s.authed(s.deleteAlias))
	r.handle("GET", "/rooms/{room}/aliases", modernVersions, s.authed(s.roomAliases))
}

// roomAliases lists the room's local aliases to a member, or to anyone when its
// history is world_readable, as Synapse does.
func (s *Server) roomAliases(w http.ResponseWriter, r *http.Request, dev Device) {
	room, err := roomParam(r)
	if err != nil {
		matrix.WriteError(w, err)
		return
	}
	m, err := s.DB.Membership(r.Context(), room, dev.UserID)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if m.Membership != "join" {
		vis, err := s.DB.HistoryVisibility(r.Context(), []string{room})
		if err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
		if vis[room] != "world_readable" {
			matrix.WriteError(w, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "you are not in the room and its history is not world readable"))
			return
		}
	}
	aliases, err := s.DB.AliasesOfRooms(r.Context(), []string{room})
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	list := aliases[room]
	if list == nil {
		list = []string{}
	}
	slices.Sort(list)
	matrix.WriteJSON(w, http.StatusOK, map[string][]string{"aliases": list})
}

// validAlias accepts "#localpart:server" within the spec's 255 bytes.
func validAlias(alias string) bool {
	local, server, ok := strings.Cut(alias, ":")
	return ok && len(local) > 1 && local[0] == '#' && server != "" && len(alias) <= 255
}

func (s *Server) aliasParam(r *http.Request) (string, error) {
	alias := r.PathValue("alias")
	if !validAlias(alias) {
		return "", matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "invalid room alias %q", alias)
	}
	return alias, nil
}

// lookupAlias resolves the request's alias to its room and creator, or writes the error.
func (s *Server) lookupAlias(w http.ResponseWriter, r *http.Request) (alias, room, creator string, ok bool) {
	alias, err := s.aliasParam(r)
	if err != nil {
		matrix.WriteError(w, err)
		return "", "", "", false
	}
	room, creator, err = s.DB.ResolveAlias(r.Context(), alias)
	// An alias of an application service's exclusive namespace that nobody knows is
	// asked of the service, which may create it.
	if errors.Is(err, persist.ErrNotFound) && r.Method == http.MethodGet && s.askAppServiceForAlias(r.Context(), alias) {
		room, creator, err = s.DB.ResolveAlias(r.Context(), alias)
	}
	if errors.Is(err, persist.ErrNotFound) {
		err = matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "room alias %s not found", alias)
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return "", "", "", false
	}
	return alias, room, creator, true
}

func (s *Server) resolveAlias(w http.ResponseWriter, r *http.Request) {
	// An alias resolves once its room is projected: a client resolving the alias of a
	// room it just created (answered at the log append) finds it, as authenticated
	// reads do (seeAnswered).
	s.seeAnswered(r.Context())
	if _, room, _, ok := s.lookupAlias(w, r); ok {
		matrix.WriteJSON(w, http.StatusOK, map[string]any{"room_id": room, "servers": []string{s.ServerName}})
	}
}

// putAlias lets a member of a room give it a local alias.
func (s *Server) putAlias(w http.ResponseWriter, r *http.Request, dev Device) {
	alias, err := s.aliasParam(r)
	if err != nil {
		matrix.WriteError(w, err)
		return
	}
	var body struct {
		RoomID string `json:"room_id"`
	}
	if err := matrix.DecodeBody(r, maxEventBody, &body); err != nil {
		matrix.WriteError(w, err)
		return
	}
	if !strings.HasSuffix(alias, ":"+s.ServerName) {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "aliases must be on this server, %s", s.ServerName))
		return
	}
	if err := s.checkAliasFree(dev, alias); err != nil {
		matrix.WriteError(w, err)
		return
	}
	m, err := s.DB.Membership(r.Context(), body.RoomID, dev.UserID)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if m.Membership != "join" {
		matrix.WriteError(w, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "you are not joined to room %q", body.RoomID))
		return
	}
	// The alias's writer refuses a taken alias (409 M_UNKNOWN, as Synapse).
	if _, err := s.writeAccounts(r.Context(), dev, alias, userstreams.OpCreateAlias, userstreams.AliasChange{Alias: alias, Room: body.RoomID}); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}

// deleteAlias lets the alias's creator remove it; the alias's writer checks who
// created it, so a concurrent change of the alias cannot slip between check and delete.
func (s *Server) deleteAlias(w http.ResponseWriter, r *http.Request, dev Device) {
	alias, _, _, ok := s.lookupAlias(w, r)
	if !ok {
		return
	}
	if _, err := s.writeAccounts(r.Context(), dev, alias, userstreams.OpDeleteAlias, userstreams.AliasChange{Alias: alias}); err != nil && !hasCode(err, matrix.CodeNotFound) {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}
