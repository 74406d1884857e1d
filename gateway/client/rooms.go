package client

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// maxEventBody bounds a request that becomes event content: the whole event may not
// exceed 65536 bytes, so neither may its content.
const maxEventBody = 65536

func (s *Server) registerRooms(r router) {
	r.handle("POST", "/createRoom", allVersions, s.authed(s.createRoom))
	r.handle("POST", "/join/{room}", allVersions, s.authed(s.enterRoom("join")))
	r.handle("POST", "/rooms/{room}/join", allVersions, s.authed(s.enterRoom("join")))
	r.handle("POST", "/knock/{room}", allVersions, s.authed(s.enterRoom("knock")))
	for _, action := range []string{"leave", "invite", "kick", "ban", "unban"} {
		r.handle("POST", "/rooms/{room}/"+action, allVersions, s.authed(s.changeMembership(action)))
	}
	r.handle("POST", "/rooms/{room}/forget", allVersions, s.authed(s.forget))
	r.handle("PUT", "/rooms/{room}/send/{type}/{txn}", allVersions, s.authedNoWait(s.send))
	r.handle("PUT", "/rooms/{room}/state/{type}", allVersions, s.authedNoWait(s.putState))
	r.handle("PUT", "/rooms/{room}/state/{type}/{stateKey...}", allVersions, s.authedNoWait(s.putState))
	r.handle("PUT", "/rooms/{room}/redact/{event}/{txn}", allVersions, s.authedNoWait(s.redact))
	r.handle("GET", "/rooms/{room}/state", allVersions, s.authed(s.getState))
	r.handle("GET", "/rooms/{room}/state/{type}", allVersions, s.authed(s.getStateEvent))
	r.handle("GET", "/rooms/{room}/state/{type}/{stateKey...}", allVersions, s.authed(s.getStateEvent))
	r.handle("GET", "/rooms/{room}/event/{event}", allVersions, s.authed(s.getEvent))
	r.handle("GET", "/rooms/{room}/messages", allVersions, s.authed(s.messages))
	r.handle("GET", "/rooms/{room}/members", allVersions, s.authed(s.members))
	r.handle("GET", "/rooms/{room}/joined_members", allVersions, s.authed(s.joinedMembers))
	r.handle("GET", "/joined_rooms", allVersions, s.authed(s.joinedRooms))
}

// txnIntentID derives the intent id of a request carrying a transaction id, so every
// retry of it (same device, same endpoint) maps to one event forever.
func txnIntentID(dev Device, r *http.Request) string {
	h := sha256.New()
	for _, part := range []string{dev.UserID, dev.DeviceID, r.URL.Path} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return "t" + base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

func randomIntentID() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return "r" + base64.RawURLEncoding.EncodeToString(b)
}

// submit sends an intent and turns the persister's answer into event IDs or a Matrix
// error.
func (s *Server) submit(ctx context.Context, in *schemas.Intent) ([]string, error) {
	in.V = schemas.IntentVersion
	in.IssuedAtMS = time.Now().UnixMilli()
	if err := in.Validate(); err != nil {
		// Nothing that a persister would refuse to store reaches the bus.
		return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "%s", err.Error())
	}
	res, err := s.Intents.Submit(ctx, in)
	if err := s.answerError(res, err, zap.String("room_id", in.RoomID)); err != nil {
		return nil, err
	}
	if s.Feed != nil && res.Seq > 0 {
		s.writes.record(Device{UserID: in.Sender, DeviceID: in.DeviceID}, in.RoomID, res.Seq, s.Feed.Position())
		s.noteAnswered(res.Seq)
	}
	return res.EventIDs, nil
}

// answerError turns a failed submission, or a writer's refusal, into a Matrix error.
func (s *Server) answerError(res *schemas.IntentResult, err error, about zap.Field) error {
	if errors.Is(err, streams.ErrIntentTimeout) {
		return matrix.Errorf(http.StatusGatewayTimeout, matrix.CodeUnknown, "the writer did not answer in time; retry with the same transaction id")
	}
	if errors.Is(err, streams.ErrIntentTooLarge) {
		return matrix.Errorf(http.StatusRequestEntityTooLarge, matrix.CodeTooLarge, "the request is too large")
	}
	if errors.Is(err, context.Canceled) {
		return err // the client went away
	}
	if err != nil {
		s.Log.Error("write not submitted", about, zap.Error(err))
		return matrix.Errorf(http.StatusServiceUnavailable, matrix.CodeUnknown, "writers are unavailable")
	}
	if res.Error != nil {
		return matrix.Errorf(res.Error.Status, res.Error.Code, "%s", res.Error.Message)
	}
	return nil
}

