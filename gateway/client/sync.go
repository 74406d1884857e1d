package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/gateway/serve"
	"github.com/ganglionhq/ganglion/persist"
)

// Feed is the sync feed of a process: the visible position, up to which every log
// message is in Postgres, and long-poll wake-ups. processors/syncfeed implements it.
type Feed interface {
	Position() uint64
	// Wait returns once the position passes since with a message of one of rooms or
	// one changing userID's membership, or when ctx ends; it returns the position.
	Wait(ctx context.Context, since uint64, userID string, rooms []string) uint64
}

const (
	// maxSyncTimeout caps a long-poll; clients ask for 30 s.
	maxSyncTimeout = serve.MaxLongPoll
	// defaultTimelineLimit is Synapse's default room.timeline.limit.
	defaultTimelineLimit = 10
	// maxTimelineLimit bounds what one room may add to one response.
	maxTimelineLimit = 1000
)

// strippedStateTypes are the state events an invited user sees of the room, besides
// their own invite (Synapse's default room_prejoin_state).
var strippedStateTypes = []string{
	"m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
	"m.room.canonical_alias", "m.room.encryption", "m.room.member",
}

func (s *Server) registerSync(r router) {
	if s.Feed == nil {
		return // this process follows no log; the front door routes /sync elsewhere
	}
	r.handle("GET", "/sync", syncVersions, serve.LongPoll(s.authed(s.sync), s.HTTP).ServeHTTP)
}

// syncFilter is the part of a filter (spec "Filtering") that /sync applies.
type syncFilter struct {
	Room struct {
		Rooms        *[]string `json:"rooms"`
		NotRooms     []string  `json:"not_rooms"`
		IncludeLeave bool      `json:"include_leave"`
		Timeline     struct {
			Limit *int `json:"limit"`
		} `json:"timeline"`
	} `json:"room"`
}

func (f *syncFilter) timelineLimit() int {
	if f.Room.Timeline.Limit == nil {
		return defaultTimelineLimit
	}
	return min(max(*f.Room.Timeline.Limit, 0), maxTimelineLimit)
}

func (f *syncFilter) allowsRoom(room string) bool {
	if f.Room.Rooms != nil && !slices.Contains(*f.Room.Rooms, room) {
		return false
	}
	return !slices.Contains(f.Room.NotRooms, room)
}

// syncRequest is a parsed /sync query.
type syncRequest struct {
	// since is the token's position; incremental tells whether there was one.
	since       uint64
	incremental bool
	timeout     time.Duration
	fullState   bool
	filter      syncFilter
}

func (s *Server) parseSyncRequest(ctx context.Context, r *http.Request, dev Device) (*syncRequest, error) {
	q := r.URL.Query()
	req := &syncRequest{}
	if tok := q.Get("since"); tok != "" {
		seq, err := parseSyncToken(tok)
		if err != nil {
			return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "invalid since token")
		}
		req.since, req.incremental = seq, true
	}
	ms, err := intParam(q.Get("timeout"), 0, 0, int(maxSyncTimeout/time.Millisecond))
	if err != nil {
		return nil, err
	}
	req.timeout = time.Duration(ms) * time.Millisecond
	switch q.Get("full_state") {
	case "", "false":
	case "true":
		req.fullState = true
	default:
		return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "full_state must be true or false")
	}
	raw, err := s.filterJSON(ctx, q.Get("filter"), dev)
	if err != nil {
		return nil, err
	}
	if raw != nil {
		if err := json.Unmarshal(raw, &req.filter); err != nil {
			return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "filter does not match the filter format: %v", err)
		}
	}
	return req, nil
}

// filterJSON resolves the filter parameter: inline JSON or the id of a stored filter.
func (s *Server) filterJSON(ctx context.Context, param string, dev Device) ([]byte, error) {
	if param == "" {
		return nil, nil
	}
	if strings.HasPrefix(param, "{") {
		if err := matrix.CheckJSON([]byte(param)); err != nil {
			return nil, err
		}
		return []byte(param), nil
	}
	id, err := strconv.ParseInt(param, 10, 64)
	if err != nil {
		return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "filter is neither JSON nor a filter id")
	}
	raw, err := s.DB.GetFilter(ctx, dev.UserID, id)
	if errors.Is(err, persist.ErrNotFound) {
		return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "No such filter")
	}
	return raw, err
}

// sync serves GET /sync. An incremental sync with nothing new waits, up to timeout,
// for the feed to report a message for the user, then looks again.
func (s *Server) sync(w http.ResponseWriter, r *http.Request, dev Device) {
	req, err := s.parseSyncRequest(r.Context(), r, dev)
	if err != nil {
		s.writeErr(w, "sync", err)
		return
	}
	ctx := r.Context()
	s.awaitOwnWrite(ctx, dev)
	waitCtx := ctx
	canWait := req.incremental && !req.fullState && req.timeout > 0
	if canWait {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithTimeout(ctx, req.timeout)
		defer cancel()
	}
	since := req.since
	for {
		res, err := s.buildSync(ctx, dev, req, since, s.Feed.Position())
		if err != nil {
			if ctx.Err() == nil {
				s.writeErr(w, "sync", err)
			}
			return
		}
		if !res.empty() || !canWait || waitCtx.Err() != nil {
			matrix.WriteJSON(w, http.StatusOK, res.response)
			return
		}
		// Nothing for the user up to next: wait from there. Looking again from next
		// rather than from since gives the same answer, since nothing came between.
		since = res.next
		s.Feed.Wait(waitCtx, since, dev.UserID, res.joined)
	}
}

