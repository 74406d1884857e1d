package userstreams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/e2ekeys"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// Operations of the device_lists stream. Every write is keyed by the user whose keys
// or backups it changes, so one writer decides all of a user's changes in order: a
// claim of a user's keys goes to that user's writer, which is what makes a one-time
// key handed out once.
const (
	// OpKeysUpload stores the requesting device's keys: KeysUpload.
	OpKeysUpload = "keys_upload"
	// OpKeysClaim claims one key per device of the write's key user: KeysClaim. The
	// answer's body is ClaimedKeys.
	OpKeysClaim = "keys_claim"
	// OpCrossSigningUpload replaces cross-signing keys: CrossSigningUpload.
	OpCrossSigningUpload = "cross_signing_upload"
	// OpSignaturesUpload stores signatures the user made: SignaturesUpload. The answer's
	// body is {"failures": ...}.
	OpSignaturesUpload = "signatures_upload"
	// OpDeviceDeleted removes a device's keys and records the change: DeviceOp.
	OpDeviceDeleted = "device_deleted"
	// OpDeviceChanged records a change of a device without keys: DeviceOp.
	OpDeviceChanged = "device_changed"
	// Key backup operations: BackupOp. Create answers {"version"}, the key
	// operations {"etag", "count"}.
	OpBackupCreate     = "backup_create"
	OpBackupUpdate     = "backup_update"
	OpBackupDelete     = "backup_delete"
	OpBackupKeysPut    = "backup_keys_put"
	OpBackupKeysDelete = "backup_keys_delete"
)

// KeysUpload is the body of OpKeysUpload: keys the gateway has checked (signatures
// verified, canonical JSON) for the write's device.
type KeysUpload struct {
	DeviceKeys   json.RawMessage            `json:"device_keys,omitempty"`
	OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys,omitempty"`
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys,omitempty"`
}

// KeysClaim is the body of OpKeysClaim: the algorithm to claim, by device.
type KeysClaim struct {
	Devices map[string]string `json:"devices"`
}

// ClaimedKeys is the answer to OpKeysClaim: by device, the claimed key by key ID.
type ClaimedKeys map[string]map[string]json.RawMessage

// CrossSigningUpload is the body of OpCrossSigningUpload, the keys as uploaded.
type CrossSigningUpload struct {
	Master      json.RawMessage `json:"master_key,omitempty"`
	SelfSigning json.RawMessage `json:"self_signing_key,omitempty"`
	UserSigning json.RawMessage `json:"user_signing_key,omitempty"`
}

// SignaturesUpload is the body of OpSignaturesUpload: by user, by key ID (a device ID
// or a cross-signing public key), the signed key object.
type SignaturesUpload map[string]map[string]json.RawMessage

// DeviceOp is the body of OpDeviceDeleted and OpDeviceChanged: the user's devices
// deleted or changed.
type DeviceOp struct {
	Devices []string `json:"devices"`
}

// BackupOp is the body of the key backup operations. Version is the client's version
// string ("" for the current version where that is allowed).
type BackupOp struct {
	Version   string              `json:"version,omitempty"`
	Algorithm string              `json:"algorithm,omitempty"`
	AuthData  json.RawMessage     `json:"auth_data,omitempty"`
	Keys      []schemas.BackupKey `json:"keys,omitempty"`
	Room      string              `json:"room,omitempty"`
	Session   string              `json:"session,omitempty"`
}

// BackupKeysAnswer is the answer of the key backup key operations.
type BackupKeysAnswer struct {
	ETag  string `json:"etag"`
	Count int64  `json:"count"`
}

// CodeWrongRoomKeysVersion refuses a backup write to a version that is not the
// current one; the gateway adds current_version to the error.
const CodeWrongRoomKeysVersion = "M_WRONG_ROOM_KEYS_VERSION"

// overlayPos is where the positions of a batch's records start inside Prepare's
// transaction: above any real position, so the projection orders them after
// everything stored, as they will be.
const overlayPos = uint64(1) << 62

