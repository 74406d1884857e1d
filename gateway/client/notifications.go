package client

import (
	"encoding/json"
	"net/http"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
)

func (s *Server) registerNotifications(r router) {
	r.handle("GET", "/notifications", modernVersions, s.authed(s.getNotifications))
}

type notificationsResponse struct {
	NextToken     string             `json:"next_token,omitempty"`
	Notifications []notificationView `json:"notifications"`
}

type notificationView struct {
	Actions json.RawMessage `json:"actions"`
	Event   json.RawMessage `json:"event"`
	Read    bool            `json:"read"`
	RoomID  string          `json:"room_id"`
	TS      int64           `json:"ts"`
}

// getNotifications lists the user's notifications newest first (GET /notifications:
// from a next_token, limit, only=highlight). next_token is there when the page is
// full, so more may follow.
func (s *Server) getNotifications(w http.ResponseWriter, r *http.Request, dev Device) {
	q := r.URL.Query()
	limit, err := intParam(q.Get("limit"), 50, 1, 1000)
	if err != nil {
		s.writeErr(w, "notifications", err)
		return
	}
	var before persist.Pos
	if from := q.Get("from"); from != "" {
		if before, err = parsePageToken(from); err != nil {
			s.writeErr(w, "notifications", matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "invalid from token"))
			return
		}
	}
	list, err := s.notifications.List(r.Context(), dev.UserID, before, limit, q.Get("only") == "highlight")
	if err != nil {
		s.writeErr(w, "notifications", err)
		return
	}
	ids := make([]string, len(list))
	for i, n := range list {
		ids[i] = n.EventID
	}
	evs, err := s.DB.EventsByID(r.Context(), ids)
	if err != nil {
		s.writeErr(w, "notifications", err)
		return
	}
	res := notificationsResponse{Notifications: make([]notificationView, 0, len(list))}
	for _, n := range list {
		ev, ok := evs[n.EventID]
		if !ok {
			continue
		}
		res.Notifications = append(res.Notifications, notificationView{Actions: n.Actions, Event: clientEvent(&ev, dev),
			Read: n.Read, RoomID: n.RoomID, TS: n.TS})
	}
	if len(list) == limit {
		res.NextToken = formatPageToken(list[len(list)-1].Pos)
	}
	matrix.WriteJSON(w, http.StatusOK, res)
}
