package schemas

// Synapse worker replication: row formats of the events stream and the text of
// the commands published on Redis, byte for byte as Synapse writes them, so
// Synapse workers and operators' tooling can follow our writers. The facts come
// from shared/reference/synapse-replication.md (§1.3, §2, §3.1).

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Replication command names (Synapse's commands.py). Only the ones Synapse
// handles over Redis are listed: the legacy TCP-only commands (NAME, SERVER,
// PING, ERROR) are refused by ParseCommand because Synapse logs them as
// unhandled, so nothing useful can be done with them either.
const (
	CmdRDATA          = "RDATA"
	CmdPosition       = "POSITION"
	CmdReplicate      = "REPLICATE"
	CmdUserSync       = "USER_SYNC"
	CmdClearUserSync  = "CLEAR_USER_SYNC"
	CmdFederationAck  = "FEDERATION_ACK"
	CmdUserIP         = "USER_IP"
	CmdRemoteServerUp = "REMOTE_SERVER_UP"
	CmdLockReleased   = "LOCK_RELEASED"
	CmdNewActiveTask  = "NEW_ACTIVE_TASK"
	CmdCancelTask     = "CANCEL_TASK"
)

var knownCommands = map[string]bool{
	CmdRDATA: true, CmdPosition: true, CmdReplicate: true, CmdUserSync: true,
	CmdClearUserSync: true, CmdFederationAck: true, CmdUserIP: true,
	CmdRemoteServerUp: true, CmdLockReleased: true, CmdNewActiveTask: true,
	CmdCancelTask: true,
}

// StreamEvents is the replication stream that carries EventRow and StateRow.
const StreamEvents = "events"

// ReplicateCommand is the REPLICATE command as published: Synapse always puts a
// space between name and payload, even when the payload is empty.
const ReplicateCommand = CmdReplicate + " "

// batchToken stands in for the token on every RDATA row but the last of a run
// of rows sharing one token; the receiver buffers them until the numeric one.
const batchToken = "batch"

// EventRow is the events stream's "ev" row (9 fields since Synapse v1.64; the
// receiver builds its row type positionally, so the count must match exactly).
type EventRow struct {
	EventID    string
	RoomID     string
	Type       string
	StateKey   *string // nil for non-state events
	Redacts    *string // event redacted by this one
	RelatesTo  *string // m.relates_to event_id, if any
	Membership *string // m.room.member membership, if a member event
	Rejected   bool
	Outlier    bool
}

// StateRow is the events stream's "state" row: a current-state delta of a
// room. A nil EventID means the state entry was removed.
type StateRow struct {
	RoomID   string
	Type     string
	StateKey string
	EventID  *string
}

// MarshalJSON encodes the row as ["ev",[...]] in Synapse's JSON form.
func (r EventRow) MarshalJSON() ([]byte, error) {
	return EncodeJSON([]any{"ev", []any{
		r.EventID, r.RoomID, r.Type, r.StateKey, r.Redacts, r.RelatesTo,
		r.Membership, r.Rejected, r.Outlier,
	}})
}

// UnmarshalJSON decodes an ["ev",[...]] row, refusing other arities so a row
// from an incompatible Synapse version fails loudly instead of shifting fields.
func (r *EventRow) UnmarshalJSON(b []byte) error {
	fields, err := splitRow(b, "ev", 9)
	if err != nil {
		return err
	}
	var out EventRow
	targets := []any{&out.EventID, &out.RoomID, &out.Type, &out.StateKey, &out.Redacts,
		&out.RelatesTo, &out.Membership, &out.Rejected, &out.Outlier}
	for i, t := range targets {
		if err := json.Unmarshal(fields[i], t); err != nil {
			return fmt.Errorf("ev row field %d: %w", i, err)
		}
	}
	*r = out
	return nil
}

// MarshalJSON encodes the row as ["state",[room_id,type,state_key,event_id]].
func (r StateRow) MarshalJSON() ([]byte, error) {
	return EncodeJSON([]any{"state", []any{r.RoomID, r.Type, r.StateKey, r.EventID}})
}

// UnmarshalJSON decodes a ["state",[...]] row.
func (r *StateRow) UnmarshalJSON(b []byte) error {
	fields, err := splitRow(b, "state", 4)
	if err != nil {
		return err
	}
	var out StateRow
	targets := []any{&out.RoomID, &out.Type, &out.StateKey, &out.EventID}
	for i, t := range targets {
		if err := json.Unmarshal(fields[i], t); err != nil {
			return fmt.Errorf("state row field %d: %w", i, err)
		}
	}
	*r = out
	return nil
}

// splitRow checks the [type_id, [fields...]] envelope of an events-stream row.
func splitRow(b []byte, typeID string, arity int) ([]json.RawMessage, error) {
	var envelope []json.RawMessage
	if err := json.Unmarshal(b, &envelope); err != nil {
		return nil, fmt.Errorf("%s row: %w", typeID, err)
	}
	if len(envelope) != 2 {
		return nil, fmt.Errorf("%s row: want [type, fields], got %d elements", typeID, len(envelope))
	}
	var got string
	if err := json.Unmarshal(envelope[0], &got); err != nil || got != typeID {
		return nil, fmt.Errorf("row type is %s, want %q", envelope[0], typeID)
	}
	var fields []json.RawMessage
	if err := json.Unmarshal(envelope[1], &fields); err != nil {
		return nil, fmt.Errorf("%s row fields: %w", typeID, err)
	}
	if len(fields) != arity {
		return nil, fmt.Errorf("%s row: %d fields, want %d", typeID, len(fields), arity)
	}
	return fields, nil
}

// EncodeJSON encodes v the way Synapse's JSON encoder does (Python json with
// separators=(",", ":") and ensure_ascii): compact, HTML characters left
// alone, and everything outside printable ASCII, DEL included, escaped as
// lower-case \uXXXX, with characters beyond the BMP as surrogate pairs. The
// result is therefore plain ASCII and can never contain a newline, which the
// line-based command format forbids.
func EncodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	raw := bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})
	// Bytes >= 0x7f can only occur inside string literals in Go's output
	// (it already escapes control characters, and turns invalid UTF-8 into
	// U+FFFD), so escaping them in place keeps the JSON valid and equal.
	firstWide := bytes.IndexFunc(raw, func(r rune) bool { return r >= 0x7f })
	if firstWide < 0 {
		return raw, nil
	}
	out := make([]byte, 0, len(raw)+len(raw)/4)
	out = append(out, raw[:firstWide]...)
	for i := firstWide; i < len(raw); {
		c := raw[i]
		if c < 0x7f {
			out = append(out, c)
			i++
			continue
		}
		r, size := utf8.DecodeRune(raw[i:])
		i += size
		if r > 0xffff {
			r -= 0x10000
			out = appendUnicodeEscape(out, 0xd800+(r>>10))
			out = appendUnicodeEscape(out, 0xdc00+(r&0x3ff))
			continue
		}
		out = appendUnicodeEscape(out, r)
	}
	return out, nil
}