// readContent reads a request body that becomes event content: a JSON object.
func readContent(r *http.Request) (json.RawMessage, error) {
	var content json.RawMessage
	if err := matrix.DecodeBody(r, maxEventBody, &content); err != nil {
		return nil, err
	}
	if t := strings.TrimLeft(string(content), " \t\r\n"); !strings.HasPrefix(t, "{") {
		return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "content must be a JSON object")
	}
	return content, nil
}

func roomParam(r *http.Request) (string, error) {
	room := r.PathValue("room")
	if !validRoomID(room) {
		return "", matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "invalid room id %q", room)
	}
	return room, nil
}

// validRoomID checks the form of a room ID: !opaque:server.
func validRoomID(id string) bool { return strings.HasPrefix(id, "!") && strings.Contains(id, ":") }

// sendEvent submits one event and answers with its id.
func (s *Server) sendEvent(w http.ResponseWriter, r *http.Request, dev Device, intentID, txn string, pe *schemas.ProtoEvent) {
	room, err := roomParam(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if !unlimited(dev) && !take(w, s.limits.message, dev.UserID) {
		return
	}
	ids, err := s.submit(r.Context(), &schemas.Intent{
		Kind: schemas.KindClientEvent, ID: intentID, RoomID: room,
		Sender: dev.UserID, DeviceID: dev.DeviceID, TxnID: txn, Event: pe,
	})
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]string{"event_id": ids[0]})
}

