package load

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// homeserver talks to the server under test. Accounts and rooms are set up with the
// mautrix-go client, the real client the end-to-end tests use; the measured requests
// (send and /sync) go through plain net/http with a prepared body and a minimal
// decoder, because the client library's request building, logging hooks and rich
// response types cost CPU on the same two cores the server runs on, and we want the
// server's cost.
type homeserver struct {
	base string
	http *http.Client
}

func newHomeserver(base string) *homeserver {
	tr := &http.Transport{
		// One kept-alive connection per simulated client, as a real client has.
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}
	return &homeserver{base: base, http: &http.Client{Transport: tr, Timeout: 2 * time.Minute}}
}

// user is one registered account with its access token.
type user struct {
	id     id.UserID
	device id.DeviceID
	token  string
	mx     *mautrix.Client
	txn    int
	// txnPrefix keeps transaction ids of separate runs apart.
	txnPrefix string
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// register creates an account with m.login.dummy (the user-interactive flow: a first
// request for the session, a second with the dummy stage) and no password.
func (hs *homeserver) register(ctx context.Context, localpart string) (*user, error) {
	mx, err := mautrix.NewClient(hs.base, "", "")
	if err != nil {
		return nil, err
	}
	mx.Client = hs.http
	resp, err := mx.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: localpart})
	if err != nil {
		return nil, fmt.Errorf("register %s: %w", localpart, err)
	}
	mx.SetCredentials(resp.UserID, resp.AccessToken)
	return &user{id: resp.UserID, device: resp.DeviceID, token: resp.AccessToken, mx: mx, txnPrefix: randomHex(4)}, nil
}

// registerMany registers n users named prefix_<i>, a few at a time.
func (hs *homeserver) registerMany(ctx context.Context, prefix string, n int) ([]*user, error) {
	users := make([]*user, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for i := range n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			u, err := hs.register(ctx, prefix+"_"+strconv.Itoa(i))
			users[i] = u
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			return nil, err
		}
	}
	return users, nil
}

func (u *user) createRoom(ctx context.Context) (id.RoomID, error) {
	resp, err := u.mx.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		return "", fmt.Errorf("createRoom by %s: %w", u.id, err)
	}
	return resp.RoomID, nil
}

func (u *user) join(ctx context.Context, room id.RoomID) error {
	if _, err := u.mx.JoinRoomByID(ctx, room); err != nil {
		return fmt.Errorf("join %s by %s: %w", room, u.id, err)
	}
	return nil
}

// messageBody is what every measured send carries: a plain text message of a typical
// chat line's length.
var messageBody = []byte(`{"msgtype":"m.text","body":"Load test message: the quick brown fox jumps over the lazy dog, then checks that every event it sent came back through sync in order and exactly once."}`)

// send PUTs one m.room.message and returns its event id.
func (hs *homeserver) send(ctx context.Context, u *user, room id.RoomID) (string, error) {
	u.txn++
	return hs.sendTxn(ctx, u, room, u.txnPrefix+"-"+strconv.Itoa(u.txn), messageBody)
}

// sendTxn PUTs one m.room.message with this transaction id and content, and returns
// its event id.
func (hs *homeserver) sendTxn(ctx context.Context, u *user, room id.RoomID, txn string, content []byte) (string, error) {
	path := "/_matrix/client/v3/rooms/" + url.PathEscape(string(room)) + "/send/m.room.message/" + url.PathEscape(txn)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, hs.base+path, bytes.NewReader(content))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+u.token)
	req.Header.Set("Content-Type", "application/json")
	var out struct {
		EventID string `json:"event_id"`
	}
	if err := hs.do(req, &out); err != nil {
		return "", err
	}
	if out.EventID == "" {
		return "", fmt.Errorf("send: no event_id in the answer")
	}
	return out.EventID, nil
}

// put sends a JSON body with PUT or POST to a client API path and expects a 200.
func (hs *homeserver) put(ctx context.Context, u *user, method, path string, body any) error {
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, hs.base+path, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+u.token)
	req.Header.Set("Content-Type", "application/json")
	var out struct{}
	return hs.do(req, &out)
}

// syncResponse keeps only what the measurement needs of a /sync answer.
type syncResponse struct {
	NextBatch string `json:"next_batch"`
	ToDevice  struct {
		Events []struct {
			Sender  string          `json:"sender"`
			Content json.RawMessage `json:"content"`
		} `json:"events"`
	} `json:"to_device"`
	Rooms struct {
		Join map[string]struct {
			Timeline struct {
				Events []struct {
					EventID string `json:"event_id"`
				} `json:"events"`
				Limited bool `json:"limited"`
			} `json:"timeline"`
			Ephemeral struct {
				Events []struct {
					Type    string          `json:"type"`
					Content json.RawMessage `json:"content"`
				} `json:"events"`
			} `json:"ephemeral"`
		} `json:"join"`
	} `json:"rooms"`
}

// sync makes one /sync request; timeout is the long-poll time.
func (hs *homeserver) sync(ctx context.Context, u *user, since, filter string, timeout time.Duration) (*syncResponse, error) {
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	q.Set("timeout", strconv.FormatInt(timeout.Milliseconds(), 10))
	if filter != "" {
		q.Set("filter", filter)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, hs.base+"/_matrix/client/v3/sync?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+u.token)
	var out syncResponse
	if err := hs.do(req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// do sends req and decodes a 200 answer into out; any other status is an error that
// carries the Matrix error body.
func (hs *homeserver) do(req *http.Request, out any) error {
	resp, err := hs.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return &statusError{method: req.Method, path: req.URL.Path, code: resp.StatusCode, body: string(bytes.TrimSpace(body))}
	}
	return json.Unmarshal(body, out)
}

// statusError is an answer other than 200.
type statusError struct {
	method, path string
	code         int
	body         string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.method, e.path, e.code, e.body)
}
