package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
)

// filter is a client's filter (spec "Filtering"): the one type that uploads are checked
// with and that /sync and /messages apply. Lists are pointers where the spec tells an
// absent list (everything) from an empty one (nothing).
type filter struct {
	EventFields []string     `json:"event_fields,omitempty"`
	EventFormat string       `json:"event_format,omitempty"`
	Presence    *eventFilter `json:"presence,omitempty"`
	AccountData *eventFilter `json:"account_data,omitempty"`
	Room        *roomFilter  `json:"room,omitempty"`
}

// eventFilter selects events by type and sender and bounds their number.
type eventFilter struct {
	Limit      *int      `json:"limit,omitempty"`
	Types      *[]string `json:"types,omitempty"`
	NotTypes   []string  `json:"not_types,omitempty"`
	Senders    *[]string `json:"senders,omitempty"`
	NotSenders []string  `json:"not_senders,omitempty"`
}

// roomFilter selects rooms and, per section, their events.
type roomFilter struct {
	Rooms        *[]string        `json:"rooms,omitempty"`
	NotRooms     []string         `json:"not_rooms,omitempty"`
	IncludeLeave bool             `json:"include_leave,omitempty"`
	Timeline     *roomEventFilter `json:"timeline,omitempty"`
	State        *roomEventFilter `json:"state,omitempty"`
	Ephemeral    *roomEventFilter `json:"ephemeral,omitempty"`
	AccountData  *roomEventFilter `json:"account_data,omitempty"`
}

