package client

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
)

// Bounds of a search, as Synapse's.
const (
	defaultSearchLimit = 10
	maxSearchLimit     = 100
	maxSearchBody      = 64 << 10
	maxSearchContext   = 20
)

func (s *Server) registerSearch(r router) {
	r.handle("POST", "/search", allVersions, s.authed(s.search))
}

type searchRequest struct {
	SearchCategories struct {
		RoomEvents *roomEventsCriteria `json:"room_events"`
	} `json:"search_categories"`
}

type roomEventsCriteria struct {
	SearchTerm   string           `json:"search_term"`
	Keys         []string         `json:"keys"`
	Filter       *roomEventFilter `json:"filter"`
	OrderBy      string           `json:"order_by"`
	EventContext *struct {
		BeforeLimit    *int `json:"before_limit"`
		AfterLimit     *int `json:"after_limit"`
		IncludeProfile bool `json:"include_profile"`
	} `json:"event_context"`
	IncludeState bool `json:"include_state"`
	Groupings    *struct {
		GroupBy []struct {
			Key string `json:"key"`
		} `json:"group_by"`
	} `json:"groupings"`
}

type searchResult struct {
	Rank    float64          `json:"rank"`
	Result  json.RawMessage  `json:"result"`
	Context *searchEventCtxt `json:"context,omitempty"`
}

type searchEventCtxt struct {
	Start        string                 `json:"start"`
	End          string                 `json:"end"`
	EventsBefore []json.RawMessage      `json:"events_before"`
	EventsAfter  []json.RawMessage      `json:"events_after"`
	ProfileInfo  map[string]profileInfo `json:"profile_info,omitempty"`
}