func (s *Server) send(w http.ResponseWriter, r *http.Request, dev Device) {
	content, err := readContent(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	txn := r.PathValue("txn")
	s.sendEvent(w, r, dev, txnIntentID(dev, r), txn, &schemas.ProtoEvent{Type: r.PathValue("type"), Content: content})
}

func (s *Server) putState(w http.ResponseWriter, r *http.Request, dev Device) {
	content, err := readContent(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	key := r.PathValue("stateKey")
	if typ := r.PathValue("type"); typ == canonicalAliasType && key == "" {
		if err := s.checkCanonicalAlias(r, content); err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
	}
	s.sendEvent(w, r, dev, randomIntentID(), "", &schemas.ProtoEvent{Type: r.PathValue("type"), StateKey: &key, Content: content})
}

func (s *Server) redact(w http.ResponseWriter, r *http.Request, dev Device) {
	var body struct {
		Reason string `json:"reason,omitempty"`
	}
	if err := matrix.DecodeBody(r, maxEventBody, &body); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	content, _ := matrix.Marshal(body)
	s.sendEvent(w, r, dev, txnIntentID(dev, r), r.PathValue("txn"), &schemas.ProtoEvent{
		Type: "m.room.redaction", Content: content, Redacts: r.PathValue("event"),
	})
}

// membershipBody is the body of the membership endpoints.
type membershipBody struct {
	UserID string
	Reason string
	// fields are all of the body's keys: a join puts them in the member event, as
	// Synapse does (custom keys, a per-room displayname or avatar_url).
	fields map[string]json.RawMessage
}

func (s *Server) readMembershipBody(r *http.Request) (membershipBody, error) {
	var body membershipBody
	if r.ContentLength == 0 {
		return body, nil
	}
	if err := matrix.DecodeBody(r, maxEventBody, &body.fields); err != nil {
		return body, err
	}
	for key, dst := range map[string]*string{"user_id": &body.UserID, "reason": &body.Reason} {
		if raw, ok := body.fields[key]; ok && json.Unmarshal(raw, dst) != nil {
			return body, matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "%s must be a string", key)
		}
	}
	return body, nil
}

// membershipOf is the membership each membership action sets.
var membershipOf = map[string]string{"join": "join", "knock": "knock", "leave": "leave", "invite": "invite", "kick": "leave", "ban": "ban", "unban": "leave"}

// membership sends the member event of action (join, knock, leave, invite, kick, ban,
// unban) for target.
func (s *Server) membership(w http.ResponseWriter, r *http.Request, dev Device, room, target, action string, body membershipBody) {
	membership := membershipOf[action]
	if !s.allowMembership(w, dev, room, target, membership) {
		return
	}
	if action == "leave" {
		if err := s.refuseNoticeRoomLeave(r.Context(), room, target); err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
	}
	if membership == "join" || membership == "knock" || membership == "invite" {
		blocked, err := s.DB.RoomBlocked(r.Context(), room)
		if err == nil && blocked {
			err = matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "This room has been blocked on this server")
		}
		if err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
	}
	var profile persist.Profile
	allowed := false
	if membership == "join" {
		var err error
		if allowed, err = s.allowedJoin(r.Context(), room, dev.UserID); err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
	}
	if membership == "join" || membership == "knock" {
		// A member event carries the member's profile, so other members can show it.
		p, err := s.DB.GetProfile(r.Context(), dev.UserID)
		if err != nil && !errors.Is(err, persist.ErrNotFound) {
			s.writeErr(w, r.Pattern, err)
			return
		}
		profile = p
	}
	_, err := s.submit(r.Context(), &schemas.Intent{
		Kind: schemas.KindClientEvent, ID: randomIntentID(), RoomID: room, Sender: dev.UserID, DeviceID: dev.DeviceID,
		Event: &schemas.ProtoEvent{Type: "m.room.member", StateKey: &target, Content: memberContent(membership, body, profile),
			Kick: action == "kick", AllowedJoin: allowed},
	})
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if membership == "join" || membership == "knock" {
		matrix.WriteJSON(w, http.StatusOK, map[string]string{"room_id": room})
		return
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}

// allowedJoin reports whether a restricted join rule of room lets user in: they are
// joined to one of the rooms it allows. The room's writer checks the rule again
// against its own state and names the member who authorises the join.
func (s *Server) allowedJoin(ctx context.Context, room, user string) (bool, error) {
	rules, err := s.DB.CurrentJoinRules(ctx, room)
	if errors.Is(err, persist.ErrNotFound) || err == nil && !rules.Restricted() {
		return false, nil // the writer answers an unknown room
	}
	if err != nil {
		return false, err
	}
	joined, err := s.DB.JoinedAny(ctx, []string{user}, rules.AllowedRooms())
	return len(joined) > 0, err
}

// memberContent is the content of an m.room.member event: a join's or a knock's carries
// the body's keys and the member's profile where the body does not set it; the others
// only the reason.
func memberContent(membership string, body membershipBody, p persist.Profile) json.RawMessage {
	content := map[string]any{}
	if membership == "join" || membership == "knock" {
		for k, v := range body.fields {
			content[k] = v
		}
		if _, set := content["displayname"]; !set && p.DisplayName != nil {
			content["displayname"] = *p.DisplayName
		}
		if _, set := content["avatar_url"]; !set && p.AvatarURL != nil {
			content["avatar_url"] = *p.AvatarURL
		}
	}
	delete(content, "reason")
	if body.Reason != "" {
		content["reason"] = body.Reason
	}
	content["membership"] = membership
	raw, _ := matrix.Marshal(content)
	return raw
}

// enterRoom serves a join or a knock (action) on a room given by ID or alias.
func (s *Server) enterRoom(action string) func(http.ResponseWriter, *http.Request, Device) {
	return func(w http.ResponseWriter, r *http.Request, dev Device) {
		s.enter(w, r, dev, action)
	}
}

func (s *Server) enter(w http.ResponseWriter, r *http.Request, dev Device, action string) {
	body, err := s.readMembershipBody(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	room := r.PathValue("room")
	if strings.HasPrefix(room, "#") {
		resolved, _, err := s.DB.ResolveAlias(r.Context(), room)
		if errors.Is(err, persist.ErrNotFound) {
			err = matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "room alias %s not found", room)
		}
		if err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
		room = resolved
	} else if room, err = roomParam(r); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	s.membership(w, r, dev, room, dev.UserID, action, body)
}

// changeMembership serves leave (target: the caller) and invite, kick, ban and unban
// (target: the body's user_id).
func (s *Server) changeMembership(action string) func(http.ResponseWriter, *http.Request, Device) {
	ofOther := action != "leave"
	return func(w http.ResponseWriter, r *http.Request, dev Device) {
		body, err := s.readMembershipBody(r)
		if err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
		room, err := roomParam(r)
		if err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
		target := dev.UserID
		if ofOther {
			if !validUserID(body.UserID) {
				matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "user_id must be a user ID"))
				return
			}
			target = body.UserID
		}
		s.membership(w, r, dev, room, target, action, body)
	}
}

