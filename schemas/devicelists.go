package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
)

// DeviceListVersion is the schema version of DeviceListRecord written by this build.
const DeviceListVersion = 1

// Kinds of device_lists records. The stream is a change log: every record is kept, and
// replaying them in order rebuilds every end-to-end key table and key backup.
const (
	// DeviceKeysSet stores a device's signed identity keys (DeviceKeys).
	DeviceKeysSet = "device_keys"
	// OneTimeKeysAdded adds one-time keys of a device (Keys: "<algorithm>:<id>" -> key).
	OneTimeKeysAdded = "one_time_keys"
	// FallbackKeysSet replaces a device's fallback key of each algorithm in Keys, unused.
	FallbackKeysSet = "fallback_keys"
	// KeysClaimed takes one-time keys out and marks fallback keys used (Claimed).
	KeysClaimed = "claimed"
	// CrossSigningKeysSet replaces the user's cross-signing keys named in CrossSigning.
	CrossSigningKeysSet = "cross_signing"
	// SignaturesAdded stores signatures made by User (Signatures).
	SignaturesAdded = "signatures"
	// DeviceDeleted removes a device's keys, its one-time and fallback keys and the
	// signatures of it.
	DeviceDeleted = "device_deleted"
	// DeviceChanged records a change of a device that carries no keys (a new device,
	// a new display name), so other users fetch the device list again.
	DeviceChanged = "device_changed"
	// BackupVersionSet creates, updates or deletes one key backup version (Backup).
	BackupVersionSet = "backup_version"
	// BackupKeysSet stores session keys of a backup version (Backup.Version,
	// Backup.ETag, BackupKeys).
	BackupKeysSet = "backup_keys"
	// BackupKeysDeleted deletes session keys of a backup version, all of them or those
	// of Backup.Room (and Backup.Session).
	BackupKeysDeleted = "backup_keys_deleted"
)

// DeviceListRecord is one message of the device_lists stream: a change to the keys of
// one user (User), or to one of their key backups. Which fields are set depends on Kind.
type DeviceListRecord struct {
	V    int    `json:"v"`
	Kind string `json:"kind"`
	User string `json:"user"`
	// Device is the device concerned, for the kinds about one device.
	Device string `json:"device,omitempty"`
	// DeviceKeys is the device's keys object, in canonical JSON as verified.
	DeviceKeys json.RawMessage `json:"device_keys,omitempty"`
	// Keys are one-time or fallback keys by "<algorithm>:<key id>".
	Keys map[string]json.RawMessage `json:"keys,omitempty"`
	// Claimed are the keys a claim took.
	Claimed []ClaimedKey `json:"claimed,omitempty"`
	// CrossSigning are cross-signing keys by type (master, self_signing, user_signing).
	CrossSigning map[string]json.RawMessage `json:"cross_signing,omitempty"`
	// Signatures are signatures made by User.
	Signatures []KeySignature `json:"signatures,omitempty"`
	// Backup is the backup version a backup record concerns.
	Backup *BackupVersion `json:"backup,omitempty"`
	// BackupKeys are the session keys a BackupKeysSet record stores.
	BackupKeys []BackupKey `json:"backup_keys,omitempty"`
	// Changed lists the devices (or cross-signing public keys) whose change other
	// users must learn of; empty for records that change nobody's device list.
	Changed []string `json:"changed,omitempty"`
	// SignedUsers are other users whose master key User signed: only User learns of it.
	SignedUsers []string `json:"signed_users,omitempty"`
}

// ClaimedKey is one key handed out by a claim: a one-time key, which is gone, or a
// fallback key, which stays (marked used) until the device replaces it.
type ClaimedKey struct {
	Device   string `json:"device"`
	KeyID    string `json:"key_id"`
	Fallback bool   `json:"fallback,omitempty"`
}

// KeySignature is one signature by the record's user: of Target (a device ID or a
// cross-signing public key) of TargetUser, made with the key SigningKey.
type KeySignature struct {
	SigningKey string `json:"signing_key"`
	TargetUser string `json:"target_user"`
	Target     string `json:"target"`
	Signature  string `json:"signature"`
}

// BackupVersion is the state of one key backup version after the record.
type BackupVersion struct {
	Version   int64           `json:"version"`
	Algorithm string          `json:"algorithm,omitempty"`
	AuthData  json.RawMessage `json:"auth_data,omitempty"`
	ETag      int64           `json:"etag"`
	Deleted   bool            `json:"deleted,omitempty"`
	// Room and Session narrow a BackupKeysDeleted record.
	Room    string `json:"room,omitempty"`
	Session string `json:"session,omitempty"`
}

// BackupKey is one session key in a backup.
type BackupKey struct {
	Room              string          `json:"room"`
	Session           string          `json:"session"`
	FirstMessageIndex int64           `json:"first_message_index"`
	ForwardedCount    int64           `json:"forwarded_count"`
	IsVerified        bool            `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// DecodeDeviceList parses a device_lists record and checks what its kind needs.
func DecodeDeviceList(data []byte) (*DeviceListRecord, error) {
	var r DeviceListRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("device list record: %w", err)
	}
	if r.V < 1 || r.V > DeviceListVersion {
		return nil, fmt.Errorf("device list record: unsupported version %d", r.V)
	}
	if r.User == "" {
		return nil, errors.New("device list record: no user")
	}
	var ok bool
	switch r.Kind {
	case DeviceKeysSet:
		ok = r.Device != "" && json.Valid(r.DeviceKeys)
	case OneTimeKeysAdded, FallbackKeysSet:
		ok = r.Device != "" && len(r.Keys) > 0
	case KeysClaimed:
		ok = len(r.Claimed) > 0
	case CrossSigningKeysSet:
		ok = len(r.CrossSigning) > 0
	case SignaturesAdded:
		ok = len(r.Signatures) > 0
	case DeviceDeleted, DeviceChanged:
		ok = r.Device != ""
	case BackupVersionSet, BackupKeysDeleted:
		ok = r.Backup != nil
	case BackupKeysSet:
		ok = r.Backup != nil && len(r.BackupKeys) > 0
	default:
		return nil, fmt.Errorf("device list record: unknown kind %q", r.Kind)
	}
	if !ok {
		return nil, fmt.Errorf("device list record: %s record without its fields", r.Kind)
	}
	return &r, nil
}

// DeviceListRow is Synapse's device_lists replication row:
// [user_id, is_signature, hosts_calculated]. Signature rows name the user who signed.
// Ganglion has no federation, so there are never hosts left to calculate.
type DeviceListRow struct {
	User        string
	IsSignature bool
}

func (r DeviceListRow) MarshalJSON() ([]byte, error) {
	return json.Marshal([]any{r.User, r.IsSignature, true})
}
