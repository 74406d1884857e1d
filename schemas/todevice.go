package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
)

// ToDeviceVersion is the schema version of ToDeviceRecord written by this build.
const ToDeviceVersion = 1

// ToDeviceRecord is one message of the to_device stream: exactly one of Message (a
// message waiting in one device's inbox) and Txn (a transaction id a sending device
// used) is set.
type ToDeviceRecord struct {
	V       int              `json:"v"`
	Message *ToDeviceMessage `json:"message,omitempty"`
	Txn     *ToDeviceTxn     `json:"txn,omitempty"`
}

// ToDeviceMessage is a message for the device Device of the local user User.
type ToDeviceMessage struct {
	User    string          `json:"user"`
	Device  string          `json:"device"`
	Sender  string          `json:"sender"`
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

// ToDeviceTxn records that Sender's device Device sent the transaction Txn, so a retry
// of it delivers nothing twice.
type ToDeviceTxn struct {
	Sender string `json:"sender"`
	Device string `json:"device"`
	Txn    string `json:"txn"`
}

// DecodeToDevice parses a to_device record.
func DecodeToDevice(data []byte) (*ToDeviceRecord, error) {
	var r ToDeviceRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("to-device record: %w", err)
	}
	if r.V < 1 || r.V > ToDeviceVersion {
		return nil, fmt.Errorf("to-device record: unsupported version %d", r.V)
	}
	switch m, t := r.Message, r.Txn; {
	case (m == nil) == (t == nil):
		return nil, errors.New("to-device record: needs exactly one of message and txn")
	case m != nil && (m.User == "" || m.Device == "" || m.Sender == "" || m.Type == "" || !json.Valid(m.Content)):
		return nil, errors.New("to-device record: message without user, device, sender, type or content")
	case t != nil && (t.Sender == "" || t.Device == "" || t.Txn == ""):
		return nil, errors.New("to-device record: txn without sender, device or id")
	}
	return &r, nil
}

// ToDeviceRow is Synapse's to_device replication row, [entity]: the local user whose
// inbox changed (or, in Synapse, a remote server whose outbox did).
type ToDeviceRow struct{ Entity string }

func (r ToDeviceRow) MarshalJSON() ([]byte, error) { return json.Marshal([]string{r.Entity}) }
