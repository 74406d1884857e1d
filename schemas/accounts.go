package schemas

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
)

// AccountsVersion is the schema version of AccountsRecord written by this build.
const AccountsVersion = 1

// The kinds of accounts records. Each says what changed; the writer decided, before
// appending it, that the change is allowed (a free user ID, an existing device, ...),
// so projecting a record never refuses it.
const (
	// AccountUserCreated creates User with PasswordHash (none when empty) and, when
	// Device is set, its first device with DisplayName and TokenHash.
	AccountUserCreated = "user_created"
	// AccountPasswordChanged replaces User's PasswordHash (none when empty).
	AccountPasswordChanged = "password_changed"
	// AccountDeviceCreated creates User's Device with DisplayName and its first
	// access token TokenHash.
	AccountDeviceCreated = "device_created"
	// AccountTokenAdded makes TokenHash the access token of User's existing Device;
	// the device's earlier tokens stop working (a login as a known device_id).
	AccountTokenAdded = "token_added"
	// AccountDevicesDeleted deletes User's Devices with their access tokens.
	AccountDevicesDeleted = "devices_deleted"
	// AccountDeviceRenamed sets the DisplayName of User's Device.
	AccountDeviceRenamed = "device_renamed"
	// AccountProfileSet sets one Field of User's profile to Value (unset when nil).
	AccountProfileSet = "profile_set"
	// AccountFilterCreated stores User's Filter under FilterID.
	AccountFilterCreated = "filter_created"
	// AccountRoomForgotten records that User forgot Room as of the membership event
	// EventID.
	AccountRoomForgotten = "room_forgotten"
	// AccountAliasCreated points Alias at Room for its creator User (PUT /directory).
	AccountAliasCreated = "alias_created"
	// AccountAliasClaimed points Alias at Room, a room User is about to create
	// (createRoom's room_alias_name); it resolves once the room exists.
	AccountAliasClaimed = "alias_claimed"
	// AccountAliasReleased frees Alias if Room holds it: the room was not created.
	AccountAliasReleased = "alias_released"
	// AccountAliasDeleted frees Alias.
	AccountAliasDeleted = "alias_deleted"
	// AccountPusherSet sets User's Pusher, set by (and going with) Device. Unless
	// Append, every other user's pusher of the same app_id and pushkey goes.
	AccountPusherSet = "pusher_set"
	// AccountPusherDeleted deletes User's pusher of Pusher's app_id and pushkey.
	AccountPusherDeleted = "pusher_deleted"
	// AccountAdminSet makes User a server admin when Admin, or not.
	AccountAdminSet = "admin_set"
	// AccountRoomListed lists Room in the room directory when Public, or takes it out.
	AccountRoomListed = "room_listed"
	// AccountUserDeactivated deactivates User: no password, no devices (with their
	// tokens and pushers); the user ID stays taken. With Erase, the user's events are
	// shown redacted to those who were not in the room when they were sent.
	AccountUserDeactivated = "user_deactivated"
	// AccountMediaReserved reserves Media's ID for User until Media.Expires (an
	// asynchronous upload's POST /media/v1/create).
	AccountMediaReserved = "media_reserved"
	// AccountMediaUploaded stores Media, uploaded by User: its content is the file
	// named by Media.SHA256 in the media store, written before the record.
	AccountMediaUploaded = "media_uploaded"
	// AccountContentReported records User's report of Room, or of its event EventID,
	// with Reason and Score (Synapse's event and room reports).
	AccountContentReported = "content_reported"
	// AccountOpenIDTokenCreated gives User the OpenID token TokenHash, valid until
	// Expires (milliseconds), which other servers check through the federation API.
	AccountOpenIDTokenCreated = "openid_token_created"
	// AccountMediaDeleted deletes User's Media (its ID only), reserved or uploaded (the
	// admin API). Its file goes once no media names its content.
	AccountMediaDeleted = "media_deleted"
	// AccountRoomBlocked blocks Room (the admin API's room deletion, by User): local
	// users may not join, knock on or be invited to it.
	AccountRoomBlocked = "room_blocked"
)

// The profile fields an AccountProfileSet record may set, named as the client API and
// the profiles table name them.
const (
	ProfileDisplayName = "displayname"
	ProfileAvatarURL   = "avatar_url"
)

