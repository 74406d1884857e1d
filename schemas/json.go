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
func IsObject(raw json.RawMessage) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(raw, &m) == nil && m != nil
}