type profileInfo struct {
	DisplayName *string `json:"displayname,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
}

type searchGroup struct {
	Results   []string `json:"results"`
	Order     int      `json:"order"`
	NextBatch string   `json:"next_batch,omitempty"`
}

type roomEventsResults struct {
	Count      int                                `json:"count"`
	Highlights []string                           `json:"highlights"`
	Results    []searchResult                     `json:"results"`
	NextBatch  string                             `json:"next_batch,omitempty"`
	Groups     map[string]map[string]*searchGroup `json:"groups,omitempty"`
	State      map[string][]json.RawMessage       `json:"state,omitempty"`
}

var searchKeysAllowed = []string{"content.body", "content.name", "content.topic"}

// search searches the messages, names and topics of the rooms the user is joined to
// (narrowed by the filter's rooms), with Postgres full-text search: every word must
// match (English stemming), ranked or newest first, with events around each result,
// grouping by room or sender, and the rooms' state when asked. next_batch continues: a
// position for order_by recent, an offset for rank.
func (s *Server) search(w http.ResponseWriter, r *http.Request, dev Device) {
	var req searchRequest
	if err := matrix.DecodeBody(r, maxSearchBody, &req); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	c := req.SearchCategories.RoomEvents
	if c == nil {
		matrix.WriteJSON(w, http.StatusOK, map[string]any{"search_categories": map[string]any{}})
		return
	}
	if err := c.check(); err != nil {
		matrix.WriteError(w, err)
		return
	}
	q := persist.SearchQuery{Terms: persist.SearchTerms(c.SearchTerm), Keys: c.Keys, Recent: c.OrderBy == "recent",
		Limit: defaultSearchLimit}
	if c.Filter != nil && c.Filter.Limit != nil {
		q.Limit = min(max(*c.Filter.Limit, 1), maxSearchLimit)
	}
	if tok := r.URL.Query().Get("next_batch"); tok != "" {
		if err := continueSearch(&q, tok); err != nil {
			matrix.WriteError(w, err)
			return
		}
	}
	joined, err := s.DB.RoomsOfUser(r.Context(), dev.UserID, "join")
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	q.Rooms = slices.DeleteFunc(joined, func(room string) bool { return !c.Filter.allowsRoom(room) })
	hits, total, err := s.DB.Search(r.Context(), q)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	// A result is shown only where the user may read it (history visibility).
	bounds := map[string]*readBound{}
	var shown []persist.SearchHit
	for _, h := range hits {
		b, ok := bounds[h.Event.RoomID]
		if !ok {
			if _, bound, err := s.readBoundOf(r.Context(), h.Event.RoomID, dev); err == nil {
				b = &bound
			}
			bounds[h.Event.RoomID] = b
		}
		if b != nil && b.allows(persist.Pos{Seq: h.Event.Seq, Idx: h.Event.Idx}) && c.Filter.allowsEvent(&h.Event) {
			shown = append(shown, h)
		}
	}
	// Each result with the user's membership at it, from the histories the bounds read.
	histories := map[string][]persist.MemberChange{}
	evs := make([]persist.StoredEvent, len(shown))
	for i, h := range shown {
		evs[i] = h.Event
		histories[h.Event.RoomID] = bounds[h.Event.RoomID].history
	}
	memberships, err := s.membershipsOf(r.Context(), evs, dev.UserID, nil, histories)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	seen := s.asSeen(evs, dev, memberships)
	out := roomEventsResults{Count: total, Highlights: highlights(q.Terms), Results: []searchResult{}}
	for i, h := range shown {
		res := searchResult{Rank: h.Rank, Result: seen[i]}
		if c.EventContext != nil {
			if res.Context, err = s.searchContext(r, &h.Event, c, bounds[h.Event.RoomID], dev); err != nil {
				s.writeErr(w, r.Pattern, err)
				return
			}
		}
		out.Results = append(out.Results, res)
	}
	switch {
	case q.Recent && len(hits) > 0:
		last := hits[len(hits)-1].Event
		out.NextBatch = formatPageToken(persist.Pos{Seq: last.Seq, Idx: last.Idx})
	case !q.Recent && len(hits) == q.Limit:
		out.NextBatch = "o" + strconv.Itoa(q.Offset+len(hits))
	}
	if c.Groupings != nil {
		out.Groups = groupResults(shown, c, out.NextBatch)
	}
	if c.IncludeState {
		out.State = map[string][]json.RawMessage{}
		for _, h := range shown {
			room := h.Event.RoomID
			if _, done := out.State[room]; done {
				continue
			}
			state, err := s.DB.CurrentState(r.Context(), room)
			if err != nil {
				s.writeErr(w, r.Pattern, err)
				return
			}
			out.State[room] = clientEvents(state, dev)
		}
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"search_categories": map[string]any{"room_events": out}})
}

func (c *roomEventsCriteria) check() error {
	if strings.TrimSpace(c.SearchTerm) == "" {
		return matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "search_term is required")
	}
	for _, k := range c.Keys {
		if !slices.Contains(searchKeysAllowed, k) {
			return matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "unknown key %q", k)
		}
	}
	switch c.OrderBy {
	case "", "rank", "recent":
	default:
		return matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "order_by must be rank or recent")
	}
	if g := c.Groupings; g != nil {
		for _, by := range g.GroupBy {
			if by.Key != "room_id" && by.Key != "sender" {
				return matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "group_by key must be room_id or sender")
			}
		}
	}
	if c.Filter != nil {
		return checkRoomIDs(c.Filter.Rooms, c.Filter.NotRooms)
	}
	return nil
}

// continueSearch reads a next_batch token into q: "t…" (a position, for recent) or
// "o<offset>" (for rank).
func continueSearch(q *persist.SearchQuery, tok string) error {
	bad := matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "invalid next_batch token")
	if !q.Recent {
		n, ok := parseOffsetToken(tok, "o")
		if !ok {
			return bad
		}
		q.Offset = n
		return nil
	}
	p, err := parsePageToken(tok)
	if err != nil {
		return bad
	}
	q.Before = &p
	return nil
}

// highlights are the words a client marks in results: the search's words, lowercased.
func highlights(terms []string) []string {
	out := make([]string, len(terms))
	for i, t := range terms {
		out[i] = strings.ToLower(t)
	}
	return out
}

// searchContext returns the events around a result, within what the user may read.
func (s *Server) searchContext(r *http.Request, ev *persist.StoredEvent, c *roomEventsCriteria, bound *readBound, dev Device) (*searchEventCtxt, error) {
	before, after := 5, 5
	if l := c.EventContext.BeforeLimit; l != nil {
		before = min(max(*l, 0), maxSearchContext)
	}
	if l := c.EventContext.AfterLimit; l != nil {
		after = min(max(*l, 0), maxSearchContext)
	}
	at := persist.Pos{Seq: ev.Seq, Idx: ev.Idx}
	floor, ceiling := bound.floor(), bound.ceiling()
	out := &searchEventCtxt{Start: formatPageToken(at), End: formatPageToken(persist.Pos{Seq: at.Seq, Idx: at.Idx + 1})}
	var evsBefore, evsAfter []persist.StoredEvent
	var err error
	if before > 0 {
		if evsBefore, err = s.DB.RoomEvents(r.Context(), ev.RoomID, at, &floor, true, before, persist.EventFilter{}); err != nil {
			return nil, err
		}
	}
	if after > 0 {
		if evsAfter, err = s.DB.RoomEvents(r.Context(), ev.RoomID, persist.Pos{Seq: at.Seq, Idx: at.Idx + 1}, &ceiling, false, after, persist.EventFilter{}); err != nil {
			return nil, err
		}
	}
	if len(evsBefore) > 0 {
		out.Start = formatPageToken(afterInPage(evsBefore[len(evsBefore)-1], true))
	}
	if len(evsAfter) > 0 {
		out.End = formatPageToken(afterInPage(evsAfter[len(evsAfter)-1], false))
	}
	out.EventsBefore, out.EventsAfter = clientEvents(evsBefore, dev), clientEvents(evsAfter, dev)
	if c.EventContext.IncludeProfile {
		out.ProfileInfo = map[string]profileInfo{}
		for _, e := range slices.Concat(evsBefore, []persist.StoredEvent{*ev}, evsAfter) {
			if _, ok := out.ProfileInfo[e.Sender]; !ok {
				p, _ := s.DB.GetProfile(r.Context(), e.Sender) // a remote sender has none
				out.ProfileInfo[e.Sender] = profileInfo{DisplayName: p.DisplayName, AvatarURL: p.AvatarURL}
			}
		}
	}
	return out, nil
}

// groupResults groups the results' event IDs by room and by sender, as asked.
func groupResults(hits []persist.SearchHit, c *roomEventsCriteria, next string) map[string]map[string]*searchGroup {
	out := map[string]map[string]*searchGroup{}
	for _, by := range c.Groupings.GroupBy {
		groups := map[string]*searchGroup{}
		for _, h := range hits {
			key := h.Event.RoomID
			if by.Key == "sender" {
				key = h.Event.Sender
			}
			g := groups[key]
			if g == nil {
				g = &searchGroup{Order: len(groups) + 1, NextBatch: next}
				groups[key] = g
			}
			g.Results = append(g.Results, h.Event.EventID)
		}
		out[by.Key] = groups
	}
	return out
}
