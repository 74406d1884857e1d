package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ReceiptsVersion is the schema version of ReceiptRecord written by this build.
const ReceiptsVersion = 1

// Receipt types a client may send (m.fully_read is not one: it is the room's account
// data of that type, and never appears under m.receipt).
const (
	ReceiptRead        = "m.read"
	ReceiptReadPrivate = "m.read.private"
)

// ReceiptRecord is one message of the receipts stream: the latest receipt of one (room,
// receipt type, user, thread). Thread is empty for an unthreaded receipt, "main" or a
// thread root's event ID otherwise.
type ReceiptRecord struct {
	V       int    `json:"v"`
	Room    string `json:"room"`
	Type    string `json:"type"`
	User    string `json:"user"`
	Thread  string `json:"thread,omitempty"`
	EventID string `json:"event_id"`
	// EventSeq and EventIdx are the event's position in the EVENTS log: a receipt for an
	// event at or before the current one's is ignored, as Synapse does.
	EventSeq uint64 `json:"event_seq"`
	EventIdx int    `json:"event_idx"`
	// TS is when the receipt was sent, in milliseconds (its data's "ts").
	TS int64 `json:"ts"`
}

// DecodeReceipt parses a receipts record.
func DecodeReceipt(data []byte) (*ReceiptRecord, error) {
	var r ReceiptRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("receipt record: %w", err)
	}
	if r.V < 1 || r.V > ReceiptsVersion {
		return nil, fmt.Errorf("receipt record: unsupported version %d", r.V)
	}
	if !strings.HasPrefix(r.Room, "!") || !strings.HasPrefix(r.User, "@") || !strings.HasPrefix(r.EventID, "$") {
		return nil, errors.New("receipt record: missing room, user or event")
	}
	if r.Type != ReceiptRead && r.Type != ReceiptReadPrivate {
		return nil, fmt.Errorf("receipt record: unknown receipt type %q", r.Type)
	}
	return &r, nil
}

// ReceiptRow is Synapse's receipts replication row:
// [room_id, receipt_type, user_id, event_id, thread_id|null, data].
type ReceiptRow struct {
	Room, Type, User, EventID, Thread string
	TS                                int64
}

func (r ReceiptRow) MarshalJSON() ([]byte, error) {
	var thread any
	if r.Thread != "" {
		thread = r.Thread
	}
	return Marshal([]any{r.Room, r.Type, r.User, r.EventID, thread, map[string]int64{"ts": r.TS}})
}

// ReceiptData is one user's receipt as m.receipt carries it.
type ReceiptData struct {
	TS     int64  `json:"ts"`
	Thread string `json:"thread_id,omitempty"`
}
