package client

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/gateway/serve"
	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/notifications"
	"github.com/ganglionhq/ganglion/schemas"
)

// Feed is the sync feed of one stream in a process: the visible position, up to which
// every log message is in Postgres, and long-poll wake-ups. processors/syncfeed
// implements it.
type Feed interface {
	Position() uint64
	// Received is the sequence of the last message read, visible or not.
	Received() uint64
	// Wait returns once the position passes since with a message of one of rooms or
	// one changing userID's membership, or when ctx ends; it returns the position.
	Wait(ctx context.Context, since uint64, userID string, rooms []string) uint64
	// Notify signals ch once the position passes since with a message concerning one
	// of keys (user and room IDs); stop forgets the request.
	Notify(since uint64, keys []string, ch chan<- struct{}) (stop func())
	// NewSince tells from memory whether a visible message after since concerns one of
	// keys; known is false when since is older than the feed remembers.
	NewSince(since uint64, keys []string) (changed, known bool)
	// ChangedKeys is NewSince for each of keys at once: those concerned.
	ChangedKeys(since uint64, keys []string) (changed map[string]bool, known bool)
	// WaitPosition returns once the position reaches seq, or when ctx ends.
	WaitPosition(ctx context.Context, seq uint64)
	// End reads the sequence of the stream's last message now, from the bus.
	End(ctx context.Context) (uint64, error)
}

// syncStream is one stream's part of /sync, one file each (sync_<stream>.go): adding
// a stream adds a provider and touches no other.
type syncStream interface {
	// slot is the stream's field of the sync token.
	slot() int
	// position is the stream's visible position in this process.
	position() uint64
	// next is the stream's field of the token of a response to a request from since.
	next(since uint64) uint64
	// fill adds to sc.res what changed for sc's user in (since, to]; since is 0 on an
	// initial sync. Providers ask their feed's NewSince first, so a stream with nothing
	// for the user costs no query.
	fill(ctx context.Context, sc *syncCtx, since, to uint64) error
	// notify signals ch once something concerning sc arrives after since.
	notify(sc *syncCtx, since uint64, ch chan<- struct{}) (stop func())
}

// syncCtx is one /sync response being built, and what its providers share.
type syncCtx struct {
	dev Device
	req *syncRequest
	res *syncResponse
	// next is the token of the response: each stream's position.
	next syncToken
	// joined are the rooms the user is joined to at the response's events position;
	// newlyJoined those among them whose timeline starts at the join (all of them on an
	// initial sync): their ephemeral and room account data start from scratch too.
	joined      []string
	newlyJoined map[string]bool
}

// keys are what a long-poll of sc waits for: the user and every room they are in.
func (sc *syncCtx) keys() []string {
	return append(slices.Clip(sc.joined), sc.dev.UserID)
}

// joinedRoom is sc's entry for a joined room, created with an empty timeline for a room
// that only has ephemeral events or account data to show.
func (sc *syncCtx) joinedRoom(room string) *joinedRoom {
	jr := sc.res.Rooms.Join[room]
	if jr == nil {
		jr = &joinedRoom{Timeline: timeline{Events: []json.RawMessage{},
			PrevBatch: formatPageToken(persist.Pos{Seq: sc.next[slotEvents] + 1})}, extra: true}
		sc.res.Rooms.Join[room] = jr
	}
	return jr
}

// applyFilter applies the filter's event filters to what the per-user streams put in
// the response: providers add everything that changed for the user, the filter decides
// what is sent. A room listed only for what the filter then removes is left out.
func (sc *syncCtx) applyFilter() {
	f := sc.req.filter
	sc.res.AccountData.Events = filterEvents(sc.res.AccountData.Events, f.AccountData)
	sc.res.Presence.Events = filterEvents(sc.res.Presence.Events, f.Presence)
	if f.Room == nil {
		return
	}
	for room, jr := range sc.res.Rooms.Join {
		jr.Ephemeral.Events = filterRoomEvents(jr.Ephemeral.Events, f.Room.Ephemeral, room)
		jr.AccountData.Events = filterRoomEvents(jr.AccountData.Events, f.Room.AccountData, room)
		if jr.extra && len(jr.Ephemeral.Events) == 0 && len(jr.AccountData.Events) == 0 {
			delete(sc.res.Rooms.Join, room)
		}
	}
}

