package client

import (
	"encoding/json"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/schemas"
)

// clientEvent turns a stored PDU into the client format (schemas.ClientEvent), with
// unsigned.transaction_id for the device that sent it.
func clientEvent(ev *persist.StoredEvent, dev Device) json.RawMessage {
	return clientEventAs(ev, dev, "")
}

// clientEventAs is clientEvent with unsigned.membership, the reader's membership at the
// event, when membership is set.
func clientEventAs(ev *persist.StoredEvent, dev Device, membership string) json.RawMessage {
	txnID := ""
	if ev.TxnID != "" && ev.Sender == dev.UserID && ev.DeviceID == dev.DeviceID {
		txnID = ev.TxnID
	}
	return schemas.ClientEvent(ev.JSON, ev.EventID, txnID, membership)
}

// clientEvents converts a list of stored events; the result is never nil so it
// marshals as [] as the spec wants.
func clientEvents(evs []persist.StoredEvent, dev Device) []json.RawMessage {
	return clientEventsAs(evs, dev, nil)
}

// clientEventsAs is clientEvents with each event's unsigned.membership from
// memberships (none when nil).
func clientEventsAs(evs []persist.StoredEvent, dev Device, memberships []string) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(evs))
	for i := range evs {
		m := ""
		if memberships != nil {
			m = memberships[i]
		}
		out = append(out, clientEventAs(&evs[i], dev, m))
	}
	return out
}