// DeviceLists is the device_lists stream: a change log of devices' keys, one-time and
// fallback keys, cross-signing keys and signatures, device-list changes and key
// backups. Prepare decides each write against the projection inside a transaction in
// which it also projects the records of the writes before it, then rolls back: later
// writes of a batch see earlier ones through the same code that projects them.
type DeviceLists struct {
	DB *persist.DB
}

func (*DeviceLists) Name() string { return schemas.StreamDeviceLists }

// preparing is one batch being decided.
type preparing struct {
	d     *DeviceLists
	tx    pgx.Tx
	store e2ekeys.Store
	pos   uint64
	// wake caches the wake keys of users' device-list changes for the batch.
	wake map[string][]string
}

func (d *DeviceLists) Prepare(ctx context.Context, batch []*schemas.StreamWrite) ([]Outcome, error) {
	tx, err := d.DB.Pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	p := &preparing{d: d, tx: tx, store: e2ekeys.Store{DB: tx}, pos: overlayPos, wake: map[string][]string{}}
	out := make([]Outcome, len(batch))
	for i, w := range batch {
		o, err := p.decide(ctx, w)
		if err != nil {
			return nil, err
		}
		out[i] = o
	}
	return out, nil
}

// decide is one write's outcome; its records are projected into p.tx.
func (p *preparing) decide(ctx context.Context, w *schemas.StreamWrite) (Outcome, error) {
	badBody := Refuse(http.StatusBadRequest, "M_BAD_JSON", "malformed %s write", w.Op)
	switch w.Op {
	case OpKeysUpload:
		var b KeysUpload
		if json.Unmarshal(w.Body, &b) != nil || w.Device == "" {
			return badBody, nil
		}
		return p.keysUpload(ctx, w.User, w.Device, &b)
	case OpKeysClaim:
		var b KeysClaim
		if json.Unmarshal(w.Body, &b) != nil {
			return badBody, nil
		}
		return p.claim(ctx, w.Key, b.Devices)
	case OpCrossSigningUpload:
		var b CrossSigningUpload
		if json.Unmarshal(w.Body, &b) != nil {
			return badBody, nil
		}
		return p.crossSigning(ctx, w.User, &b)
	case OpSignaturesUpload:
		var b SignaturesUpload
		if json.Unmarshal(w.Body, &b) != nil {
			return badBody, nil
		}
		return p.signatures(ctx, w.User, b)
	case OpDeviceDeleted, OpDeviceChanged:
		var b DeviceOp
		if json.Unmarshal(w.Body, &b) != nil || slices.Contains(b.Devices, "") {
			return badBody, nil
		}
		kind := schemas.DeviceChanged
		if w.Op == OpDeviceDeleted {
			kind = schemas.DeviceDeleted
		}
		recs := make([]*schemas.DeviceListRecord, len(b.Devices))
		for i, d := range b.Devices {
			recs[i] = &schemas.DeviceListRecord{Kind: kind, User: w.Key, Device: d, Changed: []string{d}}
		}
		return p.outcome(ctx, nil, recs...)
	case OpBackupCreate, OpBackupUpdate, OpBackupDelete, OpBackupKeysPut, OpBackupKeysDelete:
		var b BackupOp
		if json.Unmarshal(w.Body, &b) != nil {
			return badBody, nil
		}
		return p.backup(ctx, w.User, w.Op, &b)
	}
	return Refuse(http.StatusBadRequest, "M_UNRECOGNIZED", "unknown device_lists operation %q", w.Op), nil
}

