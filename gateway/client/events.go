package client

import (
	"encoding/json"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
)

// federationOnlyKeys are the parts of a PDU clients do not get.
var federationOnlyKeys = []string{"auth_events", "prev_events", "hashes", "signatures", "depth", "origin", "prev_state"}

// clientEvent turns a stored PDU into the client format: federation-only keys removed,
// event_id present, and unsigned.transaction_id for the device that sent it. It
// marshals with matrix.Marshal, so content keeps its characters (no \u003c for <).
func clientEvent(ev *persist.StoredEvent, dev Device) json.RawMessage {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(ev.JSON, &m); err != nil {
		return ev.JSON
	}
	for _, k := range federationOnlyKeys {
		delete(m, k)
	}
	m["event_id"], _ = matrix.Marshal(ev.EventID)
	if ev.TxnID != "" && ev.Sender == dev.UserID && ev.DeviceID == dev.DeviceID {
		unsigned := map[string]json.RawMessage{}
		if raw, ok := m["unsigned"]; ok {
			_ = json.Unmarshal(raw, &unsigned)
		}
		unsigned["transaction_id"], _ = matrix.Marshal(ev.TxnID)
		m["unsigned"], _ = matrix.Marshal(unsigned)
	}
	out, err := matrix.Marshal(m)
	if err != nil {
		return ev.JSON
	}
	return out
}

// clientEvents converts a list of stored events; the result is never nil so it
// marshals as [] as the spec wants.
func clientEvents(evs []persist.StoredEvent, dev Device) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(evs))
	for i := range evs {
		out = append(out, clientEvent(&evs[i], dev))
	}
	return out
}
