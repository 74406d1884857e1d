package client

import (
	"context"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist/receipts"
)

// receiptsStore reads the receipts projection.
type receiptsStore interface {
	Changed(ctx context.Context, viewer string, rooms []string, since uint64, fresh []string, to uint64) ([]receipts.Receipt, error)
}

// receiptsStream is the receipts stream's part of /sync: one m.receipt event in the
// ephemeral events of each joined room with receipts changed after the token, all of
// a room's current receipts when its ephemeral events start from scratch (an initial
// sync, a new join). Private receipts reach their owner only.
type receiptsStream struct {
	feedStream
	store receiptsStore
}

// receiptData is one user's receipt as m.receipt carries it.
type receiptData struct {
	TS     int64  `json:"ts"`
	Thread string `json:"thread_id,omitempty"`
}

func (rs *receiptsStream) fill(ctx context.Context, sc *syncCtx, since, to uint64) error {
	var rooms, fresh []string
	for _, room := range sc.joined {
		if !sc.req.incremental || sc.newlyJoined[room] {
			fresh = append(fresh, room)
		} else {
			rooms = append(rooms, room)
		}
	}
	if !rs.changed(sc, since) {
		rooms = nil
	}
	if len(rooms) == 0 && len(fresh) == 0 {
		return nil
	}
	list, err := rs.store.Changed(ctx, sc.dev.UserID, rooms, since, fresh, to)
	if err != nil {
		return err
	}
	// content[room][event][type][user]
	content := map[string]map[string]map[string]map[string]receiptData{}
	var order []string
	for _, r := range list {
		byEvent := content[r.Room]
		if byEvent == nil {
			byEvent = map[string]map[string]map[string]receiptData{}
			content[r.Room] = byEvent
			order = append(order, r.Room)
		}
		byType := byEvent[r.EventID]
		if byType == nil {
			byType = map[string]map[string]receiptData{}
			byEvent[r.EventID] = byType
		}
		if byType[r.Type] == nil {
			byType[r.Type] = map[string]receiptData{}
		}
		byType[r.Type][r.User] = receiptData{TS: r.TS, Thread: r.Thread}
	}
	for _, room := range order {
		ev, err := matrix.Marshal(struct {
			Type    string `json:"type"`
			Content any    `json:"content"`
		}{"m.receipt", content[room]})
		if err != nil {
			return err
		}
		jr := sc.joinedRoom(room)
		jr.Ephemeral.Events = append(jr.Ephemeral.Events, ev)
	}
	return nil
}