// outcome projects recs into the batch's transaction and returns them as the write's
// records, with answer as its body.
func (p *preparing) outcome(ctx context.Context, answer any, recs ...*schemas.DeviceListRecord) (Outcome, error) {
	var o Outcome
	if answer != nil {
		body, err := schemas.Marshal(answer)
		if err != nil {
			return o, err
		}
		o.Answer = &schemas.IntentResult{Body: body}
	}
	for _, r := range recs {
		r.V = schemas.DeviceListVersion
		p.pos++
		if err := e2ekeys.Project(ctx, p.tx, []*schemas.DeviceListRecord{r}, []uint64{p.pos}); err != nil {
			return o, err
		}
		data, err := schemas.Marshal(r)
		if err != nil {
			return o, err
		}
		wake := []string{r.User}
		if len(r.Changed) > 0 {
			if wake, err = p.wakeKeys(ctx, r.User); err != nil {
				return o, err
			}
		}
		o.Records = append(o.Records, Record{Key: []string{r.User}, Data: data, Wake: wake})
	}
	return o, nil
}

// wakeKeys are whom a change of user's device list concerns: the user and everyone
// sharing a room with them.
func (p *preparing) wakeKeys(ctx context.Context, user string) ([]string, error) {
	if keys, ok := p.wake[user]; ok {
		return keys, nil
	}
	rooms, err := p.d.DB.RoomsOfUser(ctx, user, "join")
	if err != nil {
		return nil, err
	}
	keys := roomsAndUser(user, rooms)
	p.wake[user] = keys
	return keys, nil
}

// keysUpload stores a device's keys: identity keys that are new or unchanged (a device
// may not change them), one-time keys not stored yet (a key ID already stored must be
// the same key), and fallback keys that differ from the stored ones.
func (p *preparing) keysUpload(ctx context.Context, user, device string, b *KeysUpload) (Outcome, error) {
	var recs []*schemas.DeviceListRecord
	if b.DeviceKeys != nil {
		stored, err := p.store.DeviceKeys(ctx, user, device)
		switch {
		case errors.Is(err, e2ekeys.ErrNotFound):
			recs = append(recs, &schemas.DeviceListRecord{Kind: schemas.DeviceKeysSet, User: user, Device: device,
				DeviceKeys: b.DeviceKeys, Changed: []string{device}})
		case err != nil:
			return Outcome{}, err
		case string(stored) != string(b.DeviceKeys):
			if !sameIdentity(stored, b.DeviceKeys) {
				return Refuse(http.StatusBadRequest, "M_INVALID_PARAM",
					"Device %s already has different identity keys; they cannot be changed", device), nil
			}
			recs = append(recs, &schemas.DeviceListRecord{Kind: schemas.DeviceKeysSet, User: user, Device: device,
				DeviceKeys: b.DeviceKeys, Changed: []string{device}})
		}
	}
	if len(b.OneTimeKeys) > 0 {
		ids := make([]string, 0, len(b.OneTimeKeys))
		for id := range b.OneTimeKeys {
			ids = append(ids, id)
		}
		existing, err := p.store.OneTimeKeys(ctx, user, device, ids)
		if err != nil {
			return Outcome{}, err
		}
		added := map[string]json.RawMessage{}
		for id, key := range b.OneTimeKeys {
			old, ok := existing[id]
			switch {
			case !ok:
				added[id] = key
			case !sameKey(old, key):
				return Refuse(http.StatusBadRequest, "M_UNKNOWN", "One time key %s already exists", id), nil
			}
		}
		if len(added) > 0 {
			recs = append(recs, &schemas.DeviceListRecord{Kind: schemas.OneTimeKeysAdded, User: user, Device: device, Keys: added})
		}
	}
	if len(b.FallbackKeys) > 0 {
		stored, err := p.store.FallbackKeys(ctx, user, device)
		if err != nil {
			return Outcome{}, err
		}
		changed := map[string]json.RawMessage{}
		for id, key := range b.FallbackKeys {
			// The same key again must not make a used key unused.
			if old, ok := stored[id]; !ok || string(old) != string(key) {
				changed[id] = key
			}
		}
		if len(changed) > 0 {
			recs = append(recs, &schemas.DeviceListRecord{Kind: schemas.FallbackKeysSet, User: user, Device: device, Keys: changed})
		}
	}
	return p.outcome(ctx, nil, recs...)
}