// filterEvents keeps the events ef allows, up to its limit.
func filterEvents(evs []json.RawMessage, ef *eventFilter) []json.RawMessage {
	if ef == nil || len(evs) == 0 {
		return evs
	}
	kept := evs[:0]
	for _, raw := range evs {
		var ev struct {
			Type   string `json:"type"`
			Sender string `json:"sender"`
		}
		if json.Unmarshal(raw, &ev) == nil && ef.allows(ev.Type, ev.Sender) {
			kept = append(kept, raw)
		}
	}
	if n := ef.limitOr(len(kept), len(kept)); n < len(kept) {
		kept = kept[:n]
	}
	return kept
}

func filterRoomEvents(evs []json.RawMessage, rf *roomEventFilter, room string) []json.RawMessage {
	if rf == nil {
		return evs
	}
	if !rf.allowsRoom(room) {
		return nil
	}
	return filterEvents(evs, &rf.eventFilter)
}

// feedStream is what every per-user stream's provider has in common: its field of the
// token and its feed.
type feedStream struct {
	field int
	feed  Feed
}

func (f feedStream) slot() int        { return f.field }
func (f feedStream) position() uint64 { return f.feed.Position() }

// next never moves a token back: one ahead of this process's feed (another sync
// worker's) shows nothing more until the feed passes it.
func (f feedStream) next(since uint64) uint64 { return max(since, f.position()) }
func (f feedStream) notify(sc *syncCtx, since uint64, ch chan<- struct{}) func() {
	return f.feed.Notify(since, sc.keys(), ch)
}

// changed reports whether the stream may have something for sc in (since, to]: always
// on an initial sync, else as the feed remembers (when it does). An incremental sync
// whose token has 0 for the stream (nothing had been written to it yet) asks the feed
// too, so a stream nobody writes costs no query.
func (f feedStream) changed(sc *syncCtx, since uint64) bool {
	if !sc.req.incremental {
		return true
	}
	changed, known := f.feed.NewSince(since, sc.keys())
	return changed || !known
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
	s.syncStreams = s.newSyncStreams()
	s.streamWrites = map[string]*ownWrites{}
	for name := range s.StreamFeeds {
		s.streamWrites[name] = &ownWrites{}
	}
	r.handle("GET", "/sync", syncVersions, serve.LongPoll(s.authedNoWait(s.sync), s.HTTP).ServeHTTP)
}

// timelineLimit is the number of events a room's timeline may carry in one response.
func (f *filter) timelineLimit() int {
	if f.Room == nil || f.Room.Timeline == nil {
		return defaultTimelineLimit
	}
	return f.Room.Timeline.limitOr(defaultTimelineLimit, maxTimelineLimit)
}

// syncRequest is a parsed /sync query.
type syncRequest struct {
	// since is the token's positions; incremental tells whether there was one.
	since       syncToken
	incremental bool
	timeout     time.Duration
	fullState   bool
	filter      *filter
	// setPresence is the presence the /sync sets (online by default).
	setPresence string
}

func (s *Server) parseSyncRequest(ctx context.Context, r *http.Request, dev Device) (*syncRequest, error) {
	q := r.URL.Query()
	req := &syncRequest{}
	if tok := q.Get("since"); tok != "" {
		pos, err := parseSyncToken(tok)
		if err != nil {
			return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "invalid since token")
		}
		req.since, req.incremental = pos, true
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
	req.setPresence = schemas.PresenceOnline
	if p := q.Get("set_presence"); p != "" {
		if !schemas.ValidPresence(p) {
			return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "set_presence must be online, unavailable or offline")
		}
		req.setPresence = p
	}
	if req.filter, err = s.resolveFilter(ctx, q.Get("filter"), dev); err != nil {
		return nil, err
	}
	return req, nil
}