// AccountsRecord is one message of the accounts stream: one write's change, whole, so
// a write is applied entirely or not at all. Access tokens appear only as their
// SHA-256, as in Postgres.
type AccountsRecord struct {
	V    int    `json:"v"`
	Kind string `json:"kind"`
	// Write is the ID of the write that made the record: the same write handled again
	// (a gateway resending, a redelivery) is answered as the first time.
	Write string `json:"write"`
	// TS is the writer's clock, in milliseconds, when it made the record: the creation
	// time of what the record creates, so a replay rebuilds those columns too.
	TS           int64   `json:"ts"`
	User         string  `json:"user"`
	PasswordHash string  `json:"password_hash,omitempty"`
	Device       string  `json:"device,omitempty"`
	DisplayName  *string `json:"display_name,omitempty"`
	TokenHash    []byte  `json:"token_hash,omitempty"`
	// RefreshHash is the SHA-256 of the refresh token that goes with TokenHash, which
	// then expires at Expires (milliseconds); none for a token that does not expire.
	RefreshHash []byte          `json:"refresh_hash,omitempty"`
	Expires     int64           `json:"expires,omitempty"`
	Devices     []string        `json:"devices,omitempty"`
	Field       string          `json:"field,omitempty"`
	Value       *string         `json:"value,omitempty"`
	FilterID    int64           `json:"filter_id,omitempty"`
	Filter      json.RawMessage `json:"filter,omitempty"`
	Room        string          `json:"room,omitempty"`
	EventID     string          `json:"event_id,omitempty"`
	Alias       string          `json:"alias,omitempty"`
	Pusher      *Pusher         `json:"pusher,omitempty"`
	Append      bool            `json:"append,omitempty"`
	Media       *Media          `json:"media,omitempty"`
	Public      bool            `json:"public,omitempty"`
	// Admin, on user_created and admin_set, says whether User is a server admin.
	Admin bool `json:"admin,omitempty"`
	// Erase is a deactivation's erasure.
	Erase bool `json:"erase,omitempty"`
	// Reason and Score are a content report's.
	Reason string `json:"reason,omitempty"`
	Score  *int   `json:"score,omitempty"`
}

// Media is a local media item as the accounts stream records it. A reservation names
// only ID and Expires; an upload everything else.
type Media struct {
	ID          string `json:"id"`
	ContentType string `json:"content_type,omitempty"`
	UploadName  string `json:"upload_name,omitempty"`
	Size        int64  `json:"size,omitempty"`
	// SHA256 is the content's hash, in hex: the name of its file in the media store,
	// which identical uploads share.
	SHA256 string `json:"sha256,omitempty"`
	// Expires is when an unused reservation lapses, in milliseconds.
	Expires int64 `json:"expires,omitempty"`
	// Authenticated media is served only by the authenticated endpoints
	// (enable_authenticated_media was on when it was uploaded).
	Authenticated bool `json:"authenticated,omitempty"`
}