// sameIdentity reports whether two device keys objects carry the same keys.
func sameIdentity(a, b json.RawMessage) bool {
	var ka, kb DeviceKeys
	if json.Unmarshal(a, &ka) != nil || json.Unmarshal(b, &kb) != nil || len(ka.Keys) != len(kb.Keys) {
		return false
	}
	for id, k := range ka.Keys {
		if kb.Keys[id] != k {
			return false
		}
	}
	return true
}

// claim hands out, for each device, its oldest one-time key of the algorithm, or else
// its fallback key, which stays until the device replaces it.
func (p *preparing) claim(ctx context.Context, user string, devices map[string]string) (Outcome, error) {
	answer := ClaimedKeys{}
	rec := &schemas.DeviceListRecord{Kind: schemas.KeysClaimed, User: user}
	// In a stable order, so a retried batch claims the same keys.
	names := make([]string, 0, len(devices))
	for d := range devices {
		names = append(names, d)
	}
	sort.Strings(names)
	for _, device := range names {
		alg := devices[device]
		id, key, err := p.store.OldestOneTimeKey(ctx, user, device, alg)
		fallback := errors.Is(err, e2ekeys.ErrNotFound)
		if fallback {
			id, key, err = p.store.FallbackKey(ctx, user, device, alg)
			if errors.Is(err, e2ekeys.ErrNotFound) {
				continue
			}
		}
		if err != nil {
			return Outcome{}, err
		}
		answer[device] = map[string]json.RawMessage{id: key}
		rec.Claimed = append(rec.Claimed, schemas.ClaimedKey{Device: device, KeyID: id, Fallback: fallback})
	}
	if len(rec.Claimed) == 0 {
		return p.outcome(ctx, answer)
	}
	return p.outcome(ctx, answer, rec)
}

// crossSigning stores cross-signing keys after checking them: the self-signing and
// user-signing keys must be signed by the master key uploaded with them or stored.
func (p *preparing) crossSigning(ctx context.Context, user string, b *CrossSigningUpload) (Outcome, error) {
	keys := map[string]json.RawMessage{}
	var changed, pubs []string
	var masterPub string
	if b.Master != nil {
		pub, canonical, err := CheckCrossSigningKey(b.Master, user, e2ekeys.Master, "")
		if err != nil {
			return refuseKeyError(err), nil
		}
		masterPub, keys[e2ekeys.Master] = pub, canonical
		changed, pubs = append(changed, pub), append(pubs, pub)
	} else {
		stored, err := p.store.CrossSigningKey(ctx, user, e2ekeys.Master)
		if errors.Is(err, e2ekeys.ErrNotFound) {
			return Refuse(http.StatusBadRequest, "M_MISSING_PARAM", "No master key available"), nil
		}
		if err != nil {
			return Outcome{}, err
		}
		pub, ok := e2ekeys.PublicKey(stored)
		if !ok {
			return Outcome{}, fmt.Errorf("stored master key of %s has no public key", user)
		}
		masterPub = pub
	}
	for _, k := range []struct {
		typ string
		raw json.RawMessage
	}{{e2ekeys.SelfSigning, b.SelfSigning}, {e2ekeys.UserSigning, b.UserSigning}} {
		if k.raw == nil {
			continue
		}
		pub, canonical, err := CheckCrossSigningKey(k.raw, user, k.typ, masterPub)
		if err != nil {
			return refuseKeyError(err), nil
		}
		keys[k.typ] = canonical
		pubs = append(pubs, pub)
		if k.typ == e2ekeys.SelfSigning {
			changed = append(changed, pub)
		}
	}
	if len(keys) == 0 {
		return p.outcome(ctx, nil)
	}
	// A cross-signing key's public key names it where a device ID would (signatures
	// uploads), so it may not be one of the user's devices.
	devices, err := p.d.DB.Devices(ctx, user)
	if err != nil {
		return Outcome{}, err
	}
	for _, dev := range devices {
		for _, pub := range pubs {
			if dev.DeviceID == pub {
				return Refuse(http.StatusForbidden, "M_FORBIDDEN", "Key ID in use"), nil
			}
		}
	}
	rec := &schemas.DeviceListRecord{Kind: schemas.CrossSigningKeysSet, User: user, CrossSigning: keys, Changed: changed}
	if keys[e2ekeys.UserSigning] != nil {
		// Only the user learns of their own user-signing key.
		rec.SignedUsers = []string{user}
	}
	return p.outcome(ctx, nil, rec)
}

