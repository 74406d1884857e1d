package client

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/processors/userstreams"
)

// The room directory's list: which rooms GET /publicRooms shows, kept through the
// accounts stream keyed by room.

func (s *Server) registerRoomDirectory(r router) {
	r.handle("GET", "/publicRooms", allVersions, s.authed(s.publicRooms))
	r.handle("POST", "/publicRooms", allVersions, s.authed(s.publicRooms))
	r.handle("GET", "/directory/list/room/{room}", allVersions, s.roomVisibility)
	r.handle("PUT", "/directory/list/room/{room}", allVersions, s.authed(s.setRoomVisibility))
}

type visibilityBody struct {
	Visibility string `json:"visibility"`
}

// roomVisibility tells whether a room is in the list; it needs no access token.
func (s *Server) roomVisibility(w http.ResponseWriter, r *http.Request) {
	room, err := roomParam(r)
	if err != nil {
		matrix.WriteError(w, err)
		return
	}
	listed, err := s.DB.RoomListed(r.Context(), room)
	if errors.Is(err, persist.ErrNotFound) {
		matrix.WriteError(w, matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "Unknown room"))
		return
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	v := "private"
	if listed {
		v = "public"
	}
	matrix.WriteJSON(w, http.StatusOK, visibilityBody{Visibility: v})
}

// setRoomVisibility puts a room in the list or takes it out, for a member whose power
// level lets them change the room's canonical alias, as Synapse decides.
func (s *Server) setRoomVisibility(w http.ResponseWriter, r *http.Request, dev Device) {
	room, err := roomParam(r)
	if err != nil {
		matrix.WriteError(w, err)
		return
	}
	var body visibilityBody
	if err := matrix.DecodeBody(r, maxDirectoryBody, &body); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if body.Visibility != "public" && body.Visibility != "private" {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "visibility must be public or private"))
		return
	}
	if err := s.requireJoined(r.Context(), room, dev.UserID); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	state, err := s.aliasStateOf(r.Context(), room)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if !state.mayChangeCanonicalAlias(dev.UserID) {
		matrix.WriteError(w, matrix.Errorf(http.StatusForbidden, matrix.CodeForbidden, "You may not change the room directory's list for this room"))
		return
	}
	if _, err := s.writeAccounts(r.Context(), dev, room, userstreams.OpListRoom,
		userstreams.ListRoom{Room: room, Public: body.Visibility == "public"}); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}

type publicRoomsRequest struct {
	Limit  *int   `json:"limit"`
	Since  string `json:"since"`
	Server string `json:"server"`
	Filter *struct {
		GenericSearchTerm string    `json:"generic_search_term"`
		RoomTypes         []*string `json:"room_types"`
	} `json:"filter"`
	IncludeAllNetworks   bool   `json:"include_all_networks"`
	ThirdPartyInstanceID string `json:"third_party_instance_id"`
}

type publicRoomsResponse struct {
	Chunk                  []persist.PublicRoom `json:"chunk"`
	NextBatch              string               `json:"next_batch,omitempty"`
	PrevBatch              string               `json:"prev_batch,omitempty"`
	TotalRoomCountEstimate int                  `json:"total_room_count_estimate"`
}

// publicRooms pages through the list, most joined members first (then by room ID), with
// Synapse's filters: a search term matched in the name, topic and canonical alias, and
// room types (null for rooms without one). since is an offset token ("p<offset>").
func (s *Server) publicRooms(w http.ResponseWriter, r *http.Request, _ Device) {
	var req publicRoomsRequest
	if r.Method == http.MethodPost {
		if err := matrix.DecodeBody(r, maxDirectoryBody, &req); err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
	} else {
		q := r.URL.Query()
		req.Since, req.Server = q.Get("since"), q.Get("server")
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "limit must be an integer"))
				return
			}
			req.Limit = &n
		}
	}
	if req.Server != "" && req.Server != s.ServerName {
		matrix.WriteError(w, matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "Other servers' room directories need federation, which is not built"))
		return
	}
	offset := 0
	if req.Since != "" {
		n, ok := parseOffsetToken(req.Since, "p")
		if !ok {
			matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "Invalid since token"))
			return
		}
		offset = n
	}
	rooms, err := s.DB.PublicRooms(r.Context())
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if req.Filter != nil {
		term := strings.ToLower(req.Filter.GenericSearchTerm)
		rooms = slices.DeleteFunc(rooms, func(p persist.PublicRoom) bool {
			return !matchesTerm(p, term) || req.Filter.RoomTypes != nil && !slices.ContainsFunc(req.Filter.RoomTypes, func(t *string) bool {
				return (t == nil) == (p.RoomType == nil) && (t == nil || *t == *p.RoomType)
			})
		})
	}
	slices.SortFunc(rooms, func(a, b persist.PublicRoom) int {
		if a.NumJoinedMembers != b.NumJoinedMembers {
			return b.NumJoinedMembers - a.NumJoinedMembers
		}
		return strings.Compare(a.RoomID, b.RoomID)
	})
	resp := publicRoomsResponse{TotalRoomCountEstimate: len(rooms), Chunk: []persist.PublicRoom{}}
	end := len(rooms)
	if req.Limit != nil && *req.Limit >= 0 {
		end = min(end, offset+*req.Limit)
	}
	if offset < end {
		resp.Chunk = rooms[offset:end]
	}
	if end < len(rooms) {
		resp.NextBatch = "p" + strconv.Itoa(end)
	}
	if offset > 0 && req.Limit != nil {
		resp.PrevBatch = "p" + strconv.Itoa(max(0, offset-*req.Limit))
	}
	matrix.WriteJSON(w, http.StatusOK, resp)
}

// matchesTerm reports whether a lowercased search term is in the room's name, topic or
// canonical alias (every room matches an empty term).
func matchesTerm(p persist.PublicRoom, term string) bool {
	if term == "" {
		return true
	}
	for _, v := range []*string{p.Name, p.Topic, p.CanonicalAlias} {
		if v != nil && strings.Contains(strings.ToLower(*v), term) {
			return true
		}
	}
	return false
}

// parseOffsetToken reads an offset token: prefix then a non-negative number.
func parseOffsetToken(tok, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(tok, prefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	return n, err == nil && n >= 0
}
