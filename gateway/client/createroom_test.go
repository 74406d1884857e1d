package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist"
)

func createRoomBody(t *testing.T, invites, initialState int) string {
	t.Helper()
	body := map[string]any{}
	var inv []string
	for i := range invites {
		inv = append(inv, fmt.Sprintf("@u%d:%s", i, testServerName))
	}
	if inv != nil {
		body["invite"] = inv
	}
	var st []map[string]any
	for i := range initialState {
		st = append(st, map[string]any{"type": "m.custom", "state_key": fmt.Sprint(i), "content": map[string]any{}})
	}
	if st != nil {
		body["initial_state"] = st
	}
	raw, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

func wantErrorOf(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	var me *matrix.Error
	if !errors.As(err, &me) || me.Status != status || me.Code != code {
		t.Errorf("%s: err = %v, want %d %s", what, err, status, code)
	}
}

// TestCreateRoomBounds: one createRoom may ask for at most maxCreateRoomInvites invites
// and maxCreateRoomInitialState initial_state events, and its events' content may weigh
// at most maxCreateRoomContent, so no intent asks a writer for more than one append holds.
func TestCreateRoomBounds(t *testing.T) {
	t.Parallel()
	s := &Server{ServerName: testServerName}
	decode := func(body string) (int, error) {
		r := httptest.NewRequest(http.MethodPost, "/_matrix/client/v3/createRoom", strings.NewReader(body))
		_, events, err := s.decodeCreateRoom(r, "@alice:"+testServerName, persist.Profile{})
		return len(events), err
	}
	if n, err := decode(createRoomBody(t, maxCreateRoomInvites, maxCreateRoomInitialState)); err != nil || n < maxCreateRoomInvites+maxCreateRoomInitialState {
		t.Fatalf("a room at both count limits: %d events, %v", n, err)
	}
	_, err := decode(createRoomBody(t, maxCreateRoomInvites+1, 0))
	wantErrorOf(t, "one invite too many", err, 400, matrix.CodeInvalidParam)
	_, err = decode(createRoomBody(t, 0, maxCreateRoomInitialState+1))
	wantErrorOf(t, "one initial_state event too many", err, 400, matrix.CodeInvalidParam)

	// The case: a 64 KB body of invites (about 9,300 of them once made 9,295
	// events, 6.5 MB).
	var inv []string
	for i := 0; len(strings.Join(inv, `","`)) < 65000; i++ {
		inv = append(inv, fmt.Sprintf("@%d:h", i))
	}
	_, err = decode(`{"invite":["` + strings.Join(inv[:len(inv)-1], `","`) + `"]}`)
	wantErrorOf(t, fmt.Sprintf("%d invites in a 64 KB body", len(inv)-1), err, 400, matrix.CodeInvalidParam)

	// Content over the bound: 99 initial_state events of 6 KiB each. The body limit keeps
	// such a request from arriving today; the bound holds whatever the body limit.
	req := &createRoomRequest{RoomVersion: DefaultRoomVersion}
	big := json.RawMessage(`{"x":"` + strings.Repeat("a", 6<<10) + `"}`)
	for i := range maxCreateRoomInitialState - 1 {
		req.InitialState = append(req.InitialState, initialStateEvent{Type: "m.custom", StateKey: fmt.Sprint(i), Content: big})
	}
	_, err = s.initialEvents(req, "@alice:"+testServerName, persist.Profile{})
	wantErrorOf(t, "594 KiB of content", err, 413, matrix.CodeTooLarge)
	req.InitialState = req.InitialState[:maxCreateRoomContent/len(big)-1]
	if _, err := s.initialEvents(req, "@alice:"+testServerName, persist.Profile{}); err != nil {
		t.Errorf("content under the bound: %v", err)
	}

	// Through the API.
	g := newAccountsGateway(t, openAccountsDB(t), true)
	reg := register(t, g, "alice", "pw")
	auth := http.Header{"Authorization": {"Bearer " + reg.AccessToken}}
	for what, body := range map[string]string{
		"invites":       createRoomBody(t, maxCreateRoomInvites+1, 0),
		"initial_state": createRoomBody(t, 0, maxCreateRoomInitialState+1),
	} {
		status, resp := rawRequest(t, http.MethodPost, g.url+"/_matrix/client/v3/createRoom", body, auth)
		if status != 400 || resp["errcode"] != matrix.CodeInvalidParam {
			t.Errorf("POST /createRoom with too many %s: %d %v, want 400 M_INVALID_PARAM", what, status, resp)
		}
	}
}