// roomEventFilter is an eventFilter for room events.
type roomEventFilter struct {
	eventFilter
	Rooms                     *[]string `json:"rooms,omitempty"`
	NotRooms                  []string  `json:"not_rooms,omitempty"`
	ContainsURL               *bool     `json:"contains_url,omitempty"`
	LazyLoadMembers           bool      `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers   bool      `json:"include_redundant_members,omitempty"`
	UnreadThreadNotifications bool      `json:"unread_thread_notifications,omitempty"`
}

// parseFilter decodes and checks a filter. Unknown keys are kept by uploads (they store
// the client's own JSON) and ignored here, as the spec's filters grow.
func parseFilter(raw []byte) (*filter, error) {
	var f filter
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "the filter does not match the filter format: %v", err)
	}
	if err := f.validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

// parseRoomEventFilter decodes and checks the room event filter of /messages.
func parseRoomEventFilter(raw []byte) (*roomEventFilter, error) {
	if err := matrix.CheckJSON(raw); err != nil {
		return nil, err
	}
	var rf roomEventFilter
	if err := json.Unmarshal(raw, &rf); err != nil {
		return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "the filter does not match the filter format: %v", err)
	}
	if err := rf.validate(); err != nil {
		return nil, err
	}
	return &rf, nil
}

func (rf *roomEventFilter) validate() error {
	if err := rf.eventFilter.validate(); err != nil {
		return err
	}
	return checkRoomIDs(rf.Rooms, rf.NotRooms)
}

func invalidFilter(format string, args ...any) error {
	return matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "invalid filter: "+format, args...)
}

// validate refuses what no filter can mean: an unknown event format, a negative limit,
// or a room or sender that is not an ID. Refusing beats ignoring: a client whose filter
// is silently dropped gets far more than it asked for.
func (f *filter) validate() error {
	if f.EventFormat != "" && f.EventFormat != "client" && f.EventFormat != "federation" {
		return matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, `event_format must be "client" or "federation"`)
	}
	for _, ef := range []*eventFilter{f.Presence, f.AccountData} {
		if err := ef.validate(); err != nil {
			return err
		}
	}
	if f.Room == nil {
		return nil
	}
	if err := checkRoomIDs(f.Room.Rooms, f.Room.NotRooms); err != nil {
		return err
	}
	for _, rf := range []*roomEventFilter{f.Room.Timeline, f.Room.State, f.Room.Ephemeral, f.Room.AccountData} {
		if rf == nil {
			continue
		}
		if err := rf.validate(); err != nil {
			return err
		}
	}
	return nil
}

func (ef *eventFilter) validate() error {
	if ef == nil {
		return nil
	}
	if ef.Limit != nil && *ef.Limit < 0 {
		return invalidFilter("limit must not be negative")
	}
	for _, list := range [][]string{deref(ef.Senders), ef.NotSenders} {
		for _, u := range list {
			if !validUserID(u) {
				return invalidFilter("%q is not a user ID", u)
			}
		}
	}
	return nil
}

func checkRoomIDs(rooms *[]string, notRooms []string) error {
	for _, list := range [][]string{deref(rooms), notRooms} {
		for _, r := range list {
			if !strings.HasPrefix(r, "!") || !strings.Contains(r, ":") {
				return invalidFilter("%q is not a room ID", r)
			}
		}
	}
	return nil
}

func deref(p *[]string) []string {
	if p == nil {
		return nil
	}
	return *p
}

// matchType reports whether typ matches pattern, where '*' matches any run of
// characters. It backtracks only to the last star, so a pattern of many stars costs
// O(len(pattern) * len(typ)) at worst, never exponential time.
func matchType(pattern, typ string) bool {
	p, t := 0, 0
	star, mark := -1, 0
	for t < len(typ) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, t
			p++
		case p < len(pattern) && pattern[p] == typ[t]:
			p++
			t++
		case star >= 0:
			// Let the last star take one more byte and try again after it.
			mark++
			p, t = star+1, mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

func matchesAny(patterns []string, typ string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return matchType(p, typ) })
}

// allows reports whether an event of typ sent by sender passes the filter; sender is ""
// for events that have none (ephemeral ones), which sender lists do not apply to.
func (ef *eventFilter) allows(typ, sender string) bool {
	if ef == nil {
		return true
	}
	if ef.Types != nil && !matchesAny(*ef.Types, typ) {
		return false
	}
	if matchesAny(ef.NotTypes, typ) {
		return false
	}
	if sender == "" {
		return true
	}
	if ef.Senders != nil && !slices.Contains(*ef.Senders, sender) {
		return false
	}
	return !slices.Contains(ef.NotSenders, sender)
}

// allowsRoom reports whether room's events pass the filter's room lists.
func (rf *roomEventFilter) allowsRoom(room string) bool {
	if rf == nil {
		return true
	}
	return (rf.Rooms == nil || slices.Contains(*rf.Rooms, room)) && !slices.Contains(rf.NotRooms, room)
}

// allowsEvent applies every condition of the filter to a stored event.
func (rf *roomEventFilter) allowsEvent(ev *persist.StoredEvent) bool {
	if rf == nil {
		return true
	}
	if !rf.allowsRoom(ev.RoomID) || !rf.eventFilter.allows(ev.Type, ev.Sender) {
		return false
	}
	return rf.ContainsURL == nil || hasURL(ev.JSON) == *rf.ContainsURL
}

// hasURL reports whether an event's content has a string "url", which is what
// contains_url asks about.
func hasURL(js []byte) bool {
	var ev struct {
		Content struct {
			URL json.RawMessage `json:"url"`
		} `json:"content"`
	}
	return json.Unmarshal(js, &ev) == nil && len(ev.Content.URL) > 0 && ev.Content.URL[0] == '"'
}

// query turns the filter into the event conditions Postgres applies, so a limit counts
// only the events that pass.
func (rf *roomEventFilter) query() persist.EventFilter {
	if rf == nil {
		return persist.EventFilter{}
	}
	q := persist.EventFilter{NotTypes: rf.NotTypes, NotSenders: rf.NotSenders, NotRooms: rf.NotRooms, ContainsURL: rf.ContainsURL}
	q.Types, q.Senders, q.Rooms = rf.Types, rf.Senders, rf.Rooms
	return q
}

// limitOr returns the filter's limit clamped to [0, hi], or def when it has none.
func (ef *eventFilter) limitOr(def, hi int) int {
	if ef == nil || ef.Limit == nil {
		return def
	}
	return min(max(*ef.Limit, 0), hi)
}

// lazyMembers reports whether the state of rooms carries only the members the
// timeline needs.
func (f *filter) lazyMembers() bool {
	return f.Room != nil && f.Room.State != nil && f.Room.State.LazyLoadMembers
}

func (f *filter) timeline() *roomEventFilter {
	if f.Room == nil {
		return nil
	}
	return f.Room.Timeline
}

func (f *filter) state() *roomEventFilter {
	if f.Room == nil {
		return nil
	}
	return f.Room.State
}

// allowsRoom reports whether room is in the rooms the filter lets through at all.
func (f *filter) allowsRoom(room string) bool {
	if f.Room == nil {
		return true
	}
	if f.Room.Rooms != nil && !slices.Contains(*f.Room.Rooms, room) {
		return false
	}
	return !slices.Contains(f.Room.NotRooms, room)
}

func (f *filter) includeLeave() bool { return f.Room != nil && f.Room.IncludeLeave }

// resolveFilter reads the filter parameter of /sync or /messages: inline JSON or the id
// of a stored filter. No parameter is the empty filter. Filters never change once
// uploaded, so each parsed one is remembered: a client syncing with the same filter
// costs neither a query nor a parse per request.
func (s *Server) resolveFilter(ctx context.Context, param string, dev Device) (*filter, error) {
	if param == "" {
		return &filter{}, nil
	}
	key := param
	if !strings.HasPrefix(param, "{") {
		key = dev.UserID + " " + param // ids are the user's own
	}
	if f, ok := s.filters.get(key); ok {
		return f, nil
	}
	f, err := s.loadFilter(ctx, param, dev)
	if err == nil && len(param) <= maxCachedFilter {
		s.filters.put(key, f)
	}
	return f, err
}

// Bounds of the filters remembered: their number, and the length of an inline one
// (those of real clients are a few hundred bytes), so at most 40 MB.
const (
	maxCachedFilters = 10_000
	maxCachedFilter  = 4096
)

func (s *Server) loadFilter(ctx context.Context, param string, dev Device) (*filter, error) {
	if strings.HasPrefix(param, "{") {
		if err := matrix.CheckJSON([]byte(param)); err != nil {
			return nil, err
		}
		return parseFilter([]byte(param))
	}
	id, err := strconv.ParseInt(param, 10, 64)
	if err != nil {
		return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "filter is neither JSON nor a filter id")
	}
	raw, err := s.DB.GetFilter(ctx, dev.UserID, id)
	if errors.Is(err, persist.ErrNotFound) {
		return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "No such filter")
	}
	if err != nil {
		return nil, err
	}
	return parseFilter(raw)
}