// signatureFailure is one entry of a signatures upload's failures, in Synapse's form
// (status, errcode, message) with the spec's error beside it.
type signatureFailure struct {
	Status  int    `json:"status"`
	Code    string `json:"errcode"`
	Message string `json:"message"`
	Error   string `json:"error"`
}

func failureOf(err error) signatureFailure {
	var ke *KeyError
	if !errors.As(err, &ke) {
		ke = keyErrorf(http.StatusBadRequest, "M_INVALID_PARAM", "%s", err.Error())
	}
	return signatureFailure{Status: ke.Status, Code: ke.Code, Message: ke.Msg, Error: ke.Msg}
}

var (
	errUnknownDevice = keyErrorf(http.StatusNotFound, "M_NOT_FOUND", "Unknown device")
	errKeyMismatch   = keyErrorf(http.StatusBadRequest, "M_UNKNOWN", "Key does not match")
)

// signatures stores the signatures user made that check out, and answers the others
// as failures: of the user's own devices by their self-signing key, of their master key
// by their devices, and of other users' master keys by their user-signing key.
func (p *preparing) signatures(ctx context.Context, user string, b SignaturesUpload) (Outcome, error) {
	failures := map[string]map[string]signatureFailure{}
	fail := func(target, id string, err error) {
		if failures[target] == nil {
			failures[target] = map[string]signatureFailure{}
		}
		failures[target][id] = failureOf(err)
	}
	var recs []*schemas.DeviceListRecord
	if own := b[user]; len(own) > 0 {
		sigs, err := p.ownSignatures(ctx, user, own, fail)
		if err != nil {
			return Outcome{}, err
		}
		if len(sigs) > 0 {
			rec := &schemas.DeviceListRecord{Kind: schemas.SignaturesAdded, User: user, Signatures: sigs}
			for _, s := range sigs {
				rec.Changed = append(rec.Changed, s.Target)
			}
			recs = append(recs, rec)
		}
	}
	var others []schemas.KeySignature
	var signed []string
	targets := make([]string, 0, len(b))
	for t := range b {
		if t != user {
			targets = append(targets, t)
		}
	}
	sort.Strings(targets)
	if len(targets) > 0 {
		_, uskPub, err := p.crossSigningPub(ctx, user, e2ekeys.UserSigning)
		if err != nil {
			var ke *KeyError
			if !errors.As(err, &ke) {
				return Outcome{}, err
			}
			for _, t := range targets {
				for id := range b[t] {
					fail(t, id, err)
				}
			}
			targets = nil
		}
		for _, t := range targets {
			sig, err := p.otherSignature(ctx, user, uskPub, t, b[t], fail)
			if err != nil {
				return Outcome{}, err
			}
			if sig != nil {
				others = append(others, *sig)
				signed = append(signed, t)
			}
		}
	}
	if len(others) > 0 {
		recs = append(recs, &schemas.DeviceListRecord{Kind: schemas.SignaturesAdded, User: user, Signatures: others, SignedUsers: signed})
	}
	return p.outcome(ctx, map[string]any{"failures": failures}, recs...)
}

// crossSigningPub returns a user's stored cross-signing key of a type and its public
// key, or a 404 KeyError when there is none.
func (p *preparing) crossSigningPub(ctx context.Context, user, typ string) (json.RawMessage, string, error) {
	key, err := p.store.CrossSigningKey(ctx, user, typ)
	if errors.Is(err, e2ekeys.ErrNotFound) {
		return nil, "", keyErrorf(http.StatusNotFound, "M_NOT_FOUND", "No %s key found for %s", typ, user)
	}
	if err != nil {
		return nil, "", err
	}
	pub, ok := e2ekeys.PublicKey(key)
	if !ok {
		return nil, "", fmt.Errorf("stored %s key of %s has no public key", typ, user)
	}
	return key, pub, nil
}

