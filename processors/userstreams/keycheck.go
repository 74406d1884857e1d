package userstreams

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Checks of signed key objects, shared by the gateway (what needs no stored state) and
// the device_lists writer (what needs it). Signatures are verified with
// gomatrixserverlib over the canonical JSON, never by hand.

// Errors of key checks, with the spec's codes; KeyError carries the HTTP answer.
var (
	errInvalidSignature = &KeyError{http.StatusBadRequest, "M_INVALID_SIGNATURE", "Invalid signature"}
)

// KeyError is a refused key or signature, as a Matrix error.
type KeyError struct {
	Status int
	Code   string
	Msg    string
}

func (e *KeyError) Error() string { return e.Code + ": " + e.Msg }

// keyErrorf builds a KeyError.
func keyErrorf(status int, code, format string, args ...any) *KeyError {
	return &KeyError{status, code, fmt.Sprintf(format, args...)}
}

// refuseKeyError is the Outcome of a write refused by a KeyError (or another error,
// as 400 M_INVALID_PARAM).
func refuseKeyError(err error) Outcome {
	var ke *KeyError
	if errors.As(err, &ke) {
		return Refuse(ke.Status, ke.Code, "%s", ke.Msg)
	}
	return Refuse(http.StatusBadRequest, "M_INVALID_PARAM", "%s", err.Error())
}

// PublicKey decodes an ed25519 public key given in unpadded base64.
func PublicKey(b64 string) (ed25519.PublicKey, error) {
	var b spec.Base64Bytes
	if err := b.Decode(b64); err != nil || len(b) != ed25519.PublicKeySize {
		return nil, keyErrorf(http.StatusBadRequest, "M_INVALID_PARAM", "%q is not an ed25519 public key", b64)
	}
	return ed25519.PublicKey(b), nil
}

// VerifySignature checks that obj carries signer's valid signature by the ed25519 key
// keyID ("ed25519:<id>"), whose public key is pub (unpadded base64).
func VerifySignature(obj json.RawMessage, signer, keyID, pub string) error {
	key, err := PublicKey(pub)
	if err != nil {
		return err
	}
	if err := gomatrixserverlib.VerifyJSON(signer, gomatrixserverlib.KeyID(keyID), key, obj); err != nil {
		return errInvalidSignature
	}
	return nil
}

// DeviceKeys is the part of a device keys object the server reads.
type DeviceKeys struct {
	UserID     string                       `json:"user_id"`
	DeviceID   string                       `json:"device_id"`
	Algorithms []string                     `json:"algorithms"`
	Keys       map[string]string            `json:"keys"`
	Signatures map[string]map[string]string `json:"signatures"`
}

// SigningKey returns the device's ed25519 key, "" when it has none.
func (k *DeviceKeys) SigningKey() string { return k.Keys["ed25519:"+k.DeviceID] }

// Bounds of what a device may upload.
const (
	maxAlgorithms = 32
	maxDeviceKeys = 32
	// maxKeyLen bounds key IDs, keys and algorithm names.
	maxKeyLen = 256
)

// CheckDeviceKeys checks a device keys object uploaded by user's device: its owner, the
// form of its algorithms and key IDs (each "<algorithm>:<device_id>"), and its signature
// by its own ed25519 key. It returns the object parsed and in canonical JSON.
func CheckDeviceKeys(raw json.RawMessage, user, device string) (*DeviceKeys, json.RawMessage, error) {
	var k DeviceKeys
	if err := json.Unmarshal(raw, &k); err != nil {
		return nil, nil, keyErrorf(http.StatusBadRequest, "M_BAD_JSON", "device_keys is not a device keys object")
	}
	if k.UserID != user {
		return nil, nil, keyErrorf(http.StatusBadRequest, "M_BAD_JSON", "Provided `user_id` in `device_keys` does not match that of the authenticated user")
	}
	if k.DeviceID != device {
		return nil, nil, keyErrorf(http.StatusBadRequest, "M_BAD_JSON", "Provided `device_id` in `device_keys` does not match that of the authenticated user device")
	}
	if k.Algorithms == nil || len(k.Algorithms) > maxAlgorithms || slices.ContainsFunc(k.Algorithms, func(a string) bool { return a == "" || len(a) > maxKeyLen }) {
		return nil, nil, keyErrorf(http.StatusBadRequest, "M_BAD_JSON", "algorithms must list at most %d algorithm names", maxAlgorithms)
	}
	if len(k.Keys) == 0 || len(k.Keys) > maxDeviceKeys {
		return nil, nil, keyErrorf(http.StatusBadRequest, "M_BAD_JSON", "keys must hold between 1 and %d keys", maxDeviceKeys)
	}
	for id, key := range k.Keys {
		alg, keyDevice, ok := strings.Cut(id, ":")
		if !ok || alg == "" || keyDevice != device || key == "" || len(key) > maxKeyLen {
			return nil, nil, keyErrorf(http.StatusBadRequest, "M_BAD_JSON", "key %q is not named <algorithm>:%s", id, device)
		}
	}
	pub := k.SigningKey()
	if pub == "" {
		return nil, nil, keyErrorf(http.StatusBadRequest, "M_BAD_JSON", "device keys have no ed25519:%s key", device)
	}
	if err := VerifySignature(raw, user, "ed25519:"+device, pub); err != nil {
		return nil, nil, err
	}
	canonical, err := gomatrixserverlib.CanonicalJSON(raw)
	if err != nil {
		return nil, nil, keyErrorf(http.StatusBadRequest, "M_BAD_JSON", "device_keys is not valid JSON")
	}
	return &k, canonical, nil
}

