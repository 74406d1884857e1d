package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist/e2ekeys"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// Bounds of the end-to-end key endpoints. Uploads travel to the device_lists writer
// in one bus message, so they stay well below its 1 MiB; queries and claims only name
// users and devices, but a client asks for every member of a large room at once.
const (
	maxKeysUploadBody = 512 << 10
	maxKeysQueryBody  = 1 << 20
	// maxOneTimeKeys bounds one upload's one-time keys (clients upload 50 at a time).
	maxOneTimeKeys = 1000
	// maxClaimedDevices bounds the devices of one claim.
	maxClaimedDevices = 10000
	// claimConcurrency bounds the claims of one request in flight at once (one write
	// per claimed user, to that user's writer).
	claimConcurrency = 8
)

func (s *Server) registerKeys(r router) {
	r.handle("POST", "/keys/upload", modernVersions, s.authed(s.uploadKeys))
	r.handle("POST", "/keys/query", modernVersions, s.authed(s.queryKeys))
	r.handle("POST", "/keys/claim", modernVersions, s.authed(s.claimKeys))
	r.handle("GET", "/keys/changes", modernVersions, s.authed(s.keyChanges))
	r.handle("POST", "/keys/device_signing/upload", []string{"v3", "unstable"}, s.authed(s.uploadSigningKeys))
	r.handle("POST", "/keys/signatures/upload", modernVersions, s.authed(s.uploadSignatures))
	s.registerRoomKeys(r)
}

// keyStore reads the end-to-end key projection.
func (s *Server) keyStore() e2ekeys.Store { return e2ekeys.Store{DB: s.DB.Pool} }

// keyError turns a refused key (userstreams.KeyError) into its Matrix error.
func keyError(err error) error {
	var ke *userstreams.KeyError
	if errors.As(err, &ke) {
		return matrix.Errorf(ke.Status, ke.Code, "%s", ke.Msg)
	}
	return err
}

type keysUploadRequest struct {
	DeviceKeys   json.RawMessage            `json:"device_keys"`
	OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
}

// decodeKeysUpload reads and checks a /keys/upload body of dev: every signature is
// verified here, so the writer gets keys in canonical JSON that it only compares with
// what it stores. stored returns the device's stored ed25519 key, which signed keys
// uploaded without the device keys are checked against.
func decodeKeysUpload(r *http.Request, dev Device, stored func() (string, error)) (*userstreams.KeysUpload, error) {
	var req keysUploadRequest
	if err := matrix.DecodeBody(r, maxKeysUploadBody, &req); err != nil {
		return nil, err
	}
	if dev.DeviceID == "" {
		return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeUnknown, "To upload keys, you must pass device_id when authenticating")
	}
	out := &userstreams.KeysUpload{}
	var signingKey string
	if req.DeviceKeys != nil {
		if string(req.DeviceKeys) == "null" {
			return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "device_keys must not be null")
		}
		keys, canonical, err := userstreams.CheckDeviceKeys(req.DeviceKeys, dev.UserID, dev.DeviceID)
		if err != nil {
			return nil, keyError(err)
		}
		out.DeviceKeys, signingKey = canonical, keys.SigningKey()
	}
	if len(req.OneTimeKeys) > maxOneTimeKeys || len(req.FallbackKeys) > maxOneTimeKeys {
		return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeTooLarge, "at most %d keys may be uploaded at once", maxOneTimeKeys)
	}
	if signingKey == "" && len(req.OneTimeKeys)+len(req.FallbackKeys) > 0 {
		var err error
		if signingKey, err = stored(); err != nil {
			return nil, err
		}
	}
	check := func(in map[string]json.RawMessage, fallback bool) (map[string]json.RawMessage, error) {
		if len(in) == 0 {
			return nil, nil
		}
		out := make(map[string]json.RawMessage, len(in))
		algorithms := map[string]bool{}
		for id, key := range in {
			canonical, err := userstreams.CheckOneTimeKey(id, key, dev.UserID, dev.DeviceID, signingKey)
			if err != nil {
				return nil, keyError(err)
			}
			alg, _, _ := strings.Cut(id, ":")
			if fallback && algorithms[alg] {
				return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "only one fallback key of each algorithm may be uploaded")
			}
			algorithms[alg] = true
			out[id] = canonical
		}
		return out, nil
	}
	var err error
	if out.OneTimeKeys, err = check(req.OneTimeKeys, false); err != nil {
		return nil, err
	}
	if out.FallbackKeys, err = check(req.FallbackKeys, true); err != nil {
		return nil, err
	}
	return out, nil
}