// sync serves GET /sync. An incremental sync with nothing new waits, up to timeout,
// for a feed to report something for the user, then looks again.
func (s *Server) sync(w http.ResponseWriter, r *http.Request, dev Device) {
	req, err := s.parseSyncRequest(r.Context(), r, dev)
	if err != nil {
		s.writeErr(w, "sync", err)
		return
	}
	defer s.syncing(r.Context(), dev, req.setPresence)()
	ctx := r.Context()
	s.awaitOwnWrite(ctx, dev)
	canWait := req.incremental && !req.fullState && req.timeout > 0
	if !canWait {
		// A sync that answers at once shows every event answered here before it came;
		// a long-poll gets any it misses a moment later, as they become visible.
		s.seeAnswered(ctx)
	}
	if s.Feed != nil && (!req.incremental || req.fullState || (!canWait && s.SharedBus)) {
		feeds := []Feed{s.Feed}
		for _, f := range s.StreamFeeds {
			feeds = append(feeds, f)
		}
		s.seeEnds(ctx, feeds...)
	}
	waitCtx := ctx
	if canWait {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithTimeout(ctx, req.timeout)
		defer cancel()
	}
	since := req.since
	for {
		sc, err := s.buildSync(ctx, dev, req, since)
		if err != nil {
			if ctx.Err() == nil {
				s.writeErr(w, "sync", err)
			}
			return
		}
		if !sc.res.empty() || !canWait || waitCtx.Err() != nil {
			matrix.WriteJSON(w, http.StatusOK, sc.res)
			return
		}
		// Nothing for the user up to next: wait from there. Looking again from next
		// rather than from since gives the same answer, since nothing came between.
		since = sc.next
		s.waitForChange(waitCtx, sc)
	}
}

// buildSync asks every stream for what changed for the user since the token.
func (s *Server) buildSync(ctx context.Context, dev Device, req *syncRequest, since syncToken) (*syncCtx, error) {
	sc := &syncCtx{dev: dev, req: req, newlyJoined: map[string]bool{}, res: &syncResponse{
		Rooms:                        syncRooms{Join: map[string]*joinedRoom{}, Invite: map[string]*invitedRoom{}, Knock: map[string]*knockedRoom{}, Leave: map[string]*leftRoom{}},
		DeviceLists:                  deviceLists{Changed: []string{}, Left: []string{}},
		DeviceOneTimeKeysCount:       map[string]int{},
		DeviceUnusedFallbackKeyTypes: []string{},
	}}
	for _, st := range s.syncStreams {
		sc.next[st.slot()] = st.next(since[st.slot()])
	}
	// The rooms stream goes first: the others read the rooms it found the user in.
	for _, st := range s.syncStreams {
		from := since[st.slot()]
		if !req.incremental {
			from = 0
		}
		if err := st.fill(ctx, sc, from, sc.next[st.slot()]); err != nil {
			return nil, err
		}
	}
	sc.applyFilter()
	if err := s.fillUnread(ctx, sc); err != nil {
		return nil, err
	}
	sc.res.NextBatch = sc.next.String()
	return sc, nil
}

// waitForChange returns once a stream has something after sc.next for the user, or
// when ctx ends.
func (s *Server) waitForChange(ctx context.Context, sc *syncCtx) {
	ch := make(chan struct{}, 1)
	for _, st := range s.syncStreams {
		stop := st.notify(sc, sc.next[st.slot()], ch)
		defer stop()
	}
	select {
	case <-ch:
	case <-ctx.Done():
	}
}

