package appservice

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/schemas"
)

// Ephemeral events (MSC2409) are not a log the sender replays: typing, receipts and
// presence reach it as the process's feeds of those streams see them, and a service
// gets those of its rooms and users from then on. A service that is down gets what was
// queued for it when it is back, up to queueCap records; a restart starts afresh, as
// Synapse does for typing.
const (
	queueCap        = 1000
	maxTxnEphemeral = 100
)

// Ephemeral holds, for each service with receive_ephemeral, the records of the
// ephemeral streams not sent to it yet. Hand Observer(stream) to the feed of each
// stream (syncfeed.Config.Observe) and the Ephemeral to the sender.
type Ephemeral struct {
	queues map[string]*ephemeralQueue
}

// ephemeralRecord is one decoded record of an ephemeral stream; one of its fields is set.
type ephemeralRecord struct {
	typing   *schemas.TypingRecord
	receipt  *schemas.ReceiptRecord
	presence *schemas.PresenceRecord
}

type ephemeralQueue struct {
	mu      sync.Mutex
	records []ephemeralRecord
	dropped int
	ready   chan struct{}
}

// NewEphemeral returns the queues of the services that asked for ephemeral events.
func NewEphemeral(services *Services) *Ephemeral {
	e := &Ephemeral{queues: map[string]*ephemeralQueue{}}
	for _, svc := range services.All() {
		if svc.URL != "" && svc.Ephemeral() {
			e.queues[svc.ID] = &ephemeralQueue{ready: make(chan struct{}, 1)}
		}
	}
	return e
}

// Observer takes the records of stream for the services, or is nil when no service
// wants them or the stream has nothing for services.
func (e *Ephemeral) Observer(stream string) func(seq uint64, h nats.Header, data []byte) {
	if e == nil || len(e.queues) == 0 {
		return nil
	}
	var decode func(data []byte) (ephemeralRecord, bool)
	switch stream {
	case schemas.StreamTyping:
		decode = func(data []byte) (ephemeralRecord, bool) {
			r, err := schemas.DecodeTyping(data)
			return ephemeralRecord{typing: r}, err == nil
		}
	case schemas.StreamReceipts:
		decode = func(data []byte) (ephemeralRecord, bool) {
			r, err := schemas.DecodeReceipt(data)
			// A private receipt is for its user only, never a service.
			return ephemeralRecord{receipt: r}, err == nil && r.Type != schemas.ReceiptReadPrivate
		}
	case schemas.StreamPresence:
		decode = func(data []byte) (ephemeralRecord, bool) {
			r, err := schemas.DecodePresence(data)
			return ephemeralRecord{presence: r}, err == nil
		}
	default:
		return nil
	}
	return func(_ uint64, _ nats.Header, data []byte) {
		rec, ok := decode(data)
		if !ok {
			return
		}
		for _, q := range e.queues {
			q.push(rec)
		}
	}
}

// queue is the service's queue, or nil when it gets no ephemeral events.
func (e *Ephemeral) queue(serviceID string) *ephemeralQueue {
	if e == nil {
		return nil
	}
	return e.queues[serviceID]
}

func (q *ephemeralQueue) push(rec ephemeralRecord) {
	q.mu.Lock()
	if len(q.records) == queueCap {
		q.records = q.records[1:]
		q.dropped++
	}
	q.records = append(q.records, rec)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// take returns up to n queued records, oldest first, and how many were dropped since
// the last take.
func (q *ephemeralQueue) take(n int) ([]ephemeralRecord, int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	n = min(n, len(q.records))
	out := q.records[:n:n]
	q.records = q.records[n:]
	dropped := q.dropped
	q.dropped = 0
	return out, dropped
}

// sendEphemeral sends the service its ephemeral events, in transactions of their own,
// until ctx ends.
func (w *serviceSender) sendEphemeral(ctx context.Context, q *ephemeralQueue) {
	for {
		select {
		case <-q.ready:
		case <-ctx.Done():
			return
		}
		for {
			records, dropped := q.take(maxTxnEphemeral)
			if dropped > 0 {
				w.log.Warn("ephemeral events dropped while the service did not take them", zap.Int("dropped", dropped))
			}
			if len(records) == 0 {
				break
			}
			if err := w.sendRecords(ctx, records); err != nil {
				if ctx.Err() != nil {
					return
				}
				w.log.Warn("could not send ephemeral events; dropping them", zap.Int("records", len(records)), zap.Error(err))
			}
		}
	}
}

// sendRecords sends the records of interest to the service as one transaction.
func (w *serviceSender) sendRecords(ctx context.Context, records []ephemeralRecord) error {
	events, err := w.ephemeralEvents(ctx, records, time.Now())
	if err != nil || len(events) == 0 {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.sendPending(ctx); err != nil {
		return err
	}
	return w.send(ctx, nil, events)
}

// ephemeralEvents are the events of records the service is interested in: typing and
// public receipts of its rooms of interest, and the presence of its users and of the
// users of those rooms. A room's typing is sent once, as its last record says.
func (w *serviceSender) ephemeralEvents(ctx context.Context, records []ephemeralRecord, now time.Time) ([]json.RawMessage, error) {
	var rooms, present []string
	lastTyping := map[string]int{}
	for i, r := range records {
		switch {
		case r.typing != nil:
			rooms = append(rooms, r.typing.Room)
			lastTyping[r.typing.Room] = i
		case r.receipt != nil:
			rooms = append(rooms, r.receipt.Room)
		case r.presence != nil && !w.svc.OwnsUser(r.presence.User):
			present = append(present, r.presence.User)
		}
	}
	var presenceRooms map[string][]string
	if len(present) > 0 {
		var err error
		if presenceRooms, err = w.s.cfg.DB.JoinedRoomsOf(ctx, present); err != nil {
			return nil, err
		}
		for _, joined := range presenceRooms {
			rooms = append(rooms, joined...)
		}
	}
	interesting, err := w.interestingRooms(ctx, rooms, 0)
	if err != nil {
		return nil, err
	}
	var out []json.RawMessage
	add := func(v any) error {
		raw, err := schemas.Marshal(v)
		if err == nil {
			out = append(out, raw)
		}
		return err
	}
	for i, r := range records {
		var err error
		switch {
		case r.typing != nil && interesting[r.typing.Room] && lastTyping[r.typing.Room] == i:
			err = add(schemas.NewTypingEvent(r.typing.Room, r.typing.Users))
		case r.receipt != nil && interesting[r.receipt.Room]:
			err = add(receiptEvent(r.receipt))
		case r.presence != nil && (w.svc.OwnsUser(r.presence.User) || slices.ContainsFunc(presenceRooms[r.presence.User], func(room string) bool { return interesting[room] })):
			err = add(schemas.NewPresenceEvent(r.presence, now))
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// receiptEvent is one receipt as an m.receipt event of its room:
// content[event_id][receipt type][user].
func receiptEvent(r *schemas.ReceiptRecord) any {
	return struct {
		Type    string                                               `json:"type"`
		RoomID  string                                               `json:"room_id"`
		Content map[string]map[string]map[string]schemas.ReceiptData `json:"content"`
	}{"m.receipt", r.Room, map[string]map[string]map[string]schemas.ReceiptData{
		r.EventID: {r.Type: {r.User: {TS: r.TS, Thread: r.Thread}}},
	}}
}