func validUserID(id string) bool {
	local, server, ok := strings.Cut(id, ":")
	return ok && strings.HasPrefix(local, "@") && len(local) > 1 && server != "" && len(id) <= 255
}

// forget hides a room the user left or was banned from: it leaves their syncs and
// its history becomes unreadable to them, until they join again.
func (s *Server) forget(w http.ResponseWriter, r *http.Request, dev Device) {
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
	switch m.Membership {
	case "join", "invite":
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeUnknown, "leave the room before forgetting it"))
		return
	case "leave", "ban":
		if _, err := s.writeAccounts(r.Context(), dev, dev.UserID, userstreams.OpForgetRoom, userstreams.ForgetRoom{Room: room, EventID: m.EventID}); err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}

// readBound is the part of a room's history a user may read: from their join when
// the room's history visibility hides earlier events (first), up to and including
// their leave or ban once they are gone (last); nil means no bound on that side. It
// keeps the user's member events in the room, read with their membership, for the
// unsigned.membership of what they read.
type readBound struct {
	first, last *persist.Pos
	room        string
	history     []persist.MemberChange
}

// histories gives the bound's membership history by room, for membershipsOf.
func (b readBound) histories() map[string][]persist.MemberChange {
	if b.room == "" {
		return nil
	}
	return map[string][]persist.MemberChange{b.room: b.history}
}

// allows reports whether the event at p is readable.
func (b readBound) allows(p persist.Pos) bool {
	return (b.first == nil || !p.Less(*b.first)) && (b.last == nil || !b.last.Less(p))
}

// floor is the boundary just before the first readable event.
func (b readBound) floor() persist.Pos {
	if b.first == nil {
		return persist.Pos{}
	}
	return *b.first
}

// ceiling is the boundary just after the last readable event.
func (b readBound) ceiling() persist.Pos {
	if b.last == nil {
		return persist.Pos{Seq: 1<<63 - 1}
	}
	return persist.Pos{Seq: b.last.Seq, Idx: b.last.Idx + 1}
}

// requireJoined returns 403 M_FORBIDDEN unless user is joined to room.
func (s *Server) requireJoined(ctx context.Context, room, user string) error {
	m, err := s.DB.Membership(ctx, room, user)
	if err != nil {
		return err
	}
	if m.Membership != "join" {
		return matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "You are not joined to room %s", room)
	}
	return nil
}

// readableRoom checks that the user may read the room (they are or were a member) and
// returns what of it.
func (s *Server) readableRoom(w http.ResponseWriter, r *http.Request, dev Device) (string, readBound, bool) {
	room, err := roomParam(r)
	if err != nil {
		matrix.WriteError(w, err)
		return "", readBound{}, false
	}
	_, bound, err := s.readBoundOf(r.Context(), room, dev)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return "", readBound{}, false
	}
	return room, bound, true
}

// readBoundOf returns the user's membership of room and what of its history they may
// read, or 403 M_FORBIDDEN when they may read none of it.
func (s *Server) readBoundOf(ctx context.Context, room string, dev Device) (persist.Membership, readBound, error) {
	// Two independent lookups: side by side, the request waits for one round trip.
	var m persist.Membership
	var vis map[string]string
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { m, err = s.DB.Membership(gctx, room, dev.UserID); return err })
	g.Go(func() (err error) { vis, err = s.DB.HistoryVisibility(gctx, []string{room}); return err })
	if err := g.Wait(); err != nil {
		return m, readBound{}, err
	}
	bound := readBound{room: room, history: m.History}
	switch {
	case vis[room] == "world_readable":
		return m, bound, nil // anyone may read all of it
	case m.Membership == "join":
	case (m.Membership == "leave" || m.Membership == "ban") && !m.Forgotten:
		bound.last = &m.At
	default:
		return m, readBound{}, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "you are not a member of the room")
	}
	if persist.HidesHistory(vis[room]) {
		if m.JoinedAt == nil {
			// Banned or gone before ever joining: nothing was visible to them.
			return m, readBound{}, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "the room's history is visible to joined members only")
		}
		bound.first = m.VisibleFrom(vis[room])
	}
	return m, bound, nil
}