// newSyncStreams lists the providers of the streams this process follows: the rooms
// stream first, then the others in their token order. The providers are a map, so a
// stream given twice does not compile.
func (s *Server) newSyncStreams() []syncStream {
	providers := map[string]func(feedStream) syncStream{
		schemas.StreamAccountData: func(f feedStream) syncStream { return &accountDataStream{feedStream: f, store: s.accountData} },
		schemas.StreamDeviceLists: func(f feedStream) syncStream { return &deviceListsStream{feedStream: f, s: s} },
		schemas.StreamToDevice:    func(f feedStream) syncStream { return &toDeviceStream{feedStream: f, s: s} },
		schemas.StreamPushRules:   func(f feedStream) syncStream { return &pushRulesStream{feedStream: f, store: s.pushRules} },
		schemas.StreamTyping:      func(f feedStream) syncStream { return &typingStream{feedStream: f, typers: s.Views.Typers} },
		schemas.StreamReceipts: func(f feedStream) syncStream {
			return &receiptsStream{feedStream: f, store: s.receipts, recent: s.Views.Receipts}
		},
		schemas.StreamPresence: func(f feedStream) syncStream { return &presenceStream{feedStream: f, s: s} },
	}
	names := slices.SortedFunc(maps.Keys(providers), func(a, b string) int { return streamSlots[a] - streamSlots[b] })
	out := []syncStream{&roomsStream{s: s}}
	for _, name := range names {
		if f := s.StreamFeeds[name]; f != nil {
			out = append(out, providers[name](feedStream{field: streamSlots[name], feed: f}))
		}
	}
	return out
}

// Response bodies. Every list the spec describes is present, as [] when empty, which
// is why these are our own types rather than a library's.

type syncResponse struct {
	NextBatch                    string         `json:"next_batch"`
	Rooms                        syncRooms      `json:"rooms"`
	AccountData                  eventList      `json:"account_data"`
	Presence                     eventList      `json:"presence"`
	ToDevice                     eventList      `json:"to_device"`
	DeviceLists                  deviceLists    `json:"device_lists"`
	DeviceOneTimeKeysCount       map[string]int `json:"device_one_time_keys_count"`
	DeviceUnusedFallbackKeyTypes []string       `json:"device_unused_fallback_key_types"`
}

// empty reports whether the response has nothing for the client; a long-poll waits on.
// The key counts are state, not changes, and do not count.
func (r *syncResponse) empty() bool {
	return len(r.Rooms.Join) == 0 && len(r.Rooms.Invite) == 0 && len(r.Rooms.Knock) == 0 && len(r.Rooms.Leave) == 0 &&
		len(r.AccountData.Events) == 0 && len(r.Presence.Events) == 0 && len(r.ToDevice.Events) == 0 &&
		len(r.DeviceLists.Changed) == 0 && len(r.DeviceLists.Left) == 0
}

type syncRooms struct {
	Join   map[string]*joinedRoom  `json:"join"`
	Invite map[string]*invitedRoom `json:"invite"`
	Knock  map[string]*knockedRoom `json:"knock"`
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
	Summary             roomSummary         `json:"summary"`
	Timeline            timeline            `json:"timeline"`
	State               eventList           `json:"state"`
	Ephemeral           eventList           `json:"ephemeral"`
	AccountData         eventList           `json:"account_data"`
	UnreadNotifications notifications.Count `json:"unread_notifications"`
	// UnreadThreadNotifications are the counts of each thread, when the filter asks
	// for them apart (unread_thread_notifications).
	UnreadThreadNotifications map[string]notifications.Count `json:"unread_thread_notifications,omitempty"`
	// extra marks a room listed by a stream other than the rooms stream, for its
	// ephemeral events or account data only.
	extra bool
}

// roomSummary is a joined room's summary; empty when nothing in it changed.
type roomSummary struct {
	Heroes  []string `json:"m.heroes,omitempty"`
	Joined  *int     `json:"m.joined_member_count,omitempty"`
	Invited *int     `json:"m.invited_member_count,omitempty"`
}

type invitedRoom struct {
	InviteState eventList `json:"invite_state"`
}

// knockedRoom is a room the user knocked on: the state they knocked with, stripped.
type knockedRoom struct {
	KnockState eventList `json:"knock_state"`
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
