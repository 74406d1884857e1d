package client

import (
	"context"
	"slices"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/ganglionhq/ganglion/persist"
)

// roomPlan is what one room of the response needs from Postgres.
type roomPlan struct {
	room      string
	joined    bool
	span      persist.RoomRange
	fullState bool
	// always puts the room in the response even with an empty timeline (full_state).
	always bool
}

// roomsStream is the events stream's part of /sync: the rooms the user is in, was
// invited to or left, with their timelines and state.
type roomsStream struct{ s *Server }

func (r *roomsStream) slot() int                { return slotEvents }
func (r *roomsStream) position() uint64         { return r.s.Feed.Position() }
func (r *roomsStream) next(since uint64) uint64 { return max(since, r.position()) }
func (r *roomsStream) notify(sc *syncCtx, since uint64, ch chan<- struct{}) func() {
	return r.s.Feed.Notify(since, sc.keys(), ch)
}

// fill assembles the rooms of the response for the span (since, pos] of the log. It
// runs one query for the user's memberships (none when the joined-rooms cache shows
// they did not change), one for the timelines of the rooms with something new, and,
// only when some room needs them, one for state and one for invites and knocks.
func (r *roomsStream) fill(ctx context.Context, sc *syncCtx, since, pos uint64) error {
	s, dev, req := r.s, sc.dev, sc.req
	// A token ahead of this process's feed (another sync worker's) shows nothing more
	// until the feed passes it.
	pos = min(pos, s.Feed.Position())
	plans, pending, quiet, err := r.plan(ctx, sc, since, pos)
	if err != nil || quiet {
		return err
	}
	changedOnly := req.incremental && !req.fullState
	if changedOnly && pos <= since {
		// Nothing is visible after the token: the long-poll only needs sc.joined.
		return nil
	}

	limit := req.filter.timelineLimit()
	spans := make([]persist.RoomRange, len(plans))
	for i, p := range plans {
		spans[i] = p.span
	}
	timelines, err := s.DB.SyncTimelines(ctx, spans, limit+1, req.filter.timeline().query())
	if err != nil {
		return err
	}
	var rooms []*builtRoom
	var stateReqs []persist.StateRequest
	for _, p := range plans {
		evs := timelines[p.room]
		if len(evs) == 0 && !p.fullState && !p.always {
			continue
		}
		limited := len(evs) > limit
		if limited {
			evs = evs[len(evs)-limit:]
		} else if req.incremental && sc.newlyJoined[p.room] {
			// A room joined since the token is new to the client: unless the timeline
			// reaches back to where the history it may read begins, there is a gap
			// before it to paginate, and Synapse marks it limited.
			limited = len(evs) == 0 || !beginsHistory(evs[0], p.span.From)
		}
		start := p.span.To
		if len(evs) > 0 {
			start = persist.Pos{Seq: evs[0].Seq, Idx: evs[0].Idx}
		}
		b := &builtRoom{plan: p, start: start, events: evs,
			tl: timeline{Limited: limited, PrevBatch: formatPageToken(start)}}
		switch {
		case p.fullState:
			stateReqs = append(stateReqs, persist.StateRequest{RoomID: p.room, At: start})
		case limited:
			// The gap between the token and the timeline: what changed in it.
			stateReqs = append(stateReqs, persist.StateRequest{RoomID: p.room, At: start, Since: p.span.From})
		}
		rooms = append(rooms, b)
	}
	if err := r.timelineEvents(ctx, rooms, dev); err != nil {
		return err
	}
	states, err := r.roomStates(ctx, sc, stateReqs, rooms)
	if err != nil {
		return err
	}
	var summarise []string
	for _, b := range rooms {
		state := eventList{Events: clientEvents(states[b.plan.room], dev)}
		if b.plan.joined {
			sc.res.Rooms.Join[b.plan.room] = &joinedRoom{Timeline: b.tl, State: state}
			if b.plan.fullState || hasMember(timelines[b.plan.room]) || hasMember(states[b.plan.room]) {
				summarise = append(summarise, b.plan.room)
			}
		} else {
			sc.res.Rooms.Leave[b.plan.room] = &leftRoom{Timeline: b.tl, State: state}
		}
	}
	if err := r.summaries(ctx, sc, summarise); err != nil {
		return err
	}

	if len(pending) > 0 {
		reqs := make([]persist.StateRequest, len(pending))
		for i, m := range pending {
			reqs[i] = persist.StateRequest{RoomID: m.RoomID, At: persist.Pos{Seq: m.At.Seq, Idx: m.At.Idx + 1}}
		}
		stripped, err := s.DB.SyncState(ctx, reqs, persist.StateFilter{Types: strippedStateTypes, Members: []string{dev.UserID}})
		if err != nil {
			return err
		}
		ignored, err := s.ignoredUsers(ctx, dev.UserID)
		if err != nil {
			return err
		}
		for _, m := range pending {
			state := eventList{Events: strippedEvents(stripped[m.RoomID])}
			if m.Membership == "knock" {
				sc.res.Rooms.Knock[m.RoomID] = &knockedRoom{KnockState: state}
				continue
			}
			// An invite from a user the invitee ignores is not shown, as Synapse does.
			if i := slices.IndexFunc(stripped[m.RoomID], func(ev persist.StoredEvent) bool { return ev.EventID == m.EventID }); i >= 0 && ignored[stripped[m.RoomID][i].Sender] {
				continue
			}
			sc.res.Rooms.Invite[m.RoomID] = &invitedRoom{InviteState: state}
		}
	}
	return nil
}

