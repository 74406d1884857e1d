package client

import (
	"encoding/json"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/schemas"
)

// clientEvent turns a stored PDU into the client format (schemas.ClientEvent), with
// unsigned.transaction_id for the device that sent it.
func clientEvent(ev *persist.StoredEvent, dev Device) json.RawMessage {
	txnID := ""
	if ev.TxnID != "" && ev.Sender == dev.UserID && ev.DeviceID == dev.DeviceID {
		txnID = ev.TxnID
	}
	return schemas.ClientEvent(ev.JSON, ev.EventID, txnID)
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