// ownSignatures checks signatures of the user's own keys.
func (p *preparing) ownSignatures(ctx context.Context, user string, own map[string]json.RawMessage, fail func(string, string, error)) ([]schemas.KeySignature, error) {
	_, sskPub, err := p.crossSigningPub(ctx, user, e2ekeys.SelfSigning)
	var master json.RawMessage
	var masterPub string
	if err == nil {
		master, masterPub, err = p.crossSigningPub(ctx, user, e2ekeys.Master)
	}
	var devices map[string]json.RawMessage
	if err == nil {
		if devices, err = p.store.UserDeviceKeys(ctx, user); err == nil && len(devices) == 0 {
			err = keyErrorf(http.StatusNotFound, "M_NOT_FOUND", "No device keys found")
		}
	}
	if err != nil {
		var ke *KeyError
		if !errors.As(err, &ke) {
			return nil, err
		}
		for id := range own {
			fail(user, id, err)
		}
		return nil, nil
	}
	sskID := "ed25519:" + sskPub
	var out []schemas.KeySignature
	ids := make([]string, 0, len(own))
	for id := range own {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		signed := own[id]
		var obj struct {
			Signatures map[string]map[string]string `json:"signatures"`
		}
		if json.Unmarshal(signed, &obj) != nil || obj.Signatures[user] == nil {
			fail(user, id, errInvalidSignature)
			continue
		}
		if id == masterPub {
			// Devices signing the master key: every signature must check out.
			if !sameKey(signed, master) {
				fail(user, id, errKeyMismatch)
				continue
			}
			var sigs []schemas.KeySignature
			var bad error
			for keyID, sig := range obj.Signatures[user] {
				var dk DeviceKeys
				dev := keyIDName(keyID)
				if raw, ok := devices[dev]; !ok || json.Unmarshal(raw, &dk) != nil || dk.Keys[keyID] == "" {
					bad = errInvalidSignature
					break
				}
				if err := VerifySignature(signed, user, keyID, dk.Keys[keyID]); err != nil {
					bad = err
					break
				}
				sigs = append(sigs, schemas.KeySignature{SigningKey: keyID, TargetUser: user, Target: masterPub, Signature: sig})
			}
			if bad != nil {
				fail(user, id, bad)
				continue
			}
			out = append(out, sigs...)
			continue
		}
		sig, ok := obj.Signatures[user][sskID]
		if !ok {
			fail(user, id, errInvalidSignature)
			continue
		}
		stored, ok := devices[id]
		if !ok {
			fail(user, id, errUnknownDevice)
			continue
		}
		if has, err := p.store.HasSignature(ctx, user, sskID, user, id); err != nil {
			return nil, err
		} else if has {
			// Already signed: the same signature again changes nothing.
			continue
		}
		if !sameKey(signed, stored) {
			fail(user, id, errKeyMismatch)
			continue
		}
		if err := VerifySignature(signed, user, sskID, sskPub); err != nil {
			fail(user, id, err)
			continue
		}
		out = append(out, schemas.KeySignature{SigningKey: sskID, TargetUser: user, Target: id, Signature: sig})
	}
	return out, nil
}