// Response bodies. Every list the spec describes is present, as [] when empty, which
// is why these are our own types rather than a library's.

type syncResponse struct {
	NextBatch              string         `json:"next_batch"`
	Rooms                  syncRooms      `json:"rooms"`
	AccountData            eventList      `json:"account_data"`
	Presence               eventList      `json:"presence"`
	ToDevice               eventList      `json:"to_device"`
	DeviceLists            deviceLists    `json:"device_lists"`
	DeviceOneTimeKeysCount map[string]int `json:"device_one_time_keys_count"`
}

type syncRooms struct {
	Join   map[string]*joinedRoom  `json:"join"`
	Invite map[string]*invitedRoom `json:"invite"`
	Leave  map[string]*leftRoom    `json:"leave"`
}

type deviceLists struct {
	Changed []string `json:"changed"`
	Left    []string `json:"left"`
}

// eventList is the {"events": [...]} wrapper; nil marshals as [].
type eventList struct {
	Events []json.RawMessage `json:"events"`
}

func (l eventList) MarshalJSON() ([]byte, error) {
	if l.Events == nil {
		return []byte(`{"events":[]}`), nil
	}
	type plain eventList
	return matrix.Marshal(plain(l))
}

type timeline struct {
	Events    []json.RawMessage `json:"events"`
	Limited   bool              `json:"limited"`
	PrevBatch string            `json:"prev_batch"`
}

type joinedRoom struct {
	Timeline            timeline  `json:"timeline"`
	State               eventList `json:"state"`
	Ephemeral           eventList `json:"ephemeral"`
	AccountData         eventList `json:"account_data"`
	UnreadNotifications struct{}  `json:"unread_notifications"`
}

type invitedRoom struct {
	InviteState eventList `json:"invite_state"`
}

type leftRoom struct {
	Timeline    timeline  `json:"timeline"`
	State       eventList `json:"state"`
	AccountData eventList `json:"account_data"`
}

// strippedEvent is the form of state an invited user gets.
type strippedEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
	Sender   string          `json:"sender"`
}

// syncResult is a built response and what the long-poll needs from it.
type syncResult struct {
	response *syncResponse
	// next is the position of next_batch; joined the rooms the user is joined to there.
	next   uint64
	joined []string
}

func (r *syncResult) empty() bool {
	rooms := r.response.Rooms
	return len(rooms.Join) == 0 && len(rooms.Invite) == 0 && len(rooms.Leave) == 0
}

// roomPlan is what one room of the response needs from Postgres.
type roomPlan struct {
	room      string
	joined    bool
	span      persist.RoomRange
	fullState bool
	// always puts the room in the response even with an empty timeline (full_state).
	always bool
}

