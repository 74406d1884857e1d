package client

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist/userdir"
	"github.com/ganglionhq/ganglion/processors/appservice"
)

// userDirStore searches the user directory.
type userDirStore interface {
	Search(ctx context.Context, q userdir.Query) ([]userdir.Result, bool, error)
}

// UserDirectorySettings are the user_directory section: with Enabled false searches
// find nobody; SearchAllUsers finds every user in the directory, not only those who
// share a room with the searcher or are in public rooms.
type UserDirectorySettings struct {
	Enabled, SearchAllUsers bool
}

// Bounds of a directory search, as Synapse's: 10 results unless asked, at most 50.
const (
	defaultDirectoryLimit = 10
	maxDirectoryLimit     = 50
	maxDirectoryBody      = 16 << 10
)

func (s *Server) registerUserDirectory(r router) {
	r.handle("POST", "/user_directory/search", modernVersions, s.authed(s.searchUserDirectory))
}

type userDirectoryRequest struct {
	SearchTerm *string          `json:"search_term"`
	Limit      *json.RawMessage `json:"limit"`
}

type userDirectoryResponse struct {
	Limited bool             `json:"limited"`
	Results []userdir.Result `json:"results"`
}

// searchUserDirectory finds users by their user ID and display name among those the
// searcher shares a room with and those in public rooms (all users with
// user_directory.search_all_users), from the directory its keeper projects.
func (s *Server) searchUserDirectory(w http.ResponseWriter, r *http.Request, dev Device) {
	var req userDirectoryRequest
	if err := matrix.DecodeBody(r, maxDirectoryBody, &req); err != nil {
		s.writeErr(w, "user directory", err)
		return
	}
	if req.SearchTerm == nil {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeMissingParam, "search_term is required"))
		return
	}
	limit := defaultDirectoryLimit
	if req.Limit != nil {
		if err := json.Unmarshal(*req.Limit, &limit); err != nil || limit < 0 {
			matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "limit must be a non-negative integer"))
			return
		}
		limit = min(limit, maxDirectoryLimit)
	}
	if !s.UserDirectory.Enabled || limit == 0 {
		matrix.WriteJSON(w, http.StatusOK, userDirectoryResponse{Results: []userdir.Result{}})
		return
	}
	// Application services' users are left out, as Synapse leaves them out: the
	// search asks for enough more to make up for those it drops.
	services := s.AppServices.All()
	ask := limit
	if len(services) > 0 {
		ask = limit + appServiceSlack
	}
	found, limited, err := s.userDir.Search(r.Context(), userdir.Query{Searcher: dev.UserID, All: s.UserDirectory.SearchAllUsers,
		Term: *req.SearchTerm, Limit: ask, ServerName: s.ServerName})
	if err != nil {
		s.writeErr(w, "user directory", err)
		return
	}
	found = slices.DeleteFunc(found, func(r userdir.Result) bool {
		return slices.ContainsFunc(services, func(svc *appservice.Service) bool { return svc.OwnsUser(r.UserID) })
	})
	if len(found) > limit {
		found, limited = found[:limit], true
	}
	matrix.WriteJSON(w, http.StatusOK, userDirectoryResponse{Limited: limited, Results: found})
}

// appServiceSlack is how many more results a search asks for when application
// services' users may be among them and dropped.
const appServiceSlack = 20
