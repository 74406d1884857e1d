package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// pushersStore reads the pushers projection.
type pushersStore interface {
	List(ctx context.Context, user string) ([]schemas.Pusher, error)
}

// Bounds of a pusher, from the spec.
const (
	maxAppIDChars    = 64
	maxPushkeyBytes  = 512
	maxPushersBody   = 64 << 10
	pushGatewayPath  = "/_matrix/push/v1/notify"
	pusherKindHTTP   = "http"
	pusherKindEmail  = "email"
	pusherConfigNote = "Config Error: "
)

// pusherRequired are the fields POST /pushers/set needs unless it deletes.
var pusherRequired = []string{"kind", "app_id", "app_display_name", "device_display_name", "pushkey", "lang", "data"}

func (s *Server) registerPushers(r router) {
	r.handle("GET", "/pushers", allVersions, s.authed(s.getPushers))
	r.handle("POST", "/pushers/set", allVersions, s.authed(s.setPusher))
}

type pushersResponse struct {
	Pushers []schemas.Pusher `json:"pushers"`
}

func (s *Server) getPushers(w http.ResponseWriter, r *http.Request, dev Device) {
	list, err := s.pushers.List(r.Context(), dev.UserID)
	if err != nil {
		s.writeErr(w, "pushers", err)
		return
	}
	if list == nil {
		list = []schemas.Pusher{}
	}
	matrix.WriteJSON(w, http.StatusOK, pushersResponse{Pushers: list})
}

// setPusher sets, replaces or (kind null) deletes one of the user's pushers, through
// the accounts stream: a pusher belongs to the device that set it and goes with it.
func (s *Server) setPusher(w http.ResponseWriter, r *http.Request, dev Device) {
	var fields map[string]json.RawMessage
	if err := matrix.DecodeBody(r, maxPushersBody, &fields); err != nil {
		s.writeErr(w, "pushers set", err)
		return
	}
	op, body, err := parsePusherSet(fields)
	if err != nil {
		s.writeErr(w, "pushers set", err)
		return
	}
	if _, err := s.writeAccounts(r.Context(), dev, dev.UserID, op, body); err != nil {
		s.writeErr(w, "pushers set", err)
		return
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
}

// parsePusherSet reads the body of POST /pushers/set into the accounts operation it
// asks for, with Synapse's errors: a kind of null with an app_id and a pushkey
// deletes; otherwise every field of pusherRequired must be there (400
// M_MISSING_PARAM), and an http pusher needs data.url on a push gateway's path.
func parsePusherSet(fields map[string]json.RawMessage) (op string, body any, err error) {
	var p schemas.Pusher
	str := func(name string, dst *string) error {
		raw, ok := fields[name]
		if !ok {
			return nil
		}
		if json.Unmarshal(raw, dst) != nil || string(raw) == "null" {
			return matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "%s must be a string", name)
		}
		return nil
	}
	for name, dst := range map[string]*string{"app_id": &p.AppID, "pushkey": &p.Pushkey} {
		if err := str(name, dst); err != nil {
			return "", nil, err
		}
	}
	if kind, ok := fields["kind"]; ok && string(kind) == "null" && fields["app_id"] != nil && fields["pushkey"] != nil {
		if p.AppID == "" || p.Pushkey == "" {
			return "", nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "app_id and pushkey must not be empty")
		}
		return userstreams.OpDeletePusher, schemas.Pusher{AppID: p.AppID, Pushkey: p.Pushkey}, nil
	}
	var missing []string
	for _, name := range pusherRequired {
		if _, ok := fields[name]; !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return "", nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeMissingParam, "Missing params: %s", strings.Join(missing, ", "))
	}
	for name, dst := range map[string]*string{"kind": &p.Kind, "app_display_name": &p.AppDisplayName,
		"device_display_name": &p.DeviceDisplayName, "lang": &p.Lang, "profile_tag": &p.ProfileTag} {
		if err := str(name, dst); err != nil {
			return "", nil, err
		}
	}
	var appendTo bool
	if raw, ok := fields["append"]; ok && json.Unmarshal(raw, &appendTo) != nil {
		return "", nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "append must be a boolean")
	}
	switch {
	case p.AppID == "" || utf8.RuneCountInString(p.AppID) > maxAppIDChars:
		return "", nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "app_id must have 1 to %d characters", maxAppIDChars)
	case p.Pushkey == "" || len(p.Pushkey) > maxPushkeyBytes:
		return "", nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "pushkey must have 1 to %d bytes", maxPushkeyBytes)
	case !schemas.IsObject(fields["data"]):
		return "", nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "data must be an object")
	case p.Kind == pusherKindEmail:
		return "", nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "this server sends no email, so it has no email pushers")
	case p.Kind != pusherKindHTTP:
		return "", nil, matrix.Errorf(http.StatusBadRequest, matrix.CodeInvalidParam, "unknown pusher kind %q", p.Kind)
	}
	p.Data = fields["data"]
	if err := checkPushGatewayURL(p.Data); err != nil {
		return "", nil, err
	}
	return userstreams.OpSetPusher, userstreams.SetPusher{Pusher: p, Append: appendTo}, nil
}

// checkPushGatewayURL requires data.url of an http pusher to be an http(s) URL on the
// Push Gateway API's path, as Synapse does.
func checkPushGatewayURL(data json.RawMessage) error {
	var d struct {
		URL *string `json:"url"`
	}
	if json.Unmarshal(data, &d) != nil || d.URL == nil {
		return matrix.Errorf(http.StatusBadRequest, matrix.CodeMissingParam, pusherConfigNote+"'url' required in data for HTTP pusher")
	}
	u, err := url.Parse(*d.URL)
	if err != nil || !slices.Contains([]string{"http", "https"}, u.Scheme) || u.Host == "" {
		return matrix.Errorf(http.StatusBadRequest, matrix.CodeMissingParam, pusherConfigNote+"'url' must be an http or https URL")
	}
	if u.Path != pushGatewayPath {
		return matrix.Errorf(http.StatusBadRequest, matrix.CodeMissingParam, pusherConfigNote+"'url' must have a path of '%s'", pushGatewayPath)
	}
	return nil
}
