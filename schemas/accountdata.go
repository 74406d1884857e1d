package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
)

// AccountDataVersion is the schema version of AccountDataRecord written by this build.
const AccountDataVersion = 1

// AccountDataRecord is one message of the account_data stream: the new value of one
// (user, room, type); Room is empty for global account data. Room tags are the
// content of type m.tag, as clients see them.
type AccountDataRecord struct {
	V       int             `json:"v"`
	User    string          `json:"user"`
	Room    string          `json:"room,omitempty"`
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

// DecodeAccountData parses an account_data record.
func DecodeAccountData(data []byte) (*AccountDataRecord, error) {
	var r AccountDataRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("account data record: %w", err)
	}
	if r.V < 1 || r.V > AccountDataVersion {
		return nil, fmt.Errorf("account data record: unsupported version %d", r.V)
	}
	if r.User == "" || r.Type == "" || !json.Valid(r.Content) {
		return nil, errors.New("account data record: missing user, type or content")
	}
	return &r, nil
}

// AccountDataRow is Synapse's account_data replication row:
// [user_id, room_id|null, data_type].
type AccountDataRow struct {
	User, Room, Type string
}

func (r AccountDataRow) MarshalJSON() ([]byte, error) {
	var room any
	if r.Room != "" {
		room = r.Room
	}
	return Marshal([]any{r.User, room, r.Type})
}
