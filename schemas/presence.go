package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Presence states a client may set (the spec's enum; Synapse's "busy" is an
// experiment behind a flag and is not accepted).
const (
	PresenceOnline      = "online"
	PresenceUnavailable = "unavailable"
	PresenceOffline     = "offline"
)

// ValidPresence reports whether s is a presence state a client may set.
func ValidPresence(s string) bool {
	return s == PresenceOnline || s == PresenceUnavailable || s == PresenceOffline
}

// PresenceVersion is the schema version of PresenceRecord written by this build.
const PresenceVersion = 1

// PresenceRecord is one message of the presence stream: a user's presence as the
// presence writer last announced it, with Synapse's fields (times in milliseconds since
// the epoch, 0 for never).
type PresenceRecord struct {
	V                      int     `json:"v"`
	User                   string  `json:"user"`
	State                  string  `json:"state"`
	LastActiveTS           int64   `json:"last_active_ts"`
	LastFederationUpdateTS int64   `json:"last_federation_update_ts"`
	LastUserSyncTS         int64   `json:"last_user_sync_ts"`
	StatusMsg              *string `json:"status_msg,omitempty"`
	CurrentlyActive        bool    `json:"currently_active"`
}

// DecodePresence parses a presence record.
func DecodePresence(data []byte) (*PresenceRecord, error) {
	var r PresenceRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("presence record: %w", err)
	}
	if r.V < 1 || r.V > PresenceVersion {
		return nil, fmt.Errorf("presence record: unsupported version %d", r.V)
	}
	if r.User == "" || !ValidPresence(r.State) {
		return nil, errors.New("presence record: missing user or invalid state")
	}
	return &r, nil
}

// PresenceRow is Synapse's presence replication row: [user_id, state, last_active_ts,
// last_federation_update_ts, last_user_sync_ts, status_msg|null, currently_active].
type PresenceRow struct{ *PresenceRecord }

func (r PresenceRow) MarshalJSON() ([]byte, error) {
	return Marshal([]any{r.User, r.State, r.LastActiveTS, r.LastFederationUpdateTS, r.LastUserSyncTS,
		r.StatusMsg, r.CurrentlyActive})
}

// UserSyncVersion is the schema version of UserSync written by this build.
const UserSyncVersion = 1

// Kinds of UserSyncDevice notices.
const (
	// UserSyncStart: a /sync of the device started here, with set_presence State
	// (online or unavailable). Sent on the device's first sync here, when State
	// changes, and otherwise at most once per relay interval.
	UserSyncStart = "sync"
	// UserSyncAlive: a /sync of the device is still open here.
	UserSyncAlive = "alive"
	// UserSyncStop: no /sync of the device has been open here for AgoMS.
	UserSyncStop = "stop"
)

// MaxUserSyncDevices bounds the devices of one notice, so a notice stays far below
// NATS's message size.
const MaxUserSyncDevices = 1024

// UserSync tells the presence writer which users are syncing on a process (Synapse's
// USER_SYNC and CLEAR_USER_SYNC), over core NATS, fire and forget.
type UserSync struct {
	V int `json:"v"`
	// Process identifies one run of a process (random at each start), as Synapse's
	// instance id does: what one run reported is never confused with the next's.
	Process string           `json:"process"`
	Devices []UserSyncDevice `json:"devices,omitempty"`
	// Clear: the process is stopping, and none of its syncs remain open (Synapse's
	// CLEAR_USER_SYNC).
	Clear bool `json:"clear,omitempty"`
}

// UserSyncDevice is what changed for one device.
type UserSyncDevice struct {
	User   string `json:"user"`
	Device string `json:"device"`
	Kind   string `json:"kind"`
	State  string `json:"state,omitempty"`
	AgoMS  int64  `json:"ago_ms,omitempty"`
}

// DecodeUserSync parses and validates a notice from the bus.
func DecodeUserSync(data []byte) (*UserSync, error) {
	var n UserSync
	if err := json.Unmarshal(data, &n); err != nil {
		return nil, fmt.Errorf("user sync notice: %w", err)
	}
	if n.V < 1 || n.V > UserSyncVersion {
		return nil, fmt.Errorf("user sync notice: unsupported version %d", n.V)
	}
	if n.Process == "" || len(n.Devices) > MaxUserSyncDevices {
		return nil, errors.New("user sync notice: no process, or too many devices")
	}
	for _, d := range n.Devices {
		if d.User == "" || !StorableText(d.User) || !StorableText(d.Device) {
			return nil, errors.New("user sync notice: bad user or device")
		}
		switch d.Kind {
		case UserSyncStart:
			if d.State != PresenceOnline && d.State != PresenceUnavailable {
				return nil, fmt.Errorf("user sync notice: a sync cannot set presence %q", d.State)
			}
		case UserSyncAlive:
		case UserSyncStop:
			if d.AgoMS < 0 {
				return nil, errors.New("user sync notice: negative age")
			}
		default:
			return nil, fmt.Errorf("user sync notice: unknown kind %q", d.Kind)
		}
	}
	return &n, nil
}

// PresenceContent is a presence as clients see it (Synapse's
// format_user_presence_state): last_active_ago when the user was ever active, the
// status message when there is one, currently_active only while online.
type PresenceContent struct {
	Presence        string  `json:"presence"`
	LastActiveAgo   *int64  `json:"last_active_ago,omitempty"`
	StatusMsg       *string `json:"status_msg,omitempty"`
	CurrentlyActive *bool   `json:"currently_active,omitempty"`
}

// FormatPresence is rec as clients see it at now.
func FormatPresence(rec *PresenceRecord, now time.Time) PresenceContent {
	c := PresenceContent{Presence: rec.State}
	if rec.LastActiveTS != 0 {
		ago := max(now.UnixMilli()-rec.LastActiveTS, 0)
		c.LastActiveAgo = &ago
	}
	if rec.StatusMsg != nil && *rec.StatusMsg != "" {
		c.StatusMsg = rec.StatusMsg
	}
	if rec.State == PresenceOnline {
		active := rec.CurrentlyActive
		c.CurrentlyActive = &active
	}
	return c
}

// PresenceEvent is an m.presence event as clients and application services are sent it.
type PresenceEvent struct {
	Type    string          `json:"type"`
	Sender  string          `json:"sender"`
	Content PresenceContent `json:"content"`
}

// NewPresenceEvent is rec's m.presence event at now.
func NewPresenceEvent(rec *PresenceRecord, now time.Time) PresenceEvent {
	return PresenceEvent{Type: "m.presence", Sender: rec.User, Content: FormatPresence(rec, now)}
}
