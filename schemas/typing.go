package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// TypingVersion is the schema version of TypingRecord written by this build.
const TypingVersion = 1

// TypingRecord is one message of the typing stream: everyone typing in a room now. Each
// record replaces the room's previous one, as Synapse's typing row does, so a follower
// only ever needs a room's last record.
type TypingRecord struct {
	V     int      `json:"v"`
	Room  string   `json:"room"`
	Users []string `json:"users"`
}

// DecodeTyping parses a typing record.
func DecodeTyping(data []byte) (*TypingRecord, error) {
	var r TypingRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("typing record: %w", err)
	}
	if r.V < 1 || r.V > TypingVersion {
		return nil, fmt.Errorf("typing record: unsupported version %d", r.V)
	}
	if !strings.HasPrefix(r.Room, "!") {
		return nil, errors.New("typing record: missing room")
	}
	for _, u := range r.Users {
		if !strings.HasPrefix(u, "@") {
			return nil, fmt.Errorf("typing record: %q is not a user ID", u)
		}
	}
	if r.Users == nil {
		r.Users = []string{}
	}
	return &r, nil
}

// TypingRow is Synapse's typing replication row: [room_id, [user_id, ...]], the whole
// list of the room's typers.
type TypingRow struct {
	Room  string
	Users []string
}

func (r TypingRow) MarshalJSON() ([]byte, error) {
	users := r.Users
	if users == nil {
		users = []string{}
	}
	return Marshal([]any{r.Room, users})
}

// TypingEvent is an m.typing event as clients (in a room's ephemeral events, without
// room_id) and application services (with it) are sent it.
type TypingEvent struct {
	Type    string `json:"type"`
	RoomID  string `json:"room_id,omitempty"`
	Content struct {
		UserIDs []string `json:"user_ids"`
	} `json:"content"`
}

// NewTypingEvent is the m.typing event of a room's typers; room is "" in /sync.
func NewTypingEvent(room string, users []string) TypingEvent {
	ev := TypingEvent{Type: "m.typing", RoomID: room}
	ev.Content.UserIDs = users
	return ev
}