// beginsHistory reports whether ev is the first event of a room's history readable from
// from: the room's create event when all of it is readable.
func beginsHistory(ev persist.StoredEvent, from persist.Pos) bool {
	if from == (persist.Pos{}) {
		return ev.Type == "m.room.create"
	}
	return ev.Seq == from.Seq && ev.Idx == from.Idx
}

// builtRoom is a room of the response whose timeline is read.
type builtRoom struct {
	plan   roomPlan
	tl     timeline
	events []persist.StoredEvent
	// start is the boundary just before the timeline.
	start persist.Pos
}

// roomStates reads the state sections of the response's rooms and applies the state
// filter. With lazy-loaded members, a room's state carries only the member events of
// the timeline's senders (and the user's own), whatever else the state holds. Unless
// the filter asks for redundant members, a member the device was already sent is
// not sent again (lazySent): a busy room's incremental syncs then read no member state
// at all, as with Synapse's per-device cache.
func (r *roomsStream) roomStates(ctx context.Context, sc *syncCtx, reqs []persist.StateRequest, rooms []*builtRoom) (map[string][]persist.StoredEvent, error) {
	f := sc.req.filter
	if !f.lazyMembers() {
		states, err := r.s.DB.SyncState(ctx, reqs, persist.StateFilter{})
		if err != nil {
			return nil, err
		}
		return filterStates(states, f, nil), nil
	}
	redundant := f.state().IncludeRedundantMembers
	sent := r.s.lazySent.of(sc.dev, !sc.req.incremental || sc.req.fullState)
	planned := map[string]bool{}
	for _, q := range reqs {
		planned[q.RoomID] = true
	}
	all := map[string]bool{sc.dev.UserID: true}
	needed := map[string]map[string]bool{}
	var extra []persist.StateRequest
	for _, b := range rooms {
		set := map[string]bool{sc.dev.UserID: true}
		missing := false
		for _, ev := range b.events {
			set[ev.Sender] = true
			all[ev.Sender] = true
			missing = missing || redundant || !sent.has(b.plan.room, ev.Sender)
		}
		needed[b.plan.room] = set
		// The members an unchanged-state room needs are not in its state delta.
		if !planned[b.plan.room] && missing {
			extra = append(extra, persist.StateRequest{RoomID: b.plan.room, At: b.start})
		}
	}
	members := make([]string, 0, len(all))
	for u := range all {
		members = append(members, u)
	}
	more, err := r.s.DB.SyncState(ctx, extra, persist.StateFilter{Types: []string{"m.room.member"}, Members: members})
	if err != nil {
		return nil, err
	}
	states, err := r.s.DB.SyncState(ctx, reqs, persist.StateFilter{Members: members})
	if err != nil {
		return nil, err
	}
	for room, evs := range more {
		states[room] = evs
	}
	states = filterStates(states, f, needed)
	// What the device now has: the member events sent in state and in timelines.
	for room, evs := range states {
		sent.addMembers(room, evs)
	}
	for _, b := range rooms {
		sent.addMembers(b.plan.room, b.events)
	}
	return states, nil
}

