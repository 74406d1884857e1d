package client

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist/receipts"
	"github.com/ganglionhq/ganglion/schemas"
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
	store  receiptsStore
	recent *RecentReceipts
}

// defaultRecentReceipts is how many of the newest receipts each process keeps.
const defaultRecentReceipts = 8192

// RecentReceipts holds the newest records of the receipts stream, as the receipts feed
// makes them visible, so an incremental /sync finds the receipts changed in its rooms
// without Postgres: a receipt reaches every member's long-poll of a room at once, and
// fifty members asking Postgres the same question is what made its fan-out slow. A
// token older than what it holds is answered from Postgres.
type RecentReceipts struct {
	mu   sync.Mutex
	ring []recentReceipt
	head int
	// floor: every record with a position above it is in ring; valid once set.
	floor uint64
	set   bool
}

type recentReceipt struct {
	seq uint64
	r   *schemas.ReceiptRecord
}

// NewRecentReceipts keeps the newest n receipts.
func NewRecentReceipts(n int) *RecentReceipts {
	return &RecentReceipts{ring: make([]recentReceipt, 0, n)}
}

// Observe takes one record of the receipts stream, in order.
func (rr *RecentReceipts) Observe(seq uint64, _ nats.Header, data []byte) {
	r, err := schemas.DecodeReceipt(data)
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if !rr.set {
		// The feed hands over every record after its start: none before this one
		// is missing above seq-1.
		rr.floor, rr.set = seq-1, true
	}
	if err != nil {
		return // not a receipt: nothing anyone could be shown
	}
	if len(rr.ring) < cap(rr.ring) {
		rr.ring = append(rr.ring, recentReceipt{seq, r})
		return
	}
	rr.floor = rr.ring[rr.head].seq
	rr.ring[rr.head] = recentReceipt{seq, r}
	rr.head = (rr.head + 1) % len(rr.ring)
}

// between returns the receipts of rooms written in (since, to], the newest per key, as
// viewer may see them; ok is false when since is older than what is held.
func (rr *RecentReceipts) between(since, to uint64, rooms map[string]bool, viewer string) (list []receipts.Receipt, ok bool) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if !rr.set || since < rr.floor {
		return nil, false
	}
	latest := map[receipts.Key]int{}
	for i := range rr.ring {
		e := rr.ring[(rr.head+i)%len(rr.ring)]
		r := e.r
		if e.seq <= since || e.seq > to || !rooms[r.Room] || (r.Type == schemas.ReceiptReadPrivate && r.User != viewer) {
			continue
		}
		k := receipts.Key{Room: r.Room, Type: r.Type, User: r.User, Thread: r.Thread}
		rec := receipts.Receipt{Key: k, EventID: r.EventID, TS: r.TS, Pos: e.seq}
		if j, seen := latest[k]; seen {
			list[j] = rec
			continue
		}
		latest[k] = len(list)
		list = append(list, rec)
	}
	return list, true
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
	var list []receipts.Receipt
	if len(fresh) == 0 {
		set := make(map[string]bool, len(rooms))
		for _, r := range rooms {
			set[r] = true
		}
		if l, ok := rs.recent.between(since, to, set, sc.dev.UserID); ok {
			list, rooms = l, nil
		}
	}
	if len(rooms) > 0 || len(fresh) > 0 {
		l, err := rs.store.Changed(ctx, sc.dev.UserID, rooms, since, fresh, to)
		if err != nil {
			return err
		}
		list = l
	}
	// content[room][event][type][user]
	content := map[string]map[string]map[string]map[string]schemas.ReceiptData{}
	var order []string
	for _, r := range list {
		byEvent := content[r.Room]
		if byEvent == nil {
			byEvent = map[string]map[string]map[string]schemas.ReceiptData{}
			content[r.Room] = byEvent
			order = append(order, r.Room)
		}
		byType := byEvent[r.EventID]
		if byType == nil {
			byType = map[string]map[string]schemas.ReceiptData{}
			byEvent[r.EventID] = byType
		}
		if byType[r.Type] == nil {
			byType[r.Type] = map[string]schemas.ReceiptData{}
		}
		byType[r.Type][r.User] = schemas.ReceiptData{TS: r.TS, Thread: r.Thread}
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
