package client

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
)

func (s *Server) registerSpaces(r router) {
	r.handle("GET", "/rooms/{room}/hierarchy", []string{"v1"}, s.authed(s.hierarchy))
}

const (
	// hierarchyLimit is the page size when the client names none, and the largest.
	hierarchyLimit = 50
	// hierarchyWalk bounds the rooms one request visits, pages before it included.
	hierarchyWalk = 2000
	// maxChildOrder is the longest order string of an m.space.child that sorts by it.
	maxChildOrder = 50
)

// hierarchyRoom is a room of a space's hierarchy: its directory entry and, for a
// space, its children's m.space.child events, stripped.
type hierarchyRoom struct {
	persist.PublicRoom
	ChildrenState []json.RawMessage `json:"children_state"`
}

// strippedChild is an m.space.child event as the hierarchy shows it.
type strippedChild struct {
	Type           string          `json:"type"`
	StateKey       string          `json:"state_key"`
	Content        json.RawMessage `json:"content"`
	Sender         string          `json:"sender"`
	OriginServerTS int64           `json:"origin_server_ts"`
}

// hierarchy walks a space's children depth first, as the spec orders them, and pages
// through the rooms the user may see: joined or invited ones, public, knockable or
// world-readable ones, and restricted ones they may join. Children of rooms they may
// not see are not visited, nor those of rooms that are not spaces. Rooms of other
// servers are not visited (this server does not federate yet).
func (s *Server) hierarchy(w http.ResponseWriter, r *http.Request, dev Device) {
	room, err := roomParam(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	q := r.URL.Query()
	limit, err := positiveParam(q.Get("limit"), "limit", hierarchyLimit)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	limit = min(limit, hierarchyLimit)
	maxDepth := -1
	if v := q.Get("max_depth"); v != "" {
		if maxDepth, err = strconv.Atoi(v); err != nil || maxDepth < 0 {
			matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "max_depth must be a non-negative integer"))
			return
		}
	}
	walk := spaceWalk{s: s, user: dev.UserID, suggestedOnly: q.Get("suggested_only") == "true", maxDepth: maxDepth}
	offset := 0
	if from := q.Get("from"); from != "" {
		var ok bool
		if offset, ok = parseOffsetToken(from, walk.tokenPrefix(room)); !ok {
			matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam,
				"from is not a token of this hierarchy with these suggested_only and max_depth"))
			return
		}
	}
	rooms, more, err := walk.run(r.Context(), room, offset+limit)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	res := struct {
		Rooms     []hierarchyRoom `json:"rooms"`
		NextBatch string          `json:"next_batch,omitempty"`
	}{Rooms: []hierarchyRoom{}}
	if offset < len(rooms) {
		res.Rooms = rooms[offset:]
	}
	if more {
		res.NextBatch = walk.tokenPrefix(room) + strconv.Itoa(offset+limit)
	}
	matrix.WriteJSON(w, http.StatusOK, res)
}

// positiveParam parses an optional query parameter that must be a positive integer.
func positiveParam(v, name string, def int) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "%s must be a positive integer", name)
	}
	return n, nil
}

// spaceWalk is one request's walk of a hierarchy.
type spaceWalk struct {
	s             *Server
	user          string
	suggestedOnly bool
	maxDepth      int // -1: unbounded
	// member holds the rooms the user is joined to (true) or invited to (false).
	member map[string]bool
	// entries caches the directory entries loaded so far; nil for unknown rooms.
	entries map[string]*persist.PublicRoom
}

// tokenPrefix starts the walk's pagination tokens: a token is only valid for the
// same root and parameters.
func (sw *spaceWalk) tokenPrefix(root string) string {
	h := sha256.Sum256([]byte(root + "\x00" + strconv.FormatBool(sw.suggestedOnly) + "\x00" + strconv.Itoa(sw.maxDepth)))
	return "h" + hex.EncodeToString(h[:6]) + "_"
}

// run returns the first want rooms of the walk from root, and whether there are more.
// A root the user may not see is refused.
func (sw *spaceWalk) run(ctx context.Context, root string, want int) ([]hierarchyRoom, bool, error) {
	joined, err := sw.s.DB.RoomsOfUser(ctx, sw.user, "join")
	if err != nil {
		return nil, false, err
	}
	invited, err := sw.s.DB.RoomsOfUser(ctx, sw.user, "invite")
	if err != nil {
		return nil, false, err
	}
	sw.member = map[string]bool{}
	for _, r := range invited {
		sw.member[r] = false
	}
	for _, r := range joined {
		sw.member[r] = true
	}
	sw.entries = map[string]*persist.PublicRoom{}
	type frame struct {
		room  string
		depth int
	}
	stack := []frame{{root, 0}}
	seen := map[string]bool{}
	var out []hierarchyRoom
	for visited := 0; len(stack) > 0 && visited < hierarchyWalk; visited++ {
		f := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[f.room] {
			continue
		}
		seen[f.room] = true
		if err := sw.load(ctx, []string{f.room}); err != nil {
			return nil, false, err
		}
		entry := sw.entries[f.room]
		visible, err := sw.visible(ctx, entry)
		if err != nil {
			return nil, false, err
		}
		if !visible {
			if f.room == root {
				return nil, false, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "You may not see the hierarchy of this room")
			}
			continue
		}
		if len(out) == want {
			return out, true, nil
		}
		room := hierarchyRoom{PublicRoom: *entry, ChildrenState: []json.RawMessage{}}
		if entry.RoomType != nil && *entry.RoomType == "m.space" {
			children, err := sw.children(ctx, f.room)
			if err != nil {
				return nil, false, err
			}
			room.ChildrenState = children.stripped
			if sw.maxDepth < 0 || f.depth < sw.maxDepth {
				if err := sw.load(ctx, children.rooms); err != nil {
					return nil, false, err
				}
				for _, c := range slices.Backward(children.rooms) {
					stack = append(stack, frame{c, f.depth + 1})
				}
			}
		}
		out = append(out, room)
	}
	return out, false, nil
}