// storedSigningKey returns the ed25519 key of dev's stored device keys, "" when it has
// none.
func (s *Server) storedSigningKey(ctx context.Context, dev Device) (string, error) {
	stored, err := s.keyStore().DeviceKeys(ctx, dev.UserID, dev.DeviceID)
	if errors.Is(err, e2ekeys.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var keys userstreams.DeviceKeys
	if err := json.Unmarshal(stored, &keys); err != nil {
		return "", err
	}
	return keys.SigningKey(), nil
}

func (s *Server) uploadKeys(w http.ResponseWriter, r *http.Request, dev Device) {
	ctx := r.Context()
	up, err := decodeKeysUpload(r, dev, func() (string, error) { return s.storedSigningKey(ctx, dev) })
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	if up.DeviceKeys != nil || len(up.OneTimeKeys) > 0 || len(up.FallbackKeys) > 0 {
		if _, err := s.writeStream(ctx, dev, streamWrite{stream: schemas.StreamDeviceLists, op: userstreams.OpKeysUpload,
			key: dev.UserID, body: up}); err != nil {
			s.writeErr(w, r.Pattern, err)
			return
		}
	}
	counts, err := s.keyStore().Counts(ctx, dev.UserID, dev.DeviceID)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"one_time_key_counts": counts.OneTimeKeys})
}

// remoteFailure is what /keys/query and /keys/claim answer for users of other servers:
// without federation, their servers cannot be reached.
var remoteFailure = map[string]any{"status": http.StatusServiceUnavailable, "message": "Federation is not available"}

// serverOf returns the server name of a valid user ID.
func serverOf(user string) string {
	_, server, _ := strings.Cut(user, ":")
	return server
}

type keysQueryRequest struct {
	DeviceKeys map[string][]string `json:"device_keys"`
}

// decodeKeysQuery reads a /keys/query body: device IDs by user.
func decodeKeysQuery(r *http.Request) (map[string][]string, error) {
	var req keysQueryRequest
	if err := matrix.DecodeBody(r, maxKeysQueryBody, &req); err != nil {
		return nil, err
	}
	if req.DeviceKeys == nil {
		return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeBadJSON, "'device_keys' must be a JSON object")
	}
	return req.DeviceKeys, nil
}

func (s *Server) queryKeys(w http.ResponseWriter, r *http.Request, dev Device) {
	query, err := decodeKeysQuery(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	failures := map[string]any{}
	local := map[string][]string{}
	var users []string
	for user, devices := range query {
		switch {
		case !validUserID(user):
			// As a user without keys: nothing to show.
		case serverOf(user) != s.ServerName:
			failures[serverOf(user)] = remoteFailure
		default:
			local[user] = devices
			users = append(users, user)
		}
	}
	ctx := r.Context()
	store := s.keyStore()
	devices, err := store.QueryDevices(ctx, local)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	cross, err := store.CrossSigningKeys(ctx, users, dev.UserID)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	// Every local user asked for is in the answer, with no devices when they have none.
	for _, u := range users {
		if devices[u] == nil {
			devices[u] = map[string]json.RawMessage{}
		}
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{
		"device_keys":       devices,
		"failures":          failures,
		"master_keys":       cross[e2ekeys.Master],
		"self_signing_keys": cross[e2ekeys.SelfSigning],
		"user_signing_keys": cross[e2ekeys.UserSigning],
	})
}

type keysClaimRequest struct {
	OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
}

// claimKeys claims one key per device through the writer of each claimed user, so
// concurrent claims never hand out one key twice.
// decodeKeysClaim reads a /keys/claim body: the algorithm to claim by user and device.
func decodeKeysClaim(r *http.Request) (map[string]map[string]string, error) {
	var req keysClaimRequest
	if err := matrix.DecodeBody(r, maxKeysQueryBody, &req); err != nil {
		return nil, err
	}
	n := 0
	for user, devices := range req.OneTimeKeys {
		for device, alg := range devices {
			if alg == "" || len(alg) > 255 || device == "" {
				return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "invalid claim for %s", user)
			}
		}
		if n += len(devices); n > maxClaimedDevices {
			return nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeTooLarge, "at most %d devices may be claimed at once", maxClaimedDevices)
		}
	}
	return req.OneTimeKeys, nil
}

