package schemas

import (
	"bytes"
	"encoding/json"
)

// Marshal is json.Marshal with HTML escaping off: json.Marshal writes <, > and & as
// six-byte escapes, also inside a json.RawMessage, which would change what clients
// sent and make a message on the bus up to six times the size of its events. Every
// message of the bus and every answer to a client is made by it.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}

// IsObject reports whether raw is a JSON object (event content, account data, a tag).
// raw must be valid JSON, as encoding/json leaves it in a json.RawMessage it decoded
// (null included), so the first byte tells: decoding it again cost a fifth of a
// to-device send's CPU.
func IsObject(raw json.RawMessage) bool {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	return len(raw) > 0 && raw[0] == '{'
}

// federationOnlyKeys are the parts of a PDU clients do not get.
var federationOnlyKeys = []string{"auth_events", "prev_events", "hashes", "signatures", "depth", "origin", "prev_state"}

// ClientEvent turns a PDU into the client format: federation-only keys removed,
// event_id present, unsigned.transaction_id when txnID is set (for the device that
// sent it) and unsigned.membership when membership is (the reader's membership at the
// event). Content keeps its characters (no \u003c for <).
func ClientEvent(pdu json.RawMessage, eventID, txnID, membership string) json.RawMessage {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(pdu, &m); err != nil {
		return pdu
	}
	for _, k := range federationOnlyKeys {
		delete(m, k)
	}
	m["event_id"], _ = Marshal(eventID)
	if txnID != "" || membership != "" {
		unsigned := map[string]json.RawMessage{}
		if raw, ok := m["unsigned"]; ok {
			_ = json.Unmarshal(raw, &unsigned)
		}
		if txnID != "" {
			unsigned["transaction_id"], _ = Marshal(txnID)
		}
		if membership != "" {
			unsigned["membership"], _ = Marshal(membership)
		}
		m["unsigned"], _ = Marshal(unsigned)
	}
	out, err := Marshal(m)
	if err != nil {
		return pdu
	}
	return out
}