// filterStates keeps the state events the filter's state section allows and, when
// needed is set, only the member events of each room's needed users.
func filterStates(states map[string][]persist.StoredEvent, f *filter, needed map[string]map[string]bool) map[string][]persist.StoredEvent {
	sf := f.state()
	if sf == nil && needed == nil {
		return states
	}
	for room, evs := range states {
		kept := evs[:0]
		for i := range evs {
			ev := &evs[i]
			if ev.Type == "m.room.member" && needed != nil && ev.StateKey != nil && !needed[room][*ev.StateKey] {
				continue
			}
			if sf.allowsEvent(ev) {
				kept = append(kept, *ev)
			}
		}
		states[room] = kept
	}
	return states
}

func hasMember(evs []persist.StoredEvent) bool {
	for _, ev := range evs {
		if ev.Type == "m.room.member" {
			return true
		}
	}
	return false
}

// summaries fills the summary of the joined rooms whose membership the client needs
// to learn about (new rooms, and rooms whose members changed).
func (r *roomsStream) summaries(ctx context.Context, sc *syncCtx, rooms []string) error {
	sums, err := r.s.DB.RoomSummaries(ctx, rooms, sc.dev.UserID)
	if err != nil {
		return err
	}
	for room, sum := range sums {
		jr := sc.res.Rooms.Join[room]
		if jr == nil {
			continue
		}
		joined, invited := sum.Joined, sum.Invited
		jr.Summary = roomSummary{Heroes: sum.Heroes, Joined: &joined, Invited: &invited}
	}
	return nil
}