// load reads the directory entries of those of rooms not loaded yet.
func (sw *spaceWalk) load(ctx context.Context, rooms []string) error {
	var missing []string
	for _, r := range rooms {
		if _, ok := sw.entries[r]; !ok {
			missing = append(missing, r)
			sw.entries[r] = nil
		}
	}
	if len(missing) == 0 {
		return nil
	}
	entries, err := sw.s.DB.DirectoryEntries(ctx, missing)
	for i := range entries {
		sw.entries[entries[i].RoomID] = &entries[i]
	}
	return err
}

// visible reports whether the user may see a room in a hierarchy; an unknown room
// (nil) is not visible.
func (sw *spaceWalk) visible(ctx context.Context, entry *persist.PublicRoom) (bool, error) {
	if entry == nil {
		return false, nil
	}
	if _, ok := sw.member[entry.RoomID]; ok || entry.WorldReadable {
		return true, nil
	}
	rule := ""
	if entry.JoinRule != nil {
		rule = *entry.JoinRule
	}
	switch rule {
	case "public", "knock", "knock_restricted":
		return true, nil
	case "restricted":
		rules, err := sw.s.DB.CurrentJoinRules(ctx, entry.RoomID)
		if err != nil {
			return false, err
		}
		return slices.ContainsFunc(rules.AllowedRooms(), func(r string) bool { return sw.member[r] }), nil
	}
	return false, nil
}

// spaceChildren are a space's children in the spec's order, and their events.
type spaceChildren struct {
	rooms    []string
	stripped []json.RawMessage
}

// children reads a space's m.space.child events with a list of servers in via (the
// others do not link a child), only the suggested ones when the walk asks so, ordered
// by their order string, then by age, then by room ID.
func (sw *spaceWalk) children(ctx context.Context, space string) (spaceChildren, error) {
	byRoom, err := sw.s.DB.SpaceChildren(ctx, []string{space})
	if err != nil {
		return spaceChildren{}, err
	}
	type child struct {
		ev      strippedChild
		order   string
		ordered bool
	}
	var kids []child
	for _, ev := range byRoom[space] {
		var full struct {
			Content        json.RawMessage `json:"content"`
			OriginServerTS int64           `json:"origin_server_ts"`
		}
		var content struct {
			Via       []string `json:"via"`
			Order     any      `json:"order"`
			Suggested bool     `json:"suggested"`
		}
		if ev.StateKey == nil || json.Unmarshal(ev.JSON, &full) != nil || json.Unmarshal(full.Content, &content) != nil {
			continue
		}
		if len(content.Via) == 0 || sw.suggestedOnly && !content.Suggested {
			continue
		}
		order, ordered := content.Order.(string)
		ordered = ordered && validChildOrder(order)
		kids = append(kids, child{ordered: ordered, order: order, ev: strippedChild{Type: ev.Type, StateKey: *ev.StateKey,
			Content: full.Content, Sender: ev.Sender, OriginServerTS: full.OriginServerTS}})
	}
	slices.SortStableFunc(kids, func(a, b child) int {
		switch {
		case a.ordered != b.ordered:
			if a.ordered {
				return -1
			}
			return 1
		case a.ordered && a.order != b.order:
			return strings.Compare(a.order, b.order)
		}
		return cmp.Or(cmp.Compare(a.ev.OriginServerTS, b.ev.OriginServerTS), strings.Compare(a.ev.StateKey, b.ev.StateKey))
	})
	out := spaceChildren{stripped: []json.RawMessage{}}
	for _, k := range kids {
		raw, err := matrix.Marshal(k.ev)
		if err != nil {
			return spaceChildren{}, err
		}
		out.rooms = append(out.rooms, k.ev.StateKey)
		out.stripped = append(out.stripped, raw)
	}
	return out, nil
}

// validChildOrder reports whether an m.space.child's order sorts it: at most 50
// characters, each printable ASCII.
func validChildOrder(s string) bool {
	if s == "" || len(s) > maxChildOrder {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
