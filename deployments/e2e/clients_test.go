package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// syncFilter is an inline filter: timelines long enough that no test's incremental sync
// is ever legitimately limited.
const syncFilter = `{"room":{"timeline":{"limit":500}}}`

// noPresence leaves presence out of a /sync: a long-poll a test expects one stream's
// change to wake is then not woken first by users coming online as they sync.
const noPresence = `{"presence":{"types":[]}}`

const password = "correct horse battery staple"

// newUser registers localpart with m.login.dummy, then logs in with the password and
// returns a client holding the login's device and token.
func newUser(ctx context.Context, t *testing.T, baseURL, localpart string) *mautrix.Client {
	t.Helper()
	if externalURL != "" {
		// A deployment shared by every test and run: names of their own.
		localpart += "-" + randomLetters(8)
	}
	reg, err := mautrix.NewClient(baseURL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	res, err := reg.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: localpart, Password: password})
	if err != nil {
		t.Fatalf("register %s: %v", localpart, err)
	}
	cli, err := mautrix.NewClient(baseURL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	login, err := cli.Login(ctx, &mautrix.ReqLogin{
		Type:             mautrix.AuthTypePassword,
		Identifier:       mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: localpart},
		Password:         password,
		StoreCredentials: true,
	})
	if err != nil {
		t.Fatalf("login %s: %v", localpart, err)
	}
	if login.UserID != res.UserID {
		t.Fatalf("login as %s gave user %s, registration gave %s", localpart, login.UserID, res.UserID)
	}
	if login.AccessToken == "" || login.DeviceID == "" || login.DeviceID == res.DeviceID {
		t.Fatalf("login %s: got a token: %v, device %q (registration's device %q): want a token and a new device", localpart, login.AccessToken != "", login.DeviceID, res.DeviceID)
	}
	return cli
}

// at returns a client for the same user and device that talks to another process.
func at(c *mautrix.Client, baseURL string) *mautrix.Client {
	other, err := mautrix.NewClient(baseURL, c.UserID, c.AccessToken)
	if err != nil {
		panic(err) // baseURL comes from the harness and always parses
	}
	other.DeviceID = c.DeviceID
	return other
}

// wantError fails the test unless err is a Matrix error with this status and code.
func wantError(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	var he mautrix.HTTPError
	if !errors.As(err, &he) || he.Response == nil {
		t.Errorf("%s: got %v, want HTTP %d %s", what, err, status, code)
		return
	}
	got := ""
	if he.RespError != nil {
		got = he.RespError.ErrCode
	}
	if he.Response.StatusCode != status || got != code {
		t.Errorf("%s: got HTTP %d %s (%s), want %d %s", what, he.Response.StatusCode, got, he.ResponseBody, status, code)
	}
}

func textContent(body string) map[string]any {
	return map[string]any{"msgtype": "m.text", "body": body}
}

// sendText sends an m.room.message with an explicit transaction id.
func sendText(ctx context.Context, c *mautrix.Client, room id.RoomID, txn, body string) (id.EventID, error) {
	resp, err := c.SendMessageEvent(ctx, room, event.EventMessage, textContent(body), mautrix.ReqSendEvent{TransactionID: txn})
	if err != nil {
		return "", err
	}
	if resp.EventID == "" {
		return "", fmt.Errorf("send %s: empty event_id", txn)
	}
	return resp.EventID, nil
}

// sendTexts sends n messages to room, with transaction IDs prefix0, prefix1, ..., and
// returns their event IDs in order.
func sendTexts(ctx context.Context, t *testing.T, c *mautrix.Client, room id.RoomID, prefix string, n int) []string {
	t.Helper()
	sent := make([]string, 0, n)
	for i := range n {
		ev, err := sendText(ctx, c, room, prefix+strconv.Itoa(i), "message "+strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, string(ev))
	}
	return sent
}

// createRoomWith creates a room and brings every other user in with an invite and a
// join, the way clients do it.
func createRoomWith(ctx context.Context, t *testing.T, creator *mautrix.Client, preset string, others ...*mautrix.Client) id.RoomID {
	t.Helper()
	resp, err := creator.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: preset})
	if err != nil {
		t.Fatalf("createRoom: %v", err)
	}
	for _, o := range others {
		if _, err := creator.InviteUser(ctx, resp.RoomID, &mautrix.ReqInviteUser{UserID: o.UserID}); err != nil {
			t.Fatalf("invite %s: %v", o.UserID, err)
		}
		if _, err := o.JoinRoomByID(ctx, resp.RoomID); err != nil {
			t.Fatalf("join %s: %v", o.UserID, err)
		}
	}
	return resp.RoomID
}

// syncUntilJoined syncs from scratch until every room is in the join section, and
// returns the token to follow from. A sync worker may lag behind the gateway that
// answered the join; the loop waits for it.
func syncUntilJoined(ctx context.Context, c *mautrix.Client, rooms []id.RoomID) (string, error) {
	seen := map[id.RoomID]bool{}
	since := ""
	for {
		resp, err := c.SyncRequest(ctx, 5000, since, syncFilter, false, "")
		if err != nil {
			return "", fmt.Errorf("%s: sync since %q: %w", c.UserID, since, err)
		}
		if resp.NextBatch == "" {
			return "", fmt.Errorf("%s: sync since %q: no next_batch", c.UserID, since)
		}
		for r := range resp.Rooms.Join {
			seen[r] = true
		}
		since = resp.NextBatch
		if !slices.ContainsFunc(rooms, func(r id.RoomID) bool { return !seen[r] }) {
			return since, nil
		}
	}
}