// plan finds the rooms of the response and what each needs: the user's memberships
// changed since the token (one query), or, when the joined-rooms cache shows that none
// changed, the cached rooms with something new (no query). It sets sc.joined; quiet
// says that nothing at all is new for the user.
func (r *roomsStream) plan(ctx context.Context, sc *syncCtx, since, pos uint64) (plans []roomPlan, pending []persist.SyncMembership, quiet bool, err error) {
	s, dev, req := r.s, sc.dev, sc.req
	if req.incremental && !req.fullState {
		if rooms, at, ok := s.joinedCache.get(dev.UserID, s.Feed); ok {
			joined := make([]string, 0, len(rooms))
			for _, room := range rooms {
				if req.filter.allowsRoom(room) {
					joined = append(joined, room)
				}
			}
			sc.joined = joined
			// Nothing new for the user's rooms or membership since the token: answered
			// from memory, without asking Postgres.
			if changed, known := s.Feed.NewSince(since, sc.keys()); known && !changed {
				return nil, nil, true, nil
			}
			// The user's memberships are as cached since before the token: only the
			// rooms with something new need a look, and no membership query.
			if at <= since {
				changed, known := s.Feed.ChangedKeys(since, joined)
				for _, room := range joined {
					if changed[room] || !known {
						plans = append(plans, roomPlan{room: room, joined: true,
							span: persist.RoomRange{RoomID: room, From: persist.Pos{Seq: since + 1}, To: persist.Pos{Seq: pos + 1}}})
					}
				}
				return plans, nil, false, nil
			}
			sc.joined = nil
		}
	}
	mems, err := s.DB.SyncMemberships(ctx, dev.UserID, since, pos)
	if err != nil {
		return nil, nil, false, err
	}
	var all []string
	for _, m := range mems {
		if m.Membership == "join" {
			all = append(all, m.RoomID)
		}
	}
	s.joinedCache.put(dev.UserID, pos, all)
	// end is the boundary just after everything visible; sinceB just after the token.
	end, sinceB := persist.Pos{Seq: pos + 1}, persist.Pos{Seq: since + 1}
	// A new join, and a left room in an initial sync, show history, which the room's
	// history visibility may hide; only those rooms' visibility is read (none in a
	// typical incremental sync).
	var newJoins []string
	for _, m := range mems {
		newJoin := m.Membership == "join" && (!req.incremental || (m.At.Seq > since && m.Before != "join"))
		shownLeft := (m.Membership == "leave" || m.Membership == "ban") && !req.incremental && req.filter.includeLeave()
		if newJoin || shownLeft {
			newJoins = append(newJoins, m.RoomID)
		}
	}
	visibility, err := s.DB.HistoryVisibility(ctx, newJoins)
	if err != nil {
		return nil, nil, false, err
	}
	for _, m := range mems {
		if !req.filter.allowsRoom(m.RoomID) {
			continue
		}
		changed := !req.incremental || m.At.Seq > since
		switch m.Membership {
		case "join":
			sc.joined = append(sc.joined, m.RoomID)
			p := roomPlan{room: m.RoomID, joined: true, span: persist.RoomRange{RoomID: m.RoomID, To: end}}
			if !req.incremental || (changed && m.Before != "join") {
				// Initial sync or a new join: recent history and the full state. The
				// history starts at the join where the room hides what came before.
				p.fullState = true
				sc.newlyJoined[m.RoomID] = true
				if persist.HidesHistory(visibility[m.RoomID]) {
					// The current membership event may be a later profile change: the
					// history starts where this stay in the room began.
					cur, err := s.DB.Membership(ctx, m.RoomID, dev.UserID)
					if err != nil {
						return nil, nil, false, err
					}
					p.span.From = m.At
					if from := cur.VisibleFrom(visibility[m.RoomID]); from != nil && from.Less(m.At) {
						p.span.From = *from
					}
				}
			} else {
				p.span.From = sinceB
				p.fullState, p.always = req.fullState, req.fullState
			}
			plans = append(plans, p)
		case "invite", "knock":
			if changed {
				pending = append(pending, m)
			}
		case "leave", "ban":
			if req.incremental && !(changed && m.Before != m.Membership) {
				continue
			}
			if !req.incremental && !req.filter.includeLeave() {
				continue
			}
			upTo := persist.Pos{Seq: m.At.Seq, Idx: m.At.Idx + 1}
			p := roomPlan{room: m.RoomID, span: persist.RoomRange{RoomID: m.RoomID, From: sinceB, To: upTo}, always: true}
			if !req.incremental || m.Before != "join" {
				// They were not joined at the token (invite rejected, joined and left
				// since, or an initial sync asking for left rooms): the leave itself
				// and the state it happened in, no history they may never have seen.
				p.span.From, p.fullState = m.At, true
				if !req.incremental {
					// An initial sync shows a room they had joined as they saw it: its
					// recent history up to the leave, from where they could read it.
					cur, err := s.DB.Membership(ctx, m.RoomID, dev.UserID)
					if err != nil {
						return nil, nil, false, err
					}
					if cur.JoinedAt != nil {
						p.span.From = persist.Pos{}
						if persist.HidesHistory(visibility[m.RoomID]) {
							p.span.From = *cur.VisibleFrom(visibility[m.RoomID])
						}
					}
				}
			}
			plans = append(plans, p)
		}
	}
	return plans, pending, false, nil
}

// joinedCache remembers each user's joined rooms as of an events position. The entry
// holds as long as no visible log message since that position changed the user's
// membership (the feed knows: member events carry their user in the message's keys).
// The zero value is ready.
type joinedCache struct {
	m boundedMap[string, joinedAt]
}

