package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
)

// LogVersion is the schema version of LogBatch written by this build.
const LogVersion = 1

// LogBatch is one message of the EVENTS log: consecutive events of one room, appended
// atomically by the room's writer. Its position is the stream sequence of the message;
// an event's position is (sequence, index in Events).
type LogBatch struct {
	V           int           `json:"v"`
	RoomID      string        `json:"room_id"`
	RoomVersion string        `json:"room_version"`
	Writer      string        `json:"writer"`
	Events      []LoggedEvent `json:"events"`
	// Purged deletes the room (the admin API's purge): a batch without events after
	// which every projection holds nothing of the room, and the log keeps none of its
	// earlier messages once this one is projected.
	Purged bool `json:"purged,omitempty"`
}

// LoggedEvent is one accepted event and what it takes to rebuild every projection of it.
type LoggedEvent struct {
	EventID string `json:"event_id"`
	// JSON is the full signed event as it goes over federation.
	JSON json.RawMessage `json:"json"`
	// IntentID ties the event to the intent that produced it, so a redelivered intent
	// finds its result instead of building the event again.
	IntentID string `json:"intent_id,omitempty"`
	DeviceID string `json:"device_id,omitempty"`
	TxnID    string `json:"txn_id,omitempty"`
}

// LogMessage is one message of the EVENTS log as read back: its sequence, the writer
// that appended it, and its batch.
type LogMessage struct {
	Seq    uint64
	Writer string
	Batch  *LogBatch
}

// DecodeLogBatch parses a log message.
func DecodeLogBatch(data []byte) (*LogBatch, error) {
	var b LogBatch
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("log batch: %w", err)
	}
	if b.V < 1 || b.V > LogVersion {
		return nil, fmt.Errorf("log batch: unsupported version %d", b.V)
	}
	if b.RoomID == "" || b.RoomVersion == "" || (len(b.Events) == 0) != b.Purged {
		return nil, errors.New("log batch: missing room_id or room_version, or events and purged both or neither")
	}
	return &b, nil
}

// Projected is published by a persister on the core subject "<ns>.projected" after a
// projection transaction commits: every event it wrote with log sequence <= Seq is now
// in Postgres. Sync feeds use it to advance the visible position. The writer of a
// per-user stream publishes the same on "<ns>.projected.<stream>".
type Projected struct {
	Writer string `json:"writer"`
	Seq    uint64 `json:"seq"`
}
