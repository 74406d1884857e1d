package client

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// Reports of rooms and events by their users, and the admin API that lists them.

const (
	maxReportBody   = 64 << 10
	maxReportReason = 16 << 10
	// The bounds of an event report's score (deprecated in the spec, still accepted).
	minReportScore = -100
	maxReportScore = 0
)

func (s *Server) registerReports(r router) {
	r.handle("POST", "/rooms/{room}/report/{event}", allVersions, s.authed(s.reportEvent))
	r.handle("POST", "/rooms/{room}/report", []string{"v3"}, s.authed(s.reportRoom))
	r.raw("GET", adminPrefix+"/v1/event_reports", s.authed(s.asAdmin(s.eventReports)))
	r.raw("GET", adminPrefix+"/v1/event_reports/{id}", s.authed(s.asAdmin(s.eventReport)))
}

// reportBody is the body of a report: a room report needs a reason, only an event
// report has a score.
type reportBody struct {
	Reason *string          `json:"reason"`
	Score  *json.RawMessage `json:"score"`
}

// readReport reads a report's body and its room.
func readReport(r *http.Request) (userstreams.Report, string, error) {
	var body reportBody
	var rep userstreams.Report
	room, err := roomParam(r)
	if err != nil {
		return rep, "", err
	}
	if err := matrix.DecodeBody(r, maxReportBody, &body); err != nil {
		return rep, "", err
	}
	if body.Reason != nil {
		if !schemas.StorableText(*body.Reason) || len(*body.Reason) > maxReportReason {
			return rep, "", matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "reason must be text of at most %d bytes", maxReportReason)
		}
		rep.Reason = *body.Reason
	}
	if body.Score != nil {
		var score int
		if json.Unmarshal(*body.Score, &score) != nil || score < minReportScore || score > maxReportScore {
			return rep, "", matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "score must be an integer in [-100, 0]")
		}
		rep.Score = &score
	}
	return rep, room, nil
}

// reportEvent records a report of an event the user may see; one they may not, or
// that does not exist, is 404 whichever it is, as Synapse answers.
func (s *Server) reportEvent(w http.ResponseWriter, r *http.Request, dev Device) {
	rep, room, err := readReport(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	notFound := matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "Unable to report event: it does not exist or you aren't able to see it.")
	_, bound, err := s.readBoundOf(r.Context(), room, dev)
	if hasCode(err, matrix.CodeForbidden) {
		err = notFound
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	ev, err := s.DB.GetEvent(r.Context(), r.PathValue("event"))
	if errors.Is(err, persist.ErrNotFound) || err == nil && (ev.RoomID != room || !bound.allows(persist.Pos{Seq: ev.Seq, Idx: ev.Idx})) {
		err = notFound
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	rep.Room, rep.EventID = room, ev.EventID
	s.report(w, r, dev, rep)
}

// reportRoom records a report of a room this server knows; the reporter need not be
// in it.
func (s *Server) reportRoom(w http.ResponseWriter, r *http.Request, dev Device) {
	rep, room, err := readReport(r)
	if err == nil && rep.Reason == "" {
		err = matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "a room report needs a reason")
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	exists, err := s.DB.RoomExists(r.Context(), room)
	if err == nil && !exists {
		err = matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "Room does not exist")
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	rep.Room, rep.Score = room, nil
	s.report(w, r, dev, rep)
}

func (s *Server) report(w http.ResponseWriter, r *http.Request, dev Device, rep userstreams.Report) {
	if _, err := s.writeAccounts(r.Context(), dev, dev.UserID, userstreams.OpReport, rep); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}

// eventReports lists event reports, newest first unless dir=f, filtered by room_id and
// by user_id (a substring of the reporter's ID), as Synapse's admin API does.
func (s *Server) eventReports(w http.ResponseWriter, r *http.Request, _ Device) {
	offset, limit, err := adminPage(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir != "" && dir != "b" && dir != "f" {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "dir must be b or f"))
		return
	}
	reports, total, err := s.DB.EventReports(r.Context(), offset, limit,
		persist.EventReportFilter{RoomID: q.Get("room_id"), UserID: q.Get("user_id"), Oldest: dir == "f"})
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if reports == nil {
		reports = []persist.EventReport{}
	}
	resp := map[string]any{"event_reports": reports, "total": total}
	if offset+len(reports) < total {
		resp["next_token"] = offset + len(reports)
	}
	matrix.WriteJSON(w, http.StatusOK, resp)
}

func (s *Server) eventReport(w http.ResponseWriter, r *http.Request, _ Device) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 0 {
		matrix.WriteError(w, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "the report ID must be a non-negative integer"))
		return
	}
	rep, err := s.DB.GetEventReport(r.Context(), id)
	if errors.Is(err, persist.ErrNotFound) {
		err = matrix.Errorf(http.StatusNotFound, matrix.CodeNotFound, "Event report not found")
	}
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, rep)
}
