package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// DefaultRoomVersion is what createRoom uses when the client names none.
const DefaultRoomVersion = "11"

// Bounds on what one createRoom may ask for. Its events are one intent and one append
// of the writer, which holds at most 768 KiB; without them a 64 KB body of invites made
// 9,295 events (6.5 MB) that no append could take. Synapse refuses more invites than its
// rc_invites burst (10 by default) with 400; we allow more and leave the pace to rate
// limiting.
const (
	maxCreateRoomInvites      = 100
	maxCreateRoomInitialState = 100
	// maxCreateRoomContent bounds the summed content of the room's events, leaving room
	// in the writer's append for the rest of each event (ids, hashes, signatures).
	maxCreateRoomContent = 512 << 10
)

// createRoomRequest is the body of POST /createRoom.
type createRoomRequest struct {
	Visibility                string                     `json:"visibility,omitempty"`
	RoomAliasName             string                     `json:"room_alias_name,omitempty"`
	Name                      *string                    `json:"name,omitempty"`
	Topic                     *string                    `json:"topic,omitempty"`
	Invite                    []string                   `json:"invite,omitempty"`
	RoomVersion               string                     `json:"room_version,omitempty"`
	CreationContent           map[string]json.RawMessage `json:"creation_content,omitempty"`
	InitialState              []initialStateEvent        `json:"initial_state,omitempty"`
	Preset                    string                     `json:"preset,omitempty"`
	IsDirect                  bool                       `json:"is_direct,omitempty"`
	PowerLevelContentOverride map[string]json.RawMessage `json:"power_level_content_override,omitempty"`

	// alias is the room's canonical alias, made from RoomAliasName.
	alias string
}

type initialStateEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// supportedRoomVersion reports whether createRoom may use v: the versions whose room
// IDs the gateway can choose (v12 derives them from the create event).
func supportedRoomVersion(v string) bool {
	impl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(v))
	return err == nil && impl.Stable() && !impl.DomainlessRoomIDs()
}

func (s *Server) createRoom(w http.ResponseWriter, r *http.Request, dev Device) {
	// The creator's join carries their profile, as every later join does.
	profile, err := s.DB.GetProfile(r.Context(), dev.UserID)
	if err != nil && !errors.Is(err, persist.ErrNotFound) {
		s.writeErr(w, r.Pattern, err)
		return
	}
	req, events, err := s.decodeCreateRoom(r, dev.UserID, profile)
	if err == nil && req.alias != "" {
		err = s.checkAliasFree(dev, req.alias)
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	roomID := "!" + randomString(18, letters) + ":" + s.ServerName
	// The alias is claimed for the room before the room is created, through the
	// alias's writer, so a taken alias costs no room; the claim resolves once the room
	// exists. A create its writer refused releases it again. The three steps go on when
	// the client disconnects, so none is left half done by a client going away.
	ctx := context.WithoutCancel(r.Context())
	if req.alias != "" {
		if _, err := s.writeAccounts(ctx, dev, req.alias, userstreams.OpClaimAlias, userstreams.AliasChange{Alias: req.alias, Room: roomID}); err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
	}
	_, err = s.submit(ctx, &schemas.Intent{
		Kind: schemas.KindCreateRoom, ID: randomIntentID(), RoomID: roomID, Sender: dev.UserID, DeviceID: dev.DeviceID,
		CreateRoom: &schemas.CreateRoom{RoomVersion: req.RoomVersion, Events: events},
	})
	if err != nil {
		if req.alias != "" && !outcomeUnknown(err) {
			if _, rerr := s.writeAccounts(ctx, dev, req.alias, userstreams.OpReleaseAlias, userstreams.AliasChange{Alias: req.alias, Room: roomID}); rerr != nil {
				// The claim goes stale on its own once the create can no longer happen.
				s.Log.Warn("alias of a refused room not released", zap.String("alias", req.alias), zap.Error(rerr))
			}
		}
		s.writeErr(w, r.Pattern, err)
		return
	}
	if req.Visibility == "public" {
		if _, err := s.writeAccounts(ctx, dev, roomID, userstreams.OpListRoom, userstreams.ListRoom{Room: roomID, Public: true}); err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]string{"room_id": roomID})
}

// outcomeUnknown reports whether a failed submission may still be appended: its writer
// did not answer in time (504) or the bus did not confirm the intent (503). Anything
// else is the writer's refusal, or a refusal before the bus.
func outcomeUnknown(err error) bool {
	var me *matrix.Error
	return errors.As(err, &me) && (me.Status == http.StatusGatewayTimeout || me.Status == http.StatusServiceUnavailable)
}

// decodeCreateRoom reads and checks a createRoom body and lays out the room's events.
func (s *Server) decodeCreateRoom(r *http.Request, creator string, profile persist.Profile) (*createRoomRequest, []schemas.ProtoEvent, error) {
	var req createRoomRequest
	if err := matrix.DecodeBody(r, maxEventBody, &req); err != nil {
		return nil, nil, err
	}
	if req.RoomVersion == "" {
		req.RoomVersion = DefaultRoomVersion
	}
	if !supportedRoomVersion(req.RoomVersion) {
		return nil, nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeUnsupportedRoomVersion, "room version %q is not supported", req.RoomVersion)
	}
	if len(req.Invite) > maxCreateRoomInvites {
		return nil, nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "at most %d users may be invited when a room is created", maxCreateRoomInvites)
	}
	if len(req.InitialState) > maxCreateRoomInitialState {
		return nil, nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "at most %d initial_state events are allowed", maxCreateRoomInitialState)
	}
	for _, id := range req.Invite {
		if !validUserID(id) {
			return nil, nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "invalid user id %q in invite", id)
		}
	}
	if req.RoomAliasName != "" {
		req.alias = "#" + req.RoomAliasName + ":" + s.ServerName
		if strings.ContainsAny(req.RoomAliasName, ":# ") || !validAlias(req.alias) {
			return nil, nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "invalid room_alias_name %q", req.RoomAliasName)
		}
	}
	events, err := s.initialEvents(&req, creator, profile)
	return &req, events, err
}

