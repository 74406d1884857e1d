// Package schemas defines what travels on the bus: intents from gateways to persisters,
// the batches appended to the EVENTS log, persister progress, and Synapse's replication
// rows. It does no I/O; every type is versioned so old messages stay readable after an
// upgrade.
package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// IntentVersion is the schema version of Intent written by this build. Decoders accept
// every version up to it.
const IntentVersion = 1

// IntentKind says what a persister must do with an intent.
type IntentKind string

const (
	// KindClientEvent asks the persister to build, authorise and append one event on
	// behalf of a local user (messages, state, membership, redactions).
	KindClientEvent IntentKind = "client_event"
	// KindCreateRoom asks for the whole initial event sequence of a new room, built and
	// appended atomically in one log message.
	KindCreateRoom IntentKind = "create_room"
	// KindRemoteEvent carries a PDU received over federation whose signatures and hashes
	// the federation gateway already checked; the persister runs auth, soft-fail and
	// state resolution. Not handled yet: persisters answer it with 501.
	KindRemoteEvent IntentKind = "remote_event"
	// KindPurgeRoom asks for the room's deletion: the persister appends a purged batch
	// (LogBatch.Purged) and forgets the room.
	KindPurgeRoom IntentKind = "purge_room"
)

// Intent is what a gateway publishes to the room's shard subject.
type Intent struct {
	V    int        `json:"v"`
	Kind IntentKind `json:"kind"`
	// ID identifies the intent forever. For sends with a transaction id it is derived
	// from (user, device, txn_id) so retries collapse onto one event; otherwise random.
	ID     string `json:"id"`
	RoomID string `json:"room_id"`
	// Sender is the local user the event is built for; DeviceID and TxnID are kept so
	// /sync can return unsigned.transaction_id to the sending device.
	Sender   string `json:"sender,omitempty"`
	DeviceID string `json:"device_id,omitempty"`
	TxnID    string `json:"txn_id,omitempty"`
	// IssuedAtMS is the gateway's clock when the request arrived.
	IssuedAtMS int64 `json:"issued_at_ms"`

	Event      *ProtoEvent  `json:"event,omitempty"`
	CreateRoom *CreateRoom  `json:"create_room,omitempty"`
	Remote     *RemoteEvent `json:"remote,omitempty"`
}

// ProtoEvent is the client-chosen part of an event; the persister fills in the rest
// (prev_events, auth_events, depth, hashes, signatures).
type ProtoEvent struct {
	Type     string          `json:"type"`
	StateKey *string         `json:"state_key,omitempty"`
	Content  json.RawMessage `json:"content"`
	// Redacts is the target of an m.room.redaction; the persister places it where the
	// room version wants it (top level before v11, content from v11).
	Redacts string `json:"redacts,omitempty"`
	// Kick marks a member event that is a kick: refused when its target is not in the
	// room (joined, invited or knocking), as Synapse refuses it.
	Kick bool `json:"kick,omitempty"`
	// AllowedJoin marks a join whose sender the gateway found joined to one of the
	// rooms a restricted join rule allows: the persister names, in
	// join_authorised_via_users_server, a local member who may invite.
	AllowedJoin bool `json:"allowed_join,omitempty"`
}

// CreateRoom is the initial event sequence of a room, computed by the gateway from the
// createRoom request (presets, initial_state, invites...), in the order the spec gives.
// The first event must be m.room.create.
type CreateRoom struct {
	RoomVersion string       `json:"room_version"`
	Events      []ProtoEvent `json:"events"`
}

// RemoteEvent is a federation PDU in its wire form.
type RemoteEvent struct {
	Origin      string          `json:"origin"`
	RoomVersion string          `json:"room_version"`
	PDU         json.RawMessage `json:"pdu"`
}

// Validate checks the structural invariants a persister relies on. It does not
// authorise anything: that needs room state.
func (in *Intent) Validate() error {
	if in.V < 1 || in.V > IntentVersion {
		return fmt.Errorf("intent: unsupported version %d", in.V)
	}
	if in.ID == "" {
		return errors.New("intent: missing id")
	}
	if in.RoomID == "" {
		return errors.New("intent: missing room_id")
	}
	// These strings become Postgres TEXT, which holds neither NUL nor invalid UTF-8; a
	// refused event must be refused here, before it reaches the log.
	for _, s := range []string{in.ID, in.RoomID, in.Sender, in.DeviceID, in.TxnID} {
		if !StorableText(s) {
			return errors.New("intent: a string holds NUL or invalid UTF-8")
		}
	}
	switch in.Kind {
	case KindClientEvent:
		if in.Event == nil || in.Event.Type == "" || in.Sender == "" {
			return errors.New("intent: client_event needs event.type and sender")
		}
		if !json.Valid(in.Event.Content) {
			return errors.New("intent: event content is not JSON")
		}
		if !in.Event.storable() {
			return errors.New("intent: event type, state key or redacts holds NUL or invalid UTF-8")
		}
	case KindCreateRoom:
		if in.CreateRoom == nil || len(in.CreateRoom.Events) == 0 || in.Sender == "" {
			return errors.New("intent: create_room needs events and sender")
		}
		if in.CreateRoom.Events[0].Type != "m.room.create" {
			return errors.New("intent: create_room must start with m.room.create")
		}
		for _, ev := range in.CreateRoom.Events {
			if ev.Type == "" || !json.Valid(ev.Content) {
				return errors.New("intent: create_room event without type or JSON content")
			}
			if !ev.storable() {
				return errors.New("intent: event type or state key holds NUL or invalid UTF-8")
			}
		}
	case KindPurgeRoom:
		if in.Sender == "" {
			return errors.New("intent: purge_room needs sender")
		}
	case KindRemoteEvent:
		if in.Remote == nil || in.Remote.Origin == "" || !json.Valid(in.Remote.PDU) {
			return errors.New("intent: remote_event needs origin and a JSON pdu")
		}
	default:
		return fmt.Errorf("intent: unknown kind %q", in.Kind)
	}
	return nil
}

func (pe *ProtoEvent) storable() bool {
	return StorableText(pe.Type) && StorableText(pe.Redacts) && (pe.StateKey == nil || StorableText(*pe.StateKey))
}

// StorableText reports whether s fits a Postgres TEXT column: valid UTF-8 without NUL.
func StorableText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// DecodeIntent parses and validates an intent from the bus.
func DecodeIntent(data []byte) (*Intent, error) {
	var in Intent
	if err := json.Unmarshal(data, &in); err != nil {
		return nil, fmt.Errorf("intent: %w", err)
	}
	if err := in.Validate(); err != nil {
		return nil, err
	}
	return &in, nil
}

// IntentResult is the persister's answer to the waiting gateway.
type IntentResult struct {
	EventIDs []string `json:"event_ids,omitempty"`
	// Seq is the EVENTS log sequence holding the events; for a stream write, the
	// position of its last log message in that stream.
	Seq uint64 `json:"seq,omitempty"`
	// Body is a stream write's own answer (claimed keys, key counts...), when it has one.
	Body json.RawMessage `json:"body,omitempty"`
	// Error is set when the intent was refused; the gateway relays it to the client.
	Error *ResultError `json:"error,omitempty"`
}

// ResultError is a Matrix error produced by a persister.
type ResultError struct {
	Status  int    `json:"status"`
	Code    string `json:"errcode"`
	Message string `json:"error"`
}