type joinedAt struct {
	pos   uint64
	rooms []string
}

// get returns the user's joined rooms and the position they were cached at, if no
// membership of the user changed since.
func (c *joinedCache) get(user string, feed Feed) ([]string, uint64, bool) {
	e, ok := c.m.get(user)
	if !ok {
		return nil, 0, false
	}
	changed, known := feed.NewSince(e.pos, []string{user})
	return e.rooms, e.pos, known && !changed
}

func (c *joinedCache) put(user string, pos uint64, rooms []string) {
	c.m.put(user, joinedAt{pos: pos, rooms: rooms})
}

// lazySentCache remembers, per device, the (room, user) pairs whose member event the
// device was sent, for lazy-loaded members. A client learns every later change of a
// member from the timeline or the state delta of a sync, so a pair stays known; an
// initial or full-state sync starts the device's set again. The zero value is ready.
type lazySentCache struct {
	mu      sync.Mutex
	devices map[Device]*lazySent
}

// Bounds of the cache: past them a device's set, or the whole cache, starts over,
// which only costs queries.
const (
	lazySentDevices = 10_000
	lazySentPairs   = 10_000
)

func (c *lazySentCache) of(dev Device, reset bool) *lazySent {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.devices == nil || len(c.devices) >= lazySentDevices {
		c.devices = map[Device]*lazySent{}
	}
	s := c.devices[dev]
	if s == nil || reset {
		s = &lazySent{pairs: map[[2]string]struct{}{}}
		c.devices[dev] = s
	}
	return s
}

// lazySent is one device's set of (room, user) pairs whose member event it was sent.
type lazySent struct {
	mu    sync.Mutex
	pairs map[[2]string]struct{}
}

func (s *lazySent) has(room, user string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.pairs[[2]string{room, user}]
	return ok
}

// addMembers records the member events among evs as sent.
func (s *lazySent) addMembers(room string, evs []persist.StoredEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ev := range evs {
		if ev.Type != "m.room.member" || ev.StateKey == nil {
			continue
		}
		if len(s.pairs) >= lazySentPairs {
			clear(s.pairs)
		}
		s.pairs[[2]string{room, *ev.StateKey}] = struct{}{}
	}
}

// timelineEvents puts the timelines' events in the client format, each with the user's
// membership at it (unsigned.membership). A joined room whose timeline holds none of
// the user's member events was joined all along; the others read the user's membership
// history, one query for all of them.
func (r *roomsStream) timelineEvents(ctx context.Context, rooms []*builtRoom, dev Device) error {
	joinedThroughout := map[string]bool{}
	var evs []persist.StoredEvent
	var gapped []string
	for _, b := range rooms {
		joinedThroughout[b.plan.room] = b.plan.joined && !slices.ContainsFunc(b.events, func(e persist.StoredEvent) bool {
			return e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == dev.UserID
		})
		evs = append(evs, b.events...)
		if b.tl.Limited {
			for _, e := range b.events {
				gapped = append(gapped, e.EventID)
			}
		}
	}
	// A limited timeline's events carry their aggregations, as Synapse bundles them:
	// the client did not see the relations in the gap come by. Two reads side by side.
	var memberships []string
	var bundles map[string]*persist.Bundle
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		memberships, err = r.s.membershipsOf(gctx, evs, dev.UserID, func(room string) (string, bool) {
			if joinedThroughout[room] {
				return "join", true
			}
			return "", false
		}, nil)
		return err
	})
	if len(gapped) > 0 {
		g.Go(func() (err error) { bundles, err = r.s.DB.Bundles(gctx, gapped, dev.UserID); return err })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for _, b := range rooms {
		n := len(b.events)
		b.tl.Events, memberships = r.s.asSeen(b.events, dev, memberships[:n]), memberships[n:]
		if b.tl.Limited {
			if err := addBundles(b.tl.Events, b.events, bundles, dev); err != nil {
				return err
			}
		}
	}
	return nil
}