// initialEvents lays out a new room's events in the order the spec gives: create,
// the creator's join, power levels, the preset's rules, initial_state, name, topic,
// then invites; their content may weigh maxCreateRoomContent at most.
func (s *Server) initialEvents(req *createRoomRequest, creator string, profile persist.Profile) ([]schemas.ProtoEvent, error) {
	preset := req.Preset
	if preset == "" {
		preset = "private_chat"
		if req.Visibility == "public" {
			preset = "public_chat"
		}
	}
	if preset != "private_chat" && preset != "public_chat" && preset != "trusted_private_chat" {
		return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "unknown preset %q", preset)
	}
	var out []schemas.ProtoEvent
	add := func(typ, key string, content any) {
		k := key
		out = append(out, schemas.ProtoEvent{Type: typ, StateKey: &k, Content: mustJSON(content)})
	}

	create := map[string]json.RawMessage{}
	for k, v := range req.CreationContent {
		create[k] = v
	}
	create["room_version"], _ = matrix.Marshal(req.RoomVersion)
	if impl, _ := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(req.RoomVersion)); impl != nil && impl.CreatorInCreateEvent() {
		// Before v11 the creator is named in content; from v11 it is the sender.
		create["creator"], _ = matrix.Marshal(creator)
	}
	add("m.room.create", "", create)
	add("m.room.member", creator, memberContent("join", membershipBody{}, profile))

	users := map[string]int{creator: 100}
	if preset == "trusted_private_chat" {
		for _, id := range req.Invite {
			users[id] = 100
		}
	}
	pl := map[string]json.RawMessage{}
	for k, v := range map[string]any{
		"users": users, "users_default": 0, "events_default": 0, "state_default": 50,
		"ban": 50, "kick": 50, "redact": 50, "invite": 0,
		"events": map[string]int{
			"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
			"m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
			"m.room.server_acl": 100, "m.room.encryption": 100,
		},
		"notifications": map[string]int{"room": 50},
	} {
		pl[k], _ = matrix.Marshal(v)
	}
	for k, v := range req.PowerLevelContentOverride {
		pl[k] = v
	}
	add("m.room.power_levels", "", pl)
	if req.alias != "" {
		add("m.room.canonical_alias", "", map[string]string{"alias": req.alias})
	}

	joinRule := "invite"
	if preset == "public_chat" {
		joinRule = "public"
	}
	preState := []initialStateEvent{
		{Type: "m.room.join_rules", Content: mustJSON(map[string]string{"join_rule": joinRule})},
		{Type: "m.room.history_visibility", Content: mustJSON(map[string]string{"history_visibility": "shared"})},
	}
	if preset != "public_chat" {
		preState = append(preState, initialStateEvent{Type: "m.room.guest_access", Content: mustJSON(map[string]string{"guest_access": "can_join"})})
	}
	// initial_state replaces a preset event with the same type and state key.
	overridden := map[[2]string]bool{}
	for _, e := range req.InitialState {
		if e.Type == "" || !schemas.IsObject(e.Content) {
			return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "initial_state events need a type and an object content")
		}
		overridden[[2]string{e.Type, e.StateKey}] = true
	}
	for _, e := range preState {
		if !overridden[[2]string{e.Type, e.StateKey}] {
			add(e.Type, e.StateKey, e.Content)
		}
	}
	for _, e := range req.InitialState {
		add(e.Type, e.StateKey, e.Content)
	}
	if req.Name != nil {
		add("m.room.name", "", map[string]string{"name": *req.Name})
	}
	if req.Topic != nil {
		add("m.room.topic", "", topicContent(*req.Topic))
	}
	for _, id := range req.Invite {
		content := map[string]any{"membership": "invite"}
		if req.IsDirect {
			content["is_direct"] = true
		}
		add("m.room.member", id, content)
	}
	size := 0
	for _, e := range out {
		size += len(e.Content)
	}
	if size > maxCreateRoomContent {
		return nil, matrix.Errorf(http.StatusRequestEntityTooLarge, matrix.CodeTooLarge, "the room's initial events hold %d bytes of content, more than %d", size, maxCreateRoomContent)
	}
	return out, nil
}

func mustJSON(v any) json.RawMessage {
	raw, err := matrix.Marshal(v)
	if err != nil {
		panic(err)
	}
	return raw
}

// intParam parses an optional integer query parameter, clamped to [lo, hi].
func intParam(v string, def, lo, hi int) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "%q is not an integer", v)
	}
	return min(max(n, lo), hi), nil
}

// topicContent is an m.room.topic content with the topic as plain text and, as the
// spec has it since v1.15, in its m.topic content block.
func topicContent(topic string) map[string]any {
	return map[string]any{"topic": topic, "m.topic": map[string]any{
		"m.text": []map[string]string{{"mimetype": "text/plain", "body": topic}},
	}}
}