// buildSync assembles the response for the span (since, pos] of the log. It runs one
// query for the user's memberships, one for the timelines of every room, and, only
// when some room needs them, one for state and one for invites.
func (s *Server) buildSync(ctx context.Context, dev Device, req *syncRequest, since, pos uint64) (*syncResult, error) {
	next := max(since, pos)
	res := &syncResult{next: next, response: &syncResponse{
		NextBatch:              formatSyncToken(next),
		Rooms:                  syncRooms{Join: map[string]*joinedRoom{}, Invite: map[string]*invitedRoom{}, Leave: map[string]*leftRoom{}},
		DeviceLists:            deviceLists{Changed: []string{}, Left: []string{}},
		DeviceOneTimeKeysCount: map[string]int{},
	}}
	if !req.incremental {
		since = 0
	}
	mems, err := s.DB.SyncMemberships(ctx, dev.UserID, since, pos)
	if err != nil {
		return nil, err
	}
	// end is the boundary just after everything visible; sinceB just after the token.
	end, sinceB := persist.Pos{Seq: pos + 1}, persist.Pos{Seq: since + 1}
	changedOnly := req.incremental && !req.fullState
	// A new join shows history, which the room's history visibility may hide; only
	// those rooms' visibility is read (none in a typical incremental sync).
	var newJoins []string
	for _, m := range mems {
		if m.Membership == "join" && (!req.incremental || (m.At.Seq > since && m.Before != "join")) {
			newJoins = append(newJoins, m.RoomID)
		}
	}
	visibility, err := s.DB.HistoryVisibility(ctx, newJoins)
	if err != nil {
		return nil, err
	}
	var plans []roomPlan
	var invites []persist.SyncMembership
	for _, m := range mems {
		if !req.filter.allowsRoom(m.RoomID) {
			continue
		}
		changed := !req.incremental || m.At.Seq > since
		switch m.Membership {
		case "join":
			res.joined = append(res.joined, m.RoomID)
			p := roomPlan{room: m.RoomID, joined: true, span: persist.RoomRange{RoomID: m.RoomID, To: end}}
			if !req.incremental || (changed && m.Before != "join") {
				// Initial sync or a new join: recent history and the full state. The
				// history starts at the join where the room hides what came before.
				p.fullState = true
				if persist.HidesHistory(visibility[m.RoomID]) {
					// The current membership event may be a later profile change: the
					// history starts where this stay in the room began.
					cur, err := s.DB.Membership(ctx, m.RoomID, dev.UserID)
					if err != nil {
						return nil, err
					}
					p.span.From = m.At
					if cur.JoinedAt != nil && cur.JoinedAt.Less(m.At) {
						p.span.From = *cur.JoinedAt
					}
				}
			} else {
				p.span.From = sinceB
				p.fullState, p.always = req.fullState, req.fullState
			}
			plans = append(plans, p)
		case "invite":
			if changed {
				invites = append(invites, m)
			}
		case "leave", "ban":
			if req.incremental && !(changed && m.Before != m.Membership) {
				continue
			}
			if !req.incremental && !req.filter.Room.IncludeLeave {
				continue
			}
			upTo := persist.Pos{Seq: m.At.Seq, Idx: m.At.Idx + 1}
			p := roomPlan{room: m.RoomID, span: persist.RoomRange{RoomID: m.RoomID, From: sinceB, To: upTo}, always: true}
			if !req.incremental || m.Before != "join" {
				// They were not joined at the token (invite rejected, joined and left
				// since, or an initial sync asking for left rooms): the leave itself
				// and the state it happened in, no history they may never have seen.
				p.span.From, p.fullState = m.At, true
			}
			plans = append(plans, p)
		}
	}
	if changedOnly && pos <= since {
		// Nothing is visible after the token: the long-poll only needs res.joined.
		return res, nil
	}

	limit := req.filter.timelineLimit()
	spans := make([]persist.RoomRange, len(plans))
	for i, p := range plans {
		spans[i] = p.span
	}
	timelines, err := s.DB.SyncTimelines(ctx, spans, limit+1)
	if err != nil {
		return nil, err
	}
	type built struct {
		plan roomPlan
		tl   timeline
	}
	var rooms []*built
	var stateReqs []persist.StateRequest
	for _, p := range plans {
		evs := timelines[p.room]
		if len(evs) == 0 && !p.fullState && !p.always {
			continue
		}
		limited := len(evs) > limit
		if limited {
			evs = evs[len(evs)-limit:]
		}
		start := p.span.To
		if len(evs) > 0 {
			start = persist.Pos{Seq: evs[0].Seq, Idx: evs[0].Idx}
		}
		b := &built{plan: p, tl: timeline{Events: clientEvents(evs, dev), Limited: limited, PrevBatch: formatPageToken(start)}}
		switch {
		case p.fullState:
			stateReqs = append(stateReqs, persist.StateRequest{RoomID: p.room, At: start})
		case limited:
			// The gap between the token and the timeline: what changed in it.
			stateReqs = append(stateReqs, persist.StateRequest{RoomID: p.room, At: start, Since: p.span.From})
		}
		rooms = append(rooms, b)
	}
	states, err := s.DB.SyncState(ctx, stateReqs, persist.StateFilter{})
	if err != nil {
		return nil, err
	}
	for _, b := range rooms {
		state := eventList{Events: clientEvents(states[b.plan.room], dev)}
		if b.plan.joined {
			res.response.Rooms.Join[b.plan.room] = &joinedRoom{Timeline: b.tl, State: state}
		} else {
			res.response.Rooms.Leave[b.plan.room] = &leftRoom{Timeline: b.tl, State: state}
		}
	}

	if len(invites) > 0 {
		reqs := make([]persist.StateRequest, len(invites))
		for i, m := range invites {
			reqs[i] = persist.StateRequest{RoomID: m.RoomID, At: persist.Pos{Seq: m.At.Seq, Idx: m.At.Idx + 1}}
		}
		stripped, err := s.DB.SyncState(ctx, reqs, persist.StateFilter{Types: strippedStateTypes, Member: dev.UserID})
		if err != nil {
			return nil, err
		}
		for _, m := range invites {
			res.response.Rooms.Invite[m.RoomID] = &invitedRoom{InviteState: eventList{Events: strippedEvents(stripped[m.RoomID])}}
		}
	}
	return res, nil
}

// strippedEvents reduces state events to the stripped form.
func strippedEvents(evs []persist.StoredEvent) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(evs))
	for _, ev := range evs {
		var full struct {
			Content json.RawMessage `json:"content"`
		}
		if err := json.Unmarshal(ev.JSON, &full); err != nil {
			continue
		}
		key := ""
		if ev.StateKey != nil {
			key = *ev.StateKey
		}
		raw, err := matrix.Marshal(strippedEvent{Type: ev.Type, StateKey: key, Content: full.Content, Sender: ev.Sender})
		if err == nil {
			out = append(out, raw)
		}
	}
	return out
}
