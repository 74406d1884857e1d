package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/gjson"
	"go.uber.org/zap"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

func (s *Server) registerUpgrade(r router) {
	r.handle("POST", "/rooms/{room}/upgrade", modernVersions, s.authed(s.upgradeRoom))
}

// upgradeCopied are the state events an upgrade carries into the new room, as
// Synapse's list (bans are carried too).
var upgradeCopied = []string{"m.room.server_acl", "m.room.encryption", "m.room.name", "m.room.join_rules", "m.room.topic",
	"m.room.history_visibility", "m.room.guest_access", "m.room.avatar", "m.room.canonical_alias", "m.space.child",
	"m.space.parent"}

type upgradeRequest struct {
	NewVersion string `json:"new_version"`
}

// upgradeRoom replaces a room with a new one of another version, as Synapse does: the
// new room (its create event naming its predecessor) gets the old room's power levels,
// name, topic, rules, aliases and bans; the old room gets a tombstone pointing to it,
// and its power levels are raised so only moderators speak and invite there; the local
// aliases and the directory's listing move to the new room. Only a member whose power
// level lets them send m.room.tombstone may upgrade.
func (s *Server) upgradeRoom(w http.ResponseWriter, r *http.Request, dev Device) {
	room, err := roomParam(r)
	if err != nil {
		matrix.WriteError(w, err)
		return
	}
	var req upgradeRequest
	if err := matrix.DecodeBody(r, maxDirectoryBody, &req); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if !supportedRoomVersion(req.NewVersion) {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeUnsupportedRoomVersion, "room version %q is not supported", req.NewVersion))
		return
	}
	ctx := r.Context()
	if err := s.requireJoined(ctx, room, dev.UserID); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	state, err := s.DB.CurrentState(ctx, room)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	var levels *event.PowerLevelsEventContent
	var levelsRaw json.RawMessage
	var createContent gjson.Result
	for _, ev := range state {
		if ev.StateKey != nil && *ev.StateKey == "" {
			switch ev.Type {
			case "m.room.power_levels":
				levelsRaw = json.RawMessage(gjson.GetBytes(ev.JSON, "content").Raw)
				levels = &event.PowerLevelsEventContent{}
				_ = json.Unmarshal(levelsRaw, levels)
			case "m.room.create":
				createContent = gjson.GetBytes(ev.JSON, "content")
			}
		}
	}
	if levels == nil || levels.GetUserLevel(id.UserID(dev.UserID)) < levels.GetEventLevel(event.StateTombstone) {
		matrix.WriteError(w, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "You may not upgrade this room"))
		return
	}
	latest, err := s.DB.RoomEvents(ctx, room, persist.Pos{Seq: 1<<63 - 1}, nil, true, 1, persist.EventFilter{})
	if err != nil || len(latest) == 0 {
		s.writeErr(w, r.Pattern, errors.Join(err, errors.New("upgrade: the old room has no events")))
		return
	}
	profile, err := s.DB.GetProfile(ctx, dev.UserID)
	if err != nil && !errors.Is(err, persist.ErrNotFound) {
		s.writeErr(w, r.Pattern, err)
		return
	}

	newRoom := "!" + randomString(18, letters) + ":" + s.ServerName
	events := upgradeEvents(req.NewVersion, dev.UserID, room, latest[0].EventID, createContent, levels, levelsRaw, state, profile)
	// The rest goes on when the client disconnects: none of it is left half done by a
	// client going away.
	ctx = context.WithoutCancel(ctx)
	if _, err := s.submit(ctx, &schemas.Intent{Kind: schemas.KindCreateRoom, ID: randomIntentID(), RoomID: newRoom, Sender: dev.UserID,
		DeviceID: dev.DeviceID, CreateRoom: &schemas.CreateRoom{RoomVersion: req.NewVersion, Events: events}}); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	empty := ""
	send := func(typ string, content any) error {
		_, err := s.submit(ctx, &schemas.Intent{Kind: schemas.KindClientEvent, ID: randomIntentID(), RoomID: room, Sender: dev.UserID,
			DeviceID: dev.DeviceID, Event: &schemas.ProtoEvent{Type: typ, StateKey: &empty, Content: mustJSON(content)}})
		return err
	}
	if err := send("m.room.tombstone", map[string]string{"body": "This room has been replaced", "replacement_room": newRoom}); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	s.retireOldRoom(r, dev, room, newRoom, levels, levelsRaw, send)
	matrix.WriteJSON(w, http.StatusOK, map[string]string{"replacement_room": newRoom})
}