// CheckOneTimeKey checks a one-time or fallback key named id ("<algorithm>:<key id>")
// and returns it in canonical JSON: an unsigned key is a string; a signed one (every
// signed_ algorithm) an object whose key the device signed with its ed25519 key pub.
func CheckOneTimeKey(id string, raw json.RawMessage, user, device, pub string) (json.RawMessage, error) {
	alg, kid, ok := strings.Cut(id, ":")
	if !ok || alg == "" || kid == "" || strings.Contains(kid, ":") || len(id) > maxKeyLen {
		return nil, keyErrorf(http.StatusBadRequest, "M_BAD_JSON", "Invalid key %q. Expected \"<algorithm>:<key_id>\".", id)
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if strings.HasPrefix(alg, "signed_") || s == "" || len(s) > maxKeyLen {
			return nil, keyErrorf(http.StatusBadRequest, "M_BAD_JSON", "key %q must be a signed key object", id)
		}
		return gomatrixserverlib.CanonicalJSON(raw)
	}
	var obj struct {
		Key        string          `json:"key"`
		Fallback   *bool           `json:"fallback"`
		Signatures json.RawMessage `json:"signatures"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil || obj.Key == "" || len(obj.Key) > maxKeyLen || obj.Signatures == nil {
		return nil, keyErrorf(http.StatusBadRequest, "M_BAD_JSON", "key %q must be a key or a signed key object", id)
	}
	if pub == "" {
		return nil, keyErrorf(http.StatusBadRequest, "M_INVALID_SIGNATURE", "signed key %q cannot be checked: the device has no keys", id)
	}
	if err := VerifySignature(raw, user, "ed25519:"+device, pub); err != nil {
		return nil, err
	}
	return gomatrixserverlib.CanonicalJSON(raw)
}

// CrossSigningKey is the part of a cross-signing key object the server reads.
type CrossSigningKey struct {
	UserID string            `json:"user_id"`
	Usage  []string          `json:"usage"`
	Keys   map[string]string `json:"keys"`
}

// CheckCrossSigningKey checks a cross-signing key of user of type typ (master,
// self_signing, user_signing): its owner, usage and single ed25519 key, and, when
// masterPub is given, its signature by the master key. It returns the key's public key
// and the object in canonical JSON.
func CheckCrossSigningKey(raw json.RawMessage, user, typ, masterPub string) (string, json.RawMessage, error) {
	var k CrossSigningKey
	invalid := keyErrorf(http.StatusBadRequest, "M_INVALID_PARAM", "Invalid %s key", typ)
	if err := json.Unmarshal(raw, &k); err != nil || k.UserID != user || !slices.Contains(k.Usage, typ) || len(k.Keys) != 1 {
		return "", nil, invalid
	}
	var pub string
	for id, key := range k.Keys {
		alg, idPub, _ := strings.Cut(id, ":")
		if alg != "ed25519" || idPub != key {
			return "", nil, invalid
		}
		if _, err := PublicKey(key); err != nil {
			return "", nil, invalid
		}
		pub = key
	}
	if masterPub != "" {
		if err := VerifySignature(raw, user, "ed25519:"+masterPub, masterPub); err != nil {
			return "", nil, keyErrorf(http.StatusBadRequest, "M_INVALID_SIGNATURE", "Invalid signature on %s key", typ)
		}
	}
	canonical, err := gomatrixserverlib.CanonicalJSON(raw)
	if err != nil {
		return "", nil, invalid
	}
	return pub, canonical, nil
}

// unsignedForm is a key object in canonical JSON without its signatures and unsigned
// members, for comparing a signed copy with the stored key; a key that is not an
// object (an unsigned one-time key) is compared as it is.
func unsignedForm(key json.RawMessage) string {
	var m map[string]json.RawMessage
	if json.Unmarshal(key, &m) == nil && m != nil {
		delete(m, "signatures")
		delete(m, "unsigned")
		key, _ = json.Marshal(m)
	}
	c, err := gomatrixserverlib.CanonicalJSON(key)
	if err != nil {
		return string(key)
	}
	return string(c)
}

// sameKey reports whether two key objects are the same key, whatever their signatures.
func sameKey(a, b json.RawMessage) bool { return unsignedForm(a) == unsignedForm(b) }