// readableState returns the room's state as the user may see it, or writes the error.
func (s *Server) readableState(w http.ResponseWriter, r *http.Request, dev Device) ([]persist.StoredEvent, bool) {
	s.seeLatest(r.Context())
	room, bound, ok := s.readableRoom(w, r, dev)
	if !ok {
		return nil, false
	}
	var evs []persist.StoredEvent
	var err error
	if bound.last == nil {
		evs, err = s.DB.CurrentState(r.Context(), room)
	} else {
		evs, err = s.DB.StateAt(r.Context(), room, *bound.last)
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return nil, false
	}
	return evs, true
}

func (s *Server) getState(w http.ResponseWriter, r *http.Request, dev Device) {
	if evs, ok := s.readableState(w, r, dev); ok {
		matrix.WriteJSON(w, http.StatusOK, clientEvents(evs, dev))
	}
}

func (s *Server) getStateEvent(w http.ResponseWriter, r *http.Request, dev Device) {
	evs, ok := s.readableState(w, r, dev)
	if !ok {
		return
	}
	typ, key := r.PathValue("type"), r.PathValue("stateKey")
	for i := range evs {
		if evs[i].Type == typ && evs[i].StateKey != nil && *evs[i].StateKey == key {
			var ev struct {
				Content json.RawMessage `json:"content"`
			}
			if err := json.Unmarshal(evs[i].JSON, &ev); err != nil {
				s.writeErr(w, r.Pattern, err)
				return
			}
			if r.URL.Query().Get("format") == "event" {
				matrix.WriteJSON(w, http.StatusOK, clientEvent(&evs[i], dev))
				return
			}
			matrix.WriteJSON(w, http.StatusOK, ev.Content)
			return
		}
	}
	matrix.WriteError(w, matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "no %s state with key %q", typ, key))
}

// getEvent answers an event the user may see; one they may not is not found, as for
// Synapse, whether or not it exists.
func (s *Server) getEvent(w http.ResponseWriter, r *http.Request, dev Device) {
	room, err := roomParam(r)
	if err != nil {
		matrix.WriteError(w, err)
		return
	}
	var bound readBound
	var ev *persist.StoredEvent
	for again := true; ; again = false {
		_, bound, err = s.readBoundOf(r.Context(), room, dev)
		missing := hasCode(err, matrix.CodeForbidden)
		if err == nil {
			ev, err = s.DB.GetEvent(r.Context(), r.PathValue("event"))
			missing = errors.Is(err, persist.ErrNotFound) || (err == nil && (ev.RoomID != room || !bound.allows(persist.Pos{Seq: ev.Seq, Idx: ev.Idx})))
		}
		if !missing {
			break
		}
		if !again || !s.missedAnything(r.Context()) {
			matrix.WriteError(w, matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "event not found"))
			return
		}
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	withRel, err := s.withBundles(r.Context(), []persist.StoredEvent{*ev}, dev, bound)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, withRel[0])
}

// messagesResponse is the body of /messages.
type messagesResponse struct {
	Chunk []json.RawMessage `json:"chunk"`
	Start string            `json:"start"`
	End   string            `json:"end,omitempty"`
	State []json.RawMessage `json:"state,omitempty"`
}

func (s *Server) messages(w http.ResponseWriter, r *http.Request, dev Device) {
	if q := r.URL.Query(); q.Get("from") == "" && q.Get("dir") == "b" {
		s.seeLatest(r.Context()) // the room's latest page
	}
	room, bound, ok := s.readableRoom(w, r, dev)
	if !ok {
		return
	}
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir != "b" && dir != "f" {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "dir must be b or f"))
		return
	}
	limit, err := intParam(q.Get("limit"), 10, 1, 1000)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	backwards := dir == "b"
	from, to, err := pageBounds(q.Get("from"), q.Get("to"), backwards, bound)
	if err != nil {
		matrix.WriteError(w, err)
		return
	}
	var rf *roomEventFilter
	if raw := q.Get("filter"); raw != "" {
		if rf, err = parseRoomEventFilter([]byte(raw)); err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
	}
	evs, err := s.DB.RoomEvents(r.Context(), room, from, to, backwards, limit, rf.query())
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	chunk, err := s.withBundles(r.Context(), evs, dev, bound)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	resp := messagesResponse{Chunk: chunk, Start: formatPageToken(from)}
	if rf != nil && rf.LazyLoadMembers && len(evs) > 0 {
		// The member events of the chunk's senders: what a client that lazily loads
		// members needs to show them.
		if resp.State, err = s.chunkMembers(r.Context(), room, evs, dev); err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
	}
	// Every chunk with events has an end, as in Synapse: a page that a filter thinned,
	// or that reached the room's start, does not tell there is nothing more; the page
	// after the last is empty and has none.
	if len(evs) > 0 {
		resp.End = formatPageToken(afterInPage(evs[len(evs)-1], backwards))
	}
	matrix.WriteJSON(w, http.StatusOK, resp)
}