func (s *Server) claimKeys(w http.ResponseWriter, r *http.Request, dev Device) {
	query, err := decodeKeysClaim(r)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	failures := map[string]any{}
	claimed := map[string]userstreams.ClaimedKeys{}
	var mu sync.Mutex
	g, ctx := errgroup.WithContext(r.Context())
	g.SetLimit(claimConcurrency)
	for user, devices := range query {
		switch {
		case !validUserID(user) || len(devices) == 0:
			continue
		case serverOf(user) != s.ServerName:
			failures[serverOf(user)] = remoteFailure
			continue
		}
		g.Go(func() error {
			res, err := s.writeStream(ctx, dev, streamWrite{stream: schemas.StreamDeviceLists, op: userstreams.OpKeysClaim,
				key: user, body: userstreams.KeysClaim{Devices: devices}})
			if err != nil {
				return err
			}
			var keys userstreams.ClaimedKeys
			if err := json.Unmarshal(res.Body, &keys); err != nil {
				return err
			}
			if len(keys) > 0 {
				mu.Lock()
				claimed[user] = keys
				mu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"one_time_keys": claimed, "failures": failures})
}

// keyChanges serves /keys/changes: the users whose device lists changed between two
// sync tokens, and those who stopped sharing a room with the user.
func (s *Server) keyChanges(w http.ResponseWriter, r *http.Request, dev Device) {
	q := r.URL.Query()
	if q.Get("from") == "" {
		s.writeErr(w, r.Pattern, matrix.Errorf(http.StatusBadRequest, matrix.CodeMissingParam, "Missing string query parameter 'from'"))
		return
	}
	from, err := parseSyncToken(q.Get("from"))
	if err != nil {
		s.writeErr(w, r.Pattern, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "Invalid stream token"))
		return
	}
	to := s.currentToken()
	if q.Get("to") != "" {
		if to, err = parseSyncToken(q.Get("to")); err != nil {
			s.writeErr(w, r.Pattern, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "Invalid stream token"))
			return
		}
	}
	ctx := r.Context()
	joined, err := s.DB.RoomsOfUser(ctx, dev.UserID, "join")
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	changed, left, err := s.deviceListUpdates(ctx, dev.UserID, joined, from, to, true)
	if err != nil {
		s.writeErr(w, r.Pattern, err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, deviceLists{Changed: changed, Left: left})
}

// devicesChanged records a change of a user's devices (a new display name, a deletion)
// in their device list, so the users sharing a room with them fetch it again. A device
// without keys is in nobody's view of the user's devices (/keys/query shows devices
// with keys, as Synapse does), so its changes are not recorded: its first key upload is.
func (s *Server) devicesChanged(ctx context.Context, dev Device, op string, ids []string) error {
	has, err := s.keyStore().HasKeys(ctx, dev.UserID, ids)
	if err != nil || !has {
		return err
	}
	_, err = s.writeStream(ctx, dev, streamWrite{stream: schemas.StreamDeviceLists, op: op,
		key: dev.UserID, body: userstreams.DeviceOp{Devices: ids}})
	return err
}

// currentToken is the sync token of everything visible in this process now.
func (s *Server) currentToken() syncToken {
	var t syncToken
	if s.Feed != nil {
		t[slotEvents] = s.Feed.Position()
	}
	for name, f := range s.StreamFeeds {
		t[streamSlots[name]] = f.Position()
	}
	return t
}
