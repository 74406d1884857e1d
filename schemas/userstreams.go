package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
)

// The streams of Synapse's worker mode besides events, by their replication names. Each
// is a JetStream stream of its own with one writer per shard (stream_writers.<name>).
const (
	StreamTyping      = "typing"
	StreamToDevice    = "to_device"
	StreamAccountData = "account_data"
	StreamReceipts    = "receipts"
	StreamPresence    = "presence"
	StreamPushRules   = "push_rules"
	StreamDeviceLists = "device_lists"
	// StreamAccounts is Ganglion's own: accounts, devices and their tokens, profiles,
	// filters, forgotten rooms and the room directory. Synapse has no such stream (it
	// writes these straight to its database); here they go through a log like
	// everything else, so that replay rebuilds them.
	StreamAccounts = "accounts"
)

// StreamWriteVersion is the schema version of StreamWrite written by this build.
const StreamWriteVersion = 1

// StreamWrite asks the writer of a per-user stream to change it: a gateway publishes it
// to the writer's intent subject for that stream and waits for the answer, exactly as
// it does with an Intent for a room. Op and Body are the stream's own; the writer
// validates them against what it stores.
type StreamWrite struct {
	V int `json:"v"`
	// ID identifies the write; a copy sent again (a gateway resending after a
	// reconnect, a redelivery) carries the same ID, and the writer's log messages are
	// deduplicated by it.
	ID     string `json:"id"`
	Stream string `json:"stream"`
	Op     string `json:"op"`
	// Key chooses the writer among stream_writers.<stream>: the user ID for streams
	// sharded by user, the room ID for those sharded by room.
	Key string `json:"key"`
	// User and Device are the authenticated requester.
	User       string          `json:"user"`
	Device     string          `json:"device,omitempty"`
	IssuedAtMS int64           `json:"issued_at_ms"`
	Body       json.RawMessage `json:"body,omitempty"`
}

// Validate checks what every stream relies on.
func (w *StreamWrite) Validate() error {
	if w.V < 1 || w.V > StreamWriteVersion {
		return fmt.Errorf("stream write: unsupported version %d", w.V)
	}
	if w.ID == "" || w.Stream == "" || w.Op == "" || w.Key == "" || w.User == "" {
		return errors.New("stream write: id, stream, op, key and user are required")
	}
	for _, s := range []string{w.ID, w.Stream, w.Op, w.Key, w.User, w.Device} {
		if !StorableText(s) {
			return errors.New("stream write: a string holds NUL or invalid UTF-8")
		}
	}
	if len(w.Body) > 0 && !json.Valid(w.Body) {
		return errors.New("stream write: body is not JSON")
	}
	return nil
}

// DecodeStreamWrite parses and validates a stream write from the bus.
func DecodeStreamWrite(data []byte) (*StreamWrite, error) {
	var w StreamWrite
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, fmt.Errorf("stream write: %w", err)
	}
	if err := w.Validate(); err != nil {
		return nil, err
	}
	return &w, nil
}