// chunkMembers returns the member events of the senders of evs as of the first of evs
// in the chunk's order (the newest when paginating backwards), as Synapse does.
func (s *Server) chunkMembers(ctx context.Context, room string, evs []persist.StoredEvent, dev Device) ([]json.RawMessage, error) {
	senders := map[string]bool{}
	var list []string
	for _, ev := range evs {
		if !senders[ev.Sender] {
			senders[ev.Sender] = true
			list = append(list, ev.Sender)
		}
	}
	first := evs[0]
	states, err := s.DB.SyncState(ctx, []persist.StateRequest{{RoomID: room, At: persist.Pos{Seq: first.Seq, Idx: first.Idx + 1}}},
		persist.StateFilter{Types: []string{"m.room.member"}, Members: list})
	if err != nil {
		return nil, err
	}
	return clientEvents(states[room], dev), nil
}

func (s *Server) members(w http.ResponseWriter, r *http.Request, dev Device) {
	q := r.URL.Query()
	var evs []persist.StoredEvent
	if at := q.Get("at"); at != "" {
		// The members as of a point in the room's history, within what the user may
		// read of it.
		room, bound, ok := s.readableRoom(w, r, dev)
		if !ok {
			return
		}
		p, err := parsePageToken(at)
		if err != nil {
			matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "invalid at token"))
			return
		}
		if c := bound.ceiling(); c.Less(p) {
			p = c
		}
		// A point before the room had members (a timeline's prev_batch that reaches
		// its create event) answers the members as the room was created, as Synapse.
		memberType := []string{"m.room.member"}
		first, err := s.DB.RoomEvents(r.Context(), room, persist.Pos{}, nil, false, 1, persist.EventFilter{Types: &memberType})
		if err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
		if len(first) > 0 {
			if after := afterInPage(first[0], false); p.Less(after) {
				p = after
			}
		}
		states, err := s.DB.SyncState(r.Context(), []persist.StateRequest{{RoomID: room, At: p}},
			persist.StateFilter{Types: []string{"m.room.member"}})
		if err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
		evs = states[room]
	} else {
		var ok bool
		if evs, ok = s.readableState(w, r, dev); !ok {
			return
		}
	}
	not := q.Get("not_membership")
	want := q.Get("membership")
	kept := evs[:0]
	for _, e := range evs {
		if e.Type != "m.room.member" || (want != "" && e.Membership != want) || (not != "" && e.Membership == not) {
			continue
		}
		kept = append(kept, e)
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"chunk": clientEvents(kept, dev)})
}

// joinedMember is one entry of /joined_members.
type joinedMember struct {
	DisplayName *string `json:"display_name"`
	AvatarURL   *string `json:"avatar_url"`
}

func (s *Server) joinedMembers(w http.ResponseWriter, r *http.Request, dev Device) {
	s.seeLatest(r.Context())
	room, err := roomParam(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if m, err := s.DB.Membership(r.Context(), room, dev.UserID); err != nil || m.Membership != "join" {
		if err == nil {
			err = matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "you are not joined to the room")
		}
		s.writeErr(w, r.Pattern, err)
		return
	}
	evs, err := s.DB.Members(r.Context(), room, "join")
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	joined := make(map[string]joinedMember, len(evs))
	for _, e := range evs {
		var ev struct {
			Content struct {
				DisplayName *string `json:"displayname"`
				AvatarURL   *string `json:"avatar_url"`
			} `json:"content"`
		}
		_ = json.Unmarshal(e.JSON, &ev)
		joined[*e.StateKey] = joinedMember{DisplayName: ev.Content.DisplayName, AvatarURL: ev.Content.AvatarURL}
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"joined": joined})
}

func (s *Server) joinedRooms(w http.ResponseWriter, r *http.Request, dev Device) {
	rooms, err := s.DB.RoomsOfUser(r.Context(), dev.UserID, "join")
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if rooms == nil {
		rooms = []string{}
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"joined_rooms": rooms})
}