func appendUnicodeEscape(dst []byte, r rune) []byte {
	const hex = "0123456789abcdef"
	return append(dst, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
}

// ErrBadCommand is wrapped by every formatting and parsing error.
var ErrBadCommand = errors.New("bad replication command")

// checkWord refuses names that would break the space-separated command line.
func checkWord(what, s string) error {
	if s == "" || strings.ContainsAny(s, " \n\r") {
		return fmt.Errorf("%w: %s %q must be non-empty without spaces or newlines", ErrBadCommand, what, s)
	}
	return nil
}

// FormatRDATA returns `RDATA <stream> <instance> <token|batch> <row-json>`.
// With batch set the literal "batch" replaces the token: use it for every row
// but the last of a run of rows sharing one token. row is encoded with
// EncodeJSON (EventRow and StateRow encode themselves as typed rows).
func FormatRDATA(stream, instance string, token int64, batch bool, row any) (string, error) {
	if err := checkWord("stream", stream); err != nil {
		return "", err
	}
	if err := checkWord("instance", instance); err != nil {
		return "", err
	}
	rowJSON, err := EncodeJSON(row)
	if err != nil {
		return "", fmt.Errorf("%w: row: %v", ErrBadCommand, err)
	}
	tok := batchToken
	if !batch {
		tok = strconv.FormatInt(token, 10)
	}
	return CmdRDATA + " " + stream + " " + instance + " " + tok + " " + string(rowJSON), nil
}

// FormatPosition returns `POSITION <stream> <instance> <prev> <new>`: the
// instance wrote no rows of stream in (prev, new]. Announcing a position for
// the first time, pass the same value for both.
func FormatPosition(stream, instance string, prev, next int64) (string, error) {
	if err := checkWord("stream", stream); err != nil {
		return "", err
	}
	if err := checkWord("instance", instance); err != nil {
		return "", err
	}
	return CmdPosition + " " + stream + " " + instance + " " +
		strconv.FormatInt(prev, 10) + " " + strconv.FormatInt(next, 10), nil
}

// ErrEmptyCommand is returned for blank messages, which Synapse ignores.
var ErrEmptyCommand = fmt.Errorf("%w: empty message", ErrBadCommand)

// ParseCommand splits one Redis message into command name and payload the way
// Synapse does: at the first space, the payload being empty when there is no
// space. Unknown names, blank messages and invalid UTF-8 are errors; the
// payload is not interpreted (see ParseRDATA and ParsePosition).
func ParseCommand(msg string) (name, payload string, err error) {
	if strings.TrimSpace(msg) == "" {
		return "", "", ErrEmptyCommand
	}
	if !utf8.ValidString(msg) {
		return "", "", fmt.Errorf("%w: not UTF-8", ErrBadCommand)
	}
	name, payload, _ = strings.Cut(msg, " ")
	if !knownCommands[name] {
		return "", "", fmt.Errorf("%w: unknown command %q", ErrBadCommand, truncate(name, 32))
	}
	return name, payload, nil
}

// truncate keeps error messages about hostile input short.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// RDATA is a parsed RDATA payload. Batch means the token was "batch" (the row
// belongs to the next numeric token seen on the same stream).
type RDATA struct {
	Stream   string
	Instance string
	Token    int64
	Batch    bool
	Row      json.RawMessage
}

// ParseRDATA parses the payload of an RDATA command. The row JSON may contain
// spaces, so only the first three spaces separate fields.
func ParseRDATA(payload string) (RDATA, error) {
	parts := strings.SplitN(payload, " ", 4)
	if len(parts) != 4 {
		return RDATA{}, fmt.Errorf("%w: RDATA wants 4 fields, got %d", ErrBadCommand, len(parts))
	}
	if err := checkWord("stream", parts[0]); err != nil {
		return RDATA{}, err
	}
	if err := checkWord("instance", parts[1]); err != nil {
		return RDATA{}, err
	}
	d := RDATA{Stream: parts[0], Instance: parts[1]}
	if parts[2] == batchToken {
		d.Batch = true
	} else {
		tok, err := strconv.ParseInt(parts[2], 10, 64)
		if err != nil {
			return RDATA{}, fmt.Errorf("%w: RDATA token %q", ErrBadCommand, truncate(parts[2], 32))
		}
		d.Token = tok
	}
	if !json.Valid([]byte(parts[3])) {
		return RDATA{}, fmt.Errorf("%w: RDATA row is not JSON", ErrBadCommand)
	}
	d.Row = json.RawMessage(parts[3])
	return d, nil
}

// Position is a parsed POSITION payload.
type Position struct {
	Stream   string
	Instance string
	Prev     int64
	New      int64
}

// ParsePosition parses the payload of a POSITION command.
func ParsePosition(payload string) (Position, error) {
	parts := strings.Split(payload, " ")
	if len(parts) != 4 {
		return Position{}, fmt.Errorf("%w: POSITION wants 4 fields, got %d", ErrBadCommand, len(parts))
	}
	if err := checkWord("stream", parts[0]); err != nil {
		return Position{}, err
	}
	if err := checkWord("instance", parts[1]); err != nil {
		return Position{}, err
	}
	prev, err1 := strconv.ParseInt(parts[2], 10, 64)
	next, err2 := strconv.ParseInt(parts[3], 10, 64)
	if err1 != nil || err2 != nil {
		return Position{}, fmt.Errorf("%w: POSITION tokens %q %q", ErrBadCommand,
			truncate(parts[2], 32), truncate(parts[3], 32))
	}
	return Position{Stream: parts[0], Instance: parts[1], Prev: prev, New: next}, nil
}