// timelines is what one client saw through /sync, room by room, in order.
type timelines map[id.RoomID][]*event.Event

// follow runs incremental syncs from since and appends the timeline events of rooms
// until done says it has seen enough. A limited timeline is an error: it would mean the
// server skipped events this client never got.
func follow(ctx context.Context, c *mautrix.Client, since string, rooms []id.RoomID, done func(timelines) bool) (timelines, error) {
	got := timelines{}
	for !done(got) {
		resp, err := c.SyncRequest(ctx, 5000, since, syncFilter, false, "")
		if err != nil {
			return got, fmt.Errorf("%s: sync since %s: %w", c.UserID, since, err)
		}
		for _, r := range rooms {
			jr := resp.Rooms.Join[r]
			if jr == nil {
				continue
			}
			if jr.Timeline.Limited {
				return got, fmt.Errorf("%s: room %s: limited timeline (%d events) in incremental sync since %s", c.UserID, r, len(jr.Timeline.Events), since)
			}
			got[r] = append(got[r], jr.Timeline.Events...)
		}
		if resp.NextBatch == "" {
			return got, fmt.Errorf("%s: sync since %s: no next_batch", c.UserID, since)
		}
		since = resp.NextBatch
	}
	return got, nil
}

// barriers are the last events the tests send into their rooms; a follower that has
// seen all of them has seen everything before them too (no gaps in sync).
type barriers struct {
	mu  sync.Mutex
	ids map[id.RoomID]id.EventID
	n   int
}

func newBarriers(rooms int) *barriers { return &barriers{ids: map[id.RoomID]id.EventID{}, n: rooms} }

func (b *barriers) set(room id.RoomID, ev id.EventID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ids[room] = ev
}

func (b *barriers) get(room id.RoomID) id.EventID {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ids[room]
}

// allSeen is a done function for follow.
func (b *barriers) allSeen(tl timelines) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.ids) < b.n {
		return false
	}
	for room, ev := range b.ids {
		if !slices.ContainsFunc(tl[room], func(e *event.Event) bool { return e.ID == ev }) {
			return false
		}
	}
	return true
}

// setBarriers sends a topic change into every room as its barrier.
func setBarriers(ctx context.Context, c *mautrix.Client, rooms []id.RoomID, b *barriers) error {
	for _, room := range rooms {
		resp, err := c.SendStateEvent(ctx, room, event.StateTopic, "", map[string]any{"topic": "done"})
		if err != nil {
			return fmt.Errorf("barrier in %s: %w", room, err)
		}
		b.set(room, resp.EventID)
	}
	return nil
}

// messagesBackwards pages /messages backwards with limit 10 from the newest event until
// the server leaves out end, and returns the events oldest first.
func messagesBackwards(ctx context.Context, c *mautrix.Client, room id.RoomID) ([]*event.Event, error) {
	var newestFirst []*event.Event
	from := ""
	for pages := 0; ; pages++ {
		if pages > 10000 {
			return nil, fmt.Errorf("/messages did not end after %d pages", pages)
		}
		resp, err := c.Messages(ctx, room, from, "", mautrix.DirectionBackward, nil, 10)
		if err != nil {
			return nil, fmt.Errorf("/messages from %q: %w", from, err)
		}
		if len(resp.Chunk) > 10 {
			return nil, fmt.Errorf("/messages from %q: %d events with limit 10", from, len(resp.Chunk))
		}
		newestFirst = append(newestFirst, resp.Chunk...)
		if resp.End == "" {
			break
		}
		if resp.End == from {
			return nil, fmt.Errorf("/messages from %q: end is the same token", from)
		}
		from = resp.End
	}
	slices.Reverse(newestFirst)
	return newestFirst, nil
}

// ofType keeps the events of one type, in order.
func ofType(evs []*event.Event, typ event.Type) []*event.Event {
	var out []*event.Event
	for _, e := range evs {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

func eventIDs(evs []*event.Event) []id.EventID {
	out := make([]id.EventID, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

// duplicateID returns an event id that occurs twice, or "".
func duplicateID(evs []*event.Event) id.EventID {
	seen := map[id.EventID]bool{}
	for _, e := range evs {
		if seen[e.ID] {
			return e.ID
		}
		seen[e.ID] = true
	}
	return ""
}

// longPoll starts c's /sync in the background, as SyncRequest takes its arguments, and
// returns where its response arrives (nil, with the test marked failed, on an error).
func longPoll(ctx context.Context, t *testing.T, c *mautrix.Client, timeout int, since, filter string, fullState bool, setPresence event.Presence) <-chan *mautrix.RespSync {
	done := make(chan *mautrix.RespSync, 1)
	go func() {
		r, err := c.SyncRequest(ctx, timeout, since, filter, fullState, setPresence)
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	return done
}

// eventually retries check until it succeeds, for reads of what another user (or the
// server on a user's behalf) just wrote: projections follow the answers, and only a
// device's own writes are waited for. It fails the test with the last error after 10 s.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: %v", what, err)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
