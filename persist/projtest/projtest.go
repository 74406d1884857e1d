// Package projtest builds rooms of real signed room version 11 events as log batches, so
// tests can project a room's history into Postgres without running a persister. It
// does not import persist, so persist's own tests can use it.
package projtest

import (
	"crypto/ed25519"
	"encoding/json"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/ganglionhq/ganglion/schemas"
)

// Writer is the writer every batch names; tests project the batches under it.
const Writer = "A"

// Event describes one event to build. Label names it in the test's expectations.
type Event struct {
	Label, Type, Sender string
	StateKey            *string
	Content             any
	// DeviceID and TxnID are the sending device and its transaction ID, which sync
	// shows back to that device only.
	DeviceID, TxnID string
}

// State is a state event with the empty state key.
func State(label, typ, sender string, content any) Event {
	key := ""
	return Event{Label: label, Type: typ, Sender: sender, StateKey: &key, Content: content}
}

// Member is user's m.room.member event, sent by sender.
func Member(label, user, sender, membership string) Event {
	return Event{Label: label, Type: "m.room.member", Sender: sender, StateKey: &user,
		Content: map[string]any{"membership": membership}}
}

// Message is a text message whose body is its label.
func Message(label, sender string) Event {
	return Event{Label: label, Type: "m.room.message", Sender: sender,
		Content: map[string]any{"msgtype": "m.text", "body": label}}
}

// Room is one room's history as a single chain: each event's prev_events is the event
// built before it, and depths count up from 1. Its events are signed with a key of its
// own in the name of serverName.
type Room struct {
	ID string

	t          testing.TB
	serverName spec.ServerName
	key        ed25519.PrivateKey
	depth      int64
	prev       []string
	labels     map[string]string // event ID -> label
}

// NewRoom starts an empty room.
func NewRoom(t testing.TB, roomID string, serverName spec.ServerName) *Room {
	t.Helper()
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &Room{ID: roomID, t: t, serverName: serverName, key: key, prev: []string{}, labels: map[string]string{}}
}

// Batch builds evs onto the end of the chain, in order, as one log message.
func (r *Room) Batch(evs ...Event) *schemas.LogBatch {
	r.t.Helper()
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11)
	lb := &schemas.LogBatch{V: schemas.LogVersion, RoomID: r.ID, RoomVersion: "11", Writer: Writer}
	for _, e := range evs {
		content, err := json.Marshal(e.Content)
		if err != nil {
			r.t.Fatal(err)
		}
		r.depth++
		pdu, err := verImpl.NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{
			SenderID: e.Sender, RoomID: r.ID, Type: e.Type, StateKey: e.StateKey,
			PrevEvents: r.prev, AuthEvents: []string{}, Depth: r.depth, Content: content,
		}).Build(time.Now(), r.serverName, "ed25519:1", r.key)
		if err != nil {
			r.t.Fatal(err)
		}
		r.prev = []string{pdu.EventID()}
		r.labels[pdu.EventID()] = e.Label
		lb.Events = append(lb.Events, schemas.LoggedEvent{EventID: pdu.EventID(), JSON: pdu.JSON(), DeviceID: e.DeviceID, TxnID: e.TxnID})
	}
	return lb
}

// Label returns the label of one of the room's events, "" for any other event ID.
func (r *Room) Label(eventID string) string { return r.labels[eventID] }
