package e2ekeys

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Cross-signing key types, as stored and as /keys/device_signing/upload names them
// (without the "_key" suffix).
const (
	Master      = "master"
	SelfSigning = "self_signing"
	UserSigning = "user_signing"
)

// signature is one stored signature of a target.
type signature struct {
	signer, keyID, sig string
}

// QueryDevices returns the keys of the existing devices of users, by user and device,
// each with the signatures its owner uploaded separately merged in and the device's
// display name under unsigned. A user with an empty device list gets every device.
func (s Store) QueryDevices(ctx context.Context, query map[string][]string) (map[string]map[string]json.RawMessage, error) {
	users := make([]string, 0, len(query))
	for u := range query {
		users = append(users, u)
	}
	sigs, err := s.signatures(ctx, users, "")
	if err != nil {
		return nil, err
	}
	rows, err := s.DB.Query(ctx, `SELECT d.user_id, d.device_id, d.display_name, k.key_json
		FROM devices d JOIN e2e_device_keys k ON k.user_id = d.user_id AND k.device_id = d.device_id
		WHERE d.user_id = ANY($1)`, users)
	if err != nil {
		return nil, fmt.Errorf("e2ekeys: query devices: %w", err)
	}
	defer rows.Close()
	out := map[string]map[string]json.RawMessage{}
	for rows.Next() {
		var user, device, keys string
		var name *string
		if err := rows.Scan(&user, &device, &name, &keys); err != nil {
			return nil, fmt.Errorf("e2ekeys: query devices: %w", err)
		}
		if want := query[user]; len(want) > 0 && !slices.Contains(want, device) {
			continue
		}
		var unsigned map[string]any
		if name != nil {
			unsigned = map[string]any{"device_display_name": *name}
		}
		merged, err := withSignatures(keys, sigs[user+"\x00"+device], unsigned)
		if err != nil {
			return nil, fmt.Errorf("e2ekeys: stored keys of %s %s: %w", user, device, err)
		}
		if out[user] == nil {
			out[user] = map[string]json.RawMessage{}
		}
		out[user][device] = merged
	}
	return out, rows.Err()
}

// CrossSigningKeys returns the cross-signing keys of users by type and user, as
// /keys/query shows them to viewer: master keys with the signatures their owner's
// devices made and those viewer made; user-signing keys only viewer's own.
func (s Store) CrossSigningKeys(ctx context.Context, users []string, viewer string) (map[string]map[string]json.RawMessage, error) {
	out := map[string]map[string]json.RawMessage{Master: {}, SelfSigning: {}, UserSigning: {}}
	sigs, err := s.signatures(ctx, users, viewer)
	if err != nil {
		return nil, err
	}
	rows, err := s.DB.Query(ctx, `SELECT user_id, key_type, key_json FROM e2e_cross_signing_keys
		WHERE user_id = ANY($1) AND (key_type <> $2 OR user_id = $3)`, users, UserSigning, viewer)
	if err != nil {
		return nil, fmt.Errorf("e2ekeys: cross-signing keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var user, typ, keys string
		if err := rows.Scan(&user, &typ, &keys); err != nil {
			return nil, fmt.Errorf("e2ekeys: cross-signing keys: %w", err)
		}
		var extra []signature
		if typ == Master {
			if pub, ok := PublicKey(json.RawMessage(keys)); ok {
				extra = sigs[user+"\x00"+pub]
			}
		}
		merged, err := withSignatures(keys, extra, nil)
		if err != nil {
			return nil, fmt.Errorf("e2ekeys: stored %s key of %s: %w", typ, user, err)
		}
		out[typ][user] = merged
	}
	return out, rows.Err()
}

// signatures reads the separately uploaded signatures of users' keys made by their
// owners, and by viewer when given, keyed by user and target.
func (s Store) signatures(ctx context.Context, users []string, viewer string) (map[string][]signature, error) {
	rows, err := s.DB.Query(ctx, `SELECT target_user_id, target_id, user_id, key_id, signature
		FROM e2e_cross_signing_signatures
		WHERE target_user_id = ANY($1) AND (user_id = target_user_id OR user_id = $2)`, users, viewer)
	if err != nil {
		return nil, fmt.Errorf("e2ekeys: signatures: %w", err)
	}
	defer rows.Close()
	out := map[string][]signature{}
	for rows.Next() {
		var user, target string
		var sg signature
		if err := rows.Scan(&user, &target, &sg.signer, &sg.keyID, &sg.sig); err != nil {
			return nil, fmt.Errorf("e2ekeys: signatures: %w", err)
		}
		out[user+"\x00"+target] = append(out[user+"\x00"+target], sg)
	}
	return out, rows.Err()
}

// withSignatures adds sigs to the signatures of the key object keys, and unsigned.
func withSignatures(keys string, sigs []signature, unsigned map[string]any) (json.RawMessage, error) {
	if len(sigs) == 0 && unsigned == nil {
		return json.RawMessage(keys), nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(keys), &obj); err != nil {
		return nil, err
	}
	if len(sigs) > 0 {
		all := map[string]map[string]string{}
		if raw, ok := obj["signatures"]; ok {
			if err := json.Unmarshal(raw, &all); err != nil {
				return nil, err
			}
		}
		for _, sg := range sigs {
			if all[sg.signer] == nil {
				all[sg.signer] = map[string]string{}
			}
			all[sg.signer][sg.keyID] = sg.sig
		}
		raw, err := json.Marshal(all)
		if err != nil {
			return nil, err
		}
		obj["signatures"] = raw
	}
	if unsigned != nil {
		raw, err := json.Marshal(unsigned)
		if err != nil {
			return nil, err
		}
		obj["unsigned"] = raw
	}
	return json.Marshal(obj)
}

// PublicKey returns the one public key of a cross-signing key object: the part of its
// only "ed25519:<public key>" key ID after the colon.
func PublicKey(key json.RawMessage) (string, bool) {
	var k struct {
		Keys map[string]string `json:"keys"`
	}
	if json.Unmarshal(key, &k) != nil || len(k.Keys) != 1 {
		return "", false
	}
	for id := range k.Keys {
		_, pub, ok := strings.Cut(id, ":")
		return pub, ok && pub != ""
	}
	return "", false
}