// upgradeEvents lays out the new room: its create event naming the predecessor, the
// upgrader's join, power levels that let the upgrader set the state (then the old ones
// exactly), the copied state and the bans.
func upgradeEvents(version, creator, oldRoom, lastEvent string, oldCreate gjson.Result, levels *event.PowerLevelsEventContent,
	levelsRaw json.RawMessage, state []persist.StoredEvent, profile persist.Profile) []schemas.ProtoEvent {
	var out []schemas.ProtoEvent
	add := func(typ, key string, content json.RawMessage) {
		k := key
		out = append(out, schemas.ProtoEvent{Type: typ, StateKey: &k, Content: content})
	}
	create := map[string]any{"room_version": version, "predecessor": map[string]string{"room_id": oldRoom, "event_id": lastEvent}}
	for _, k := range []string{"type", "m.federate"} {
		if v := oldCreate.Get(gjson.Escape(k)); v.Exists() {
			create[k] = json.RawMessage(v.Raw)
		}
	}
	if impl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(version)); err == nil && impl.CreatorInCreateEvent() {
		create["creator"] = creator
	}
	add("m.room.create", "", mustJSON(create))
	add("m.room.member", creator, memberContent("join", membershipBody{}, profile))
	// The upgrader may need more power than the old levels give to set the state; they
	// get it for the setup, and the old levels come last.
	needed := levels.GetEventLevel(event.StatePowerLevels)
	for _, ev := range state {
		if ev.StateKey != nil && (slices.Contains(upgradeCopied, ev.Type) || ev.Membership == "ban") {
			needed = max(needed, levels.GetEventLevel(event.Type{Type: ev.Type, Class: event.StateEventType}), levels.Ban())
		}
	}
	boosted := levels.GetUserLevel(id.UserID(creator)) < needed
	if boosted {
		temp := map[string]json.RawMessage{}
		_ = json.Unmarshal(levelsRaw, &temp)
		users := map[string]int{}
		for u, l := range levels.Users {
			users[string(u)] = l
		}
		users[creator] = needed
		temp["users"] = mustJSON(users)
		add("m.room.power_levels", "", mustJSON(temp))
	} else {
		add("m.room.power_levels", "", levelsRaw)
	}
	for _, ev := range state {
		if ev.StateKey == nil {
			continue
		}
		content := json.RawMessage(gjson.GetBytes(ev.JSON, "content").Raw)
		switch {
		case slices.Contains(upgradeCopied, ev.Type):
			add(ev.Type, *ev.StateKey, content)
		case ev.Type == "m.room.member" && ev.Membership == "ban":
			add(ev.Type, *ev.StateKey, content)
		}
	}
	if boosted {
		add("m.room.power_levels", "", levelsRaw)
	}
	return out
}

// retireOldRoom moves the local aliases and the directory listing to the new room,
// empties the old room's canonical alias, and raises its power levels so only
// moderators speak and invite there. Failures are logged: the upgrade itself is done.
func (s *Server) retireOldRoom(r *http.Request, dev Device, room, newRoom string, levels *event.PowerLevelsEventContent,
	levelsRaw json.RawMessage, send func(string, any) error) {
	ctx := context.WithoutCancel(r.Context())
	warn := func(what string, err error) {
		if err != nil {
			s.Log.Warn("room upgrade: "+what, zap.String("room_id", room), zap.String("replacement_room", newRoom), zap.Error(err))
		}
	}
	aliases, err := s.DB.AliasesOfRooms(ctx, []string{room})
	warn("aliases not read", err)
	for _, alias := range aliases[room] {
		_, err := s.writeAccounts(ctx, dev, alias, userstreams.OpDeleteAlias, userstreams.AliasChange{Alias: alias, Moderator: true})
		if err == nil {
			_, err = s.writeAccounts(ctx, dev, alias, userstreams.OpCreateAlias, userstreams.AliasChange{Alias: alias, Room: newRoom})
		}
		warn("alias not moved", err)
	}
	if listed, err := s.DB.RoomListed(ctx, room); err == nil && listed {
		_, err = s.writeAccounts(ctx, dev, newRoom, userstreams.OpListRoom, userstreams.ListRoom{Room: newRoom, Public: true})
		warn("new room not listed", err)
		_, err = s.writeAccounts(ctx, dev, room, userstreams.OpListRoom, userstreams.ListRoom{Room: room})
		warn("old room not unlisted", err)
	}
	warn("old canonical alias not emptied", send(canonicalAliasType, map[string]any{}))
	restricted := map[string]json.RawMessage{}
	_ = json.Unmarshal(levelsRaw, &restricted)
	restricted["events_default"] = mustJSON(max(levels.EventsDefault, 50))
	restricted["invite"] = mustJSON(max(levels.Invite(), 50))
	warn("old room's power levels not raised", send("m.room.power_levels", restricted))
}