// otherSignature checks the signature of another user's master key by the user's
// user-signing key; nil when there is nothing to store.
func (p *preparing) otherSignature(ctx context.Context, user, uskPub, target string, keys map[string]json.RawMessage, fail func(string, string, error)) (*schemas.KeySignature, error) {
	master, masterPub, err := p.crossSigningPub(ctx, target, e2ekeys.Master)
	if err == nil {
		if _, ok := keys[masterPub]; !ok {
			err = errUnknownDevice
		}
	}
	if err != nil {
		var ke *KeyError
		if !errors.As(err, &ke) {
			return nil, err
		}
		for id := range keys {
			fail(target, id, err)
		}
		return nil, nil
	}
	for id := range keys {
		if id != masterPub {
			fail(target, id, errUnknownDevice)
		}
	}
	uskID := "ed25519:" + uskPub
	if has, err := p.store.HasSignature(ctx, user, uskID, target, masterPub); err != nil || has {
		return nil, err
	}
	signed := keys[masterPub]
	var obj struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	_ = json.Unmarshal(signed, &obj)
	sig, ok := obj.Signatures[user][uskID]
	switch {
	case !ok:
		fail(target, masterPub, errInvalidSignature)
		return nil, nil
	case !sameKey(signed, master):
		fail(target, masterPub, errKeyMismatch)
		return nil, nil
	}
	if err := VerifySignature(signed, user, uskID, uskPub); err != nil {
		fail(target, masterPub, err)
		return nil, nil
	}
	return &schemas.KeySignature{SigningKey: uskID, TargetUser: target, Target: masterPub, Signature: sig}, nil
}

// keyIDName is the part of a key ID after its algorithm.
func keyIDName(keyID string) string {
	_, name, _ := e2ekeys.SplitKeyID(keyID)
	return name
}

// errNoBackup answers a backup write naming a version that does not exist.
func errNoBackup(version string) Outcome {
	return Refuse(http.StatusNotFound, "M_NOT_FOUND", "Unknown backup version %q", version)
}

// backup runs one key backup operation.
func (p *preparing) backup(ctx context.Context, user, op string, b *BackupOp) (Outcome, error) {
	if op == OpBackupCreate {
		last, err := p.store.LastBackupVersion(ctx, user)
		if err != nil {
			return Outcome{}, err
		}
		v := last + 1
		return p.outcome(ctx, map[string]string{"version": strconv.FormatInt(v, 10)}, &schemas.DeviceListRecord{
			Kind: schemas.BackupVersionSet, User: user,
			Backup: &schemas.BackupVersion{Version: v, Algorithm: b.Algorithm, AuthData: b.AuthData}})
	}
	var cur e2ekeys.Backup
	var err error
	switch {
	case op == OpBackupKeysPut:
		// Keys go to the current version only.
		cur, err = p.store.CurrentBackup(ctx, user)
		if err == nil && strconv.FormatInt(cur.Version, 10) != b.Version {
			n, perr := strconv.ParseInt(b.Version, 10, 64)
			if perr == nil {
				if _, err = p.store.BackupVersion(ctx, user, n); err == nil {
					return Refuse(http.StatusForbidden, CodeWrongRoomKeysVersion, "Wrong room_keys version"), nil
				}
			} else {
				err = e2ekeys.ErrNotFound
			}
		}
	case b.Version == "" && op == OpBackupDelete:
		cur, err = p.store.CurrentBackup(ctx, user)
	default:
		n, perr := strconv.ParseInt(b.Version, 10, 64)
		if perr != nil {
			return errNoBackup(b.Version), nil
		}
		cur, err = p.store.BackupVersion(ctx, user, n)
		if errors.Is(err, e2ekeys.ErrNotFound) && op == OpBackupDelete {
			// Deleting a deleted version again succeeds, as in Synapse.
			gone, derr := p.store.DeletedBackupVersion(ctx, user, n)
			if derr != nil {
				return Outcome{}, derr
			}
			if gone {
				return p.outcome(ctx, struct{}{})
			}
		}
	}
	if errors.Is(err, e2ekeys.ErrNotFound) {
		return errNoBackup(b.Version), nil
	}
	if err != nil {
		return Outcome{}, err
	}
	version := &schemas.BackupVersion{Version: cur.Version, Algorithm: cur.Algorithm, AuthData: cur.AuthData, ETag: cur.ETag}
	rec := &schemas.DeviceListRecord{Kind: schemas.BackupVersionSet, User: user, Backup: version}
	switch op {
	case OpBackupUpdate:
		if b.Algorithm != cur.Algorithm {
			return Refuse(http.StatusBadRequest, "M_INVALID_PARAM", "Algorithm does not match"), nil
		}
		version.AuthData = b.AuthData
		return p.outcome(ctx, struct{}{}, rec)
	case OpBackupDelete:
		version.Deleted = true
		return p.outcome(ctx, struct{}{}, rec)
	case OpBackupKeysDelete:
		version.ETag++
		version.Room, version.Session = b.Room, b.Session
		rec.Kind = schemas.BackupKeysDeleted
		return p.backupKeysOutcome(ctx, user, version, rec)
	}
	// OpBackupKeysPut: each session's key replaces the stored one only when it is better.
	rooms, sessions := make([]string, len(b.Keys)), make([]string, len(b.Keys))
	for i, k := range b.Keys {
		rooms[i], sessions[i] = k.Room, k.Session
	}
	stored, err := p.store.BackupSessions(ctx, user, cur.Version, rooms, sessions)
	if err != nil {
		return Outcome{}, err
	}
	var keep []schemas.BackupKey
	for _, k := range b.Keys {
		if old, ok := stored[[2]string{k.Room, k.Session}]; !ok || replacesRoomKey(old, k) {
			keep = append(keep, k)
			stored[[2]string{k.Room, k.Session}] = k
		}
	}
	if len(keep) == 0 {
		return p.outcome(ctx, BackupKeysAnswer{ETag: strconv.FormatInt(cur.ETag, 10), Count: cur.Count})
	}
	version.ETag++
	rec.Kind, rec.BackupKeys = schemas.BackupKeysSet, keep
	return p.backupKeysOutcome(ctx, user, version, rec)
}