// ValidMediaID reports whether id can name local media: 1 to 255 characters of
// [A-Za-z0-9_-], so a media ID never names a path.
func ValidMediaID(id string) bool {
	if id == "" || len(id) > 255 {
		return false
	}
	for _, c := range []byte(id) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ValidSHA256 reports whether h is a SHA-256 in lower-case hex.
func ValidSHA256(h string) bool {
	if len(h) != 2*sha256.Size {
		return false
	}
	for _, c := range []byte(h) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Pusher is a pusher as POST /pushers/set gives it and GET /pushers shows it (the
// spec's fields). A deletion's record names only AppID and Pushkey.
type Pusher struct {
	Kind              string          `json:"kind"`
	AppID             string          `json:"app_id"`
	Pushkey           string          `json:"pushkey"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data,omitempty"`
}

// RevokesTokens reports whether the record takes access tokens of its user away: a
// device's token replaced, devices deleted, the user deactivated.
func (r *AccountsRecord) RevokesTokens() bool {
	switch r.Kind {
	case AccountTokenAdded, AccountDevicesDeleted, AccountUserDeactivated:
		return true
	}
	return false
}

// DecodeAccounts parses an accounts record strictly: unknown fields, a version this
// build does not know, or a field its kind needs missing are errors.
func DecodeAccounts(data []byte) (*AccountsRecord, error) {
	var r AccountsRecord
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("accounts record: %w", err)
	}
	if dec.More() {
		return nil, errors.New("accounts record: data after the record")
	}
	if r.V < 1 || r.V > AccountsVersion {
		return nil, fmt.Errorf("accounts record: unsupported version %d", r.V)
	}
	if r.Write == "" || r.User == "" {
		return nil, errors.New("accounts record: missing write or user")
	}
	token := len(r.TokenHash) == sha256.Size
	if r.RefreshHash != nil && (len(r.RefreshHash) != sha256.Size || !token || r.Expires <= 0) {
		return nil, errors.New("accounts record: a refresh token without its access token and expiry")
	}
	ok := false
	switch r.Kind {
	case AccountUserCreated:
		// The first device comes whole, with its token, or not at all.
		ok = (r.Device == "" && r.TokenHash == nil) || (r.Device != "" && token)
	case AccountPasswordChanged, AccountUserDeactivated, AccountAdminSet:
		ok = true
	case AccountDeviceCreated, AccountTokenAdded:
		ok = r.Device != "" && token
	case AccountDevicesDeleted:
		ok = len(r.Devices) > 0
	case AccountDeviceRenamed:
		ok = r.Device != "" && r.DisplayName != nil
	case AccountProfileSet:
		ok = r.Field == ProfileDisplayName || r.Field == ProfileAvatarURL
	case AccountFilterCreated:
		ok = r.FilterID >= 0 && json.Valid(r.Filter)
	case AccountRoomForgotten:
		ok = r.Room != "" && r.EventID != ""
	case AccountAliasCreated, AccountAliasClaimed, AccountAliasReleased:
		ok = r.Alias != "" && r.Room != ""
	case AccountAliasDeleted:
		ok = r.Alias != ""
	case AccountRoomListed, AccountContentReported, AccountRoomBlocked:
		ok = r.Room != ""
	case AccountOpenIDTokenCreated:
		ok = token && r.Expires > 0
	case AccountPusherSet:
		ok = r.Device != "" && r.Pusher != nil && r.Pusher.AppID != "" && r.Pusher.Pushkey != "" &&
			r.Pusher.Kind != "" && IsObject(r.Pusher.Data)
	case AccountPusherDeleted:
		ok = r.Pusher != nil && r.Pusher.AppID != "" && r.Pusher.Pushkey != ""
	case AccountMediaReserved:
		ok = r.Media != nil && ValidMediaID(r.Media.ID) && r.Media.Expires > 0
	case AccountMediaDeleted:
		ok = r.Media != nil && ValidMediaID(r.Media.ID)
	case AccountMediaUploaded:
		ok = r.Media != nil && ValidMediaID(r.Media.ID) && ValidSHA256(r.Media.SHA256) && r.Media.Size >= 0 &&
			r.Media.ContentType != ""
	default:
		return nil, fmt.Errorf("accounts record: unknown kind %q", r.Kind)
	}
	if !ok {
		return nil, fmt.Errorf("accounts record: %s without what it needs", r.Kind)
	}
	return &r, nil
}

// AccountsAnswer is what the writer answers to the write that made r, besides
// success: the devices deleted, the ID of a filter. It is made from the record alone,
// so a write handled again is answered from its stored record the same way.
func AccountsAnswer(r *AccountsRecord) json.RawMessage {
	var v any
	switch r.Kind {
	case AccountDevicesDeleted:
		v = DevicesDeletedAnswer{Deleted: r.Devices}
	case AccountFilterCreated:
		v = FilterAnswer{FilterID: r.FilterID}
	case AccountMediaReserved:
		v = MediaReservedAnswer{Expires: r.Media.Expires}
	default:
		return nil
	}
	data, _ := Marshal(v) // these types always marshal
	return data
}

// DevicesDeletedAnswer answers a deletion of devices with those that existed.
type DevicesDeletedAnswer struct {
	Deleted []string `json:"deleted"`
}

// MediaReservedAnswer answers a media reservation with when it lapses unused, in
// milliseconds.
type MediaReservedAnswer struct {
	Expires int64 `json:"expires"`
}

// FilterAnswer answers an uploaded filter with its ID.
type FilterAnswer struct {
	FilterID int64 `json:"filter_id"`
}
