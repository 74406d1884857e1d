package client

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"

	"go.uber.org/zap"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
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
	if errors.Is(err, persist.ErrNotFound) && s.missedAnything(r.Context()) {
		room, creator, err = s.DB.ResolveAlias(r.Context(), alias)
	}
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
	if err := s.requireJoined(r.Context(), body.RoomID, dev.UserID); err != nil {
		s.writeErr(w, r.Pattern, err)
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
// deleteAlias frees an alias, for its creator or, as Synapse has it, a member whose
// power level lets them change the room's canonical alias; then the room's canonical
// alias event stops naming it.
func (s *Server) deleteAlias(w http.ResponseWriter, r *http.Request, dev Device) {
	alias, room, creator, ok := s.lookupAlias(w, r)
	if !ok {
		return
	}
	var state aliasState
	if room != "" {
		var err error
		if state, err = s.aliasStateOf(r.Context(), room); err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
	}
	change := userstreams.AliasChange{Alias: alias, Moderator: creator != dev.UserID && state.mayChangeCanonicalAlias(dev.UserID)}
	if _, err := s.writeAccounts(r.Context(), dev, alias, userstreams.OpDeleteAlias, change); err != nil && !hasCode(err, matrix.CodeNotFound) {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if content, changed := state.withoutAlias(alias); changed {
		key := ""
		if _, err := s.submit(r.Context(), &schemas.Intent{
			Kind: schemas.KindClientEvent, ID: randomIntentID(), RoomID: room, Sender: dev.UserID, DeviceID: dev.DeviceID,
			Event: &schemas.ProtoEvent{Type: canonicalAliasType, StateKey: &key, Content: content},
		}); err != nil {
			// The alias is gone; a user who may not change the event leaves it as it was.
			s.Log.Info("could not update the canonical alias after deleting an alias", zap.String("room_id", room), zap.Error(err))
		}
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}

const canonicalAliasType = "m.room.canonical_alias"

// canonicalAlias is the content of an m.room.canonical_alias event.
type canonicalAlias struct {
	Alias      string   `json:"alias,omitempty"`
	AltAliases []string `json:"alt_aliases,omitempty"`
}

// checkCanonicalAlias refuses an m.room.canonical_alias content naming an alias that
// is not one (400 M_INVALID_PARAM) or that does not point to the room (400
// M_BAD_ALIAS), as Synapse does.
func (s *Server) checkCanonicalAlias(r *http.Request, content json.RawMessage) error {
	room, err := roomParam(r)
	if err != nil {
		return err
	}
	var c canonicalAlias
	if err := json.Unmarshal(content, &c); err != nil {
		return matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "alias and alt_aliases must be room aliases")
	}
	list := c.AltAliases
	if c.Alias != "" {
		list = append([]string{c.Alias}, list...)
	}
	for _, alias := range list {
		if !validAlias(alias) {
			return matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "%q is not a room alias", alias)
		}
		target, _, err := s.DB.ResolveAlias(r.Context(), alias)
		if errors.Is(err, persist.ErrNotFound) || (err == nil && target != room) {
			return matrix.Errorf(http.StatusBadRequest, matrix.CodeBadAlias, "room alias %s does not point to the room", alias)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// aliasState is what alias handling reads of a room's current state.
type aliasState struct {
	levels    *event.PowerLevelsEventContent
	canonical *canonicalAlias
	raw       map[string]json.RawMessage
}

func (s *Server) aliasStateOf(ctx context.Context, room string) (aliasState, error) {
	var st aliasState
	evs, err := s.DB.CurrentState(ctx, room)
	if err != nil {
		return st, err
	}
	for _, ev := range evs {
		if ev.StateKey == nil || *ev.StateKey != "" {
			continue
		}
		var e struct {
			Content json.RawMessage `json:"content"`
		}
		if json.Unmarshal(ev.JSON, &e) != nil {
			continue
		}
		switch ev.Type {
		case "m.room.power_levels":
			var pl event.PowerLevelsEventContent
			if json.Unmarshal(e.Content, &pl) == nil {
				st.levels = &pl
			}
		case canonicalAliasType:
			var c canonicalAlias
			if json.Unmarshal(e.Content, &c) == nil && json.Unmarshal(e.Content, &st.raw) == nil {
				st.canonical = &c
			}
		}
	}
	return st, nil
}

// mayChangeCanonicalAlias reports whether user's power level lets them send the
// room's m.room.canonical_alias.
func (st aliasState) mayChangeCanonicalAlias(user string) bool {
	return st.levels != nil && st.levels.GetUserLevel(id.UserID(user)) >= st.levels.GetEventLevel(event.StateCanonicalAlias)
}

// withoutAlias returns the canonical alias content without alias, and whether it
// named it.
func (st aliasState) withoutAlias(alias string) (json.RawMessage, bool) {
	if st.canonical == nil {
		return nil, false
	}
	c := *st.canonical
	alt := slices.DeleteFunc(slices.Clone(c.AltAliases), func(a string) bool { return a == alias })
	if c.Alias != alias && len(alt) == len(c.AltAliases) {
		return nil, false
	}
	content := maps.Clone(st.raw)
	delete(content, "alias")
	delete(content, "alt_aliases")
	if c.Alias != alias && c.Alias != "" {
		content["alias"], _ = matrix.Marshal(c.Alias)
	}
	if len(alt) > 0 {
		content["alt_aliases"], _ = matrix.Marshal(alt)
	}
	raw, _ := matrix.Marshal(content)
	return raw, true
}