// backupKeysOutcome projects a change of a version's keys and answers its new etag
// and count.
func (p *preparing) backupKeysOutcome(ctx context.Context, user string, version *schemas.BackupVersion, rec *schemas.DeviceListRecord) (Outcome, error) {
	o, err := p.outcome(ctx, nil, rec)
	if err != nil {
		return o, err
	}
	after, err := p.store.BackupVersion(ctx, user, version.Version)
	if err != nil {
		return o, err
	}
	body, err := schemas.Marshal(BackupKeysAnswer{ETag: strconv.FormatInt(version.ETag, 10), Count: after.Count})
	if err != nil {
		return o, err
	}
	o.Answer = &schemas.IntentResult{Body: body}
	return o, nil
}

// replacesRoomKey is Synapse's rule for a backed-up session key: a verified key beats
// an unverified one, then a key that starts earlier (lower first message index), then
// one forwarded fewer times.
func replacesRoomKey(old, k schemas.BackupKey) bool {
	switch {
	case k.IsVerified && !old.IsVerified:
		return true
	case k.FirstMessageIndex < old.FirstMessageIndex:
		return true
	default:
		return k.ForwardedCount < old.ForwardedCount
	}
}

func (d *DeviceLists) Project(ctx context.Context, tx pgx.Tx, recs []streams.RawMessage) error {
	decoded := make([]*schemas.DeviceListRecord, 0, len(recs))
	seqs := make([]uint64, 0, len(recs))
	for _, m := range recs {
		r, err := schemas.DecodeDeviceList(m.Data)
		if err != nil {
			return err
		}
		decoded = append(decoded, r)
		seqs = append(seqs, m.Seq)
	}
	return e2ekeys.Project(ctx, tx, decoded, seqs)
}

func (d *DeviceLists) Row(m streams.RawMessage) any {
	r, err := schemas.DecodeDeviceList(m.Data)
	if err != nil {
		return nil
	}
	switch {
	case len(r.Changed) > 0:
		return schemas.DeviceListRow{User: r.User}
	case len(r.SignedUsers) > 0:
		return schemas.DeviceListRow{User: r.User, IsSignature: true}
	}
	return nil
}
