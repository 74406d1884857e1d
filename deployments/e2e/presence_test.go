package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// seenPresence is a presence event's content as a client received it; nil pointers are
// keys the server left out.
type seenPresence struct {
	Presence        string  `json:"presence"`
	LastActiveAgo   *int64  `json:"last_active_ago"`
	StatusMsg       *string `json:"status_msg"`
	CurrentlyActive *bool   `json:"currently_active"`
}

// presenceIn returns the presence of user in a sync response, and whether there is
// one; a user appears at most once.
func presenceIn(t *testing.T, r *mautrix.RespSync, user id.UserID) (seenPresence, bool) {
	t.Helper()
	var out seenPresence
	found := false
	for _, ev := range r.Presence.Events {
		if ev.Type != event.EphemeralEventPresence || ev.Sender != user {
			continue
		}
		if found {
			t.Errorf("%s's presence appears twice in one response", user)
		}
		if err := json.Unmarshal(ev.Content.VeryRaw, &out); err != nil {
			t.Fatalf("presence content %s: %v", ev.Content.VeryRaw, err)
		}
		found = true
	}
	return out, found
}

// watchPresence syncs as c from since, without changing c's own presence, until
// user's presence satisfies ok; it returns that presence and the token to go on from.
func watchPresence(ctx context.Context, t *testing.T, c *mautrix.Client, since string, user id.UserID, what string,
	ok func(seenPresence) bool) (seenPresence, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last seenPresence
	for {
		r, err := c.SyncRequest(ctx, 5000, since, "", false, event.PresenceOffline)
		if err != nil {
			t.Fatalf("%s: %s watching %s's presence: %v (last seen %+v)", what, c.UserID, user, err, last)
		}
		since = r.NextBatch
		if p, found := presenceIn(t, r, user); found {
			last = p
			if ok(p) {
				return p, since
			}
		}
	}
}

// quietFilter shows nothing at all: a long-poll with it stays open until its timeout.
const quietFilter = `{"room":{"rooms":[]},"presence":{"types":[]}}`

func is(state string) func(seenPresence) bool {
	return func(p seenPresence) bool { return p.Presence == state }
}

// presenceProcess starts one process with the presence section given (none: Synapse's
// defaults) and rc_* keys replacing the generous ones.
func presenceProcess(t *testing.T, section map[string]any, o deploymentOptions) (context.Context, *deployment, *process) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	t.Cleanup(cancel)
	d := newDeployment(t, o)
	if section != nil {
		d.shared["presence"] = section
	}
	return ctx, d, d.startMain()
}

// putPresence is PUT /presence/{user}/status with any body, sent as is when it is
// []byte.
func putPresence(ctx context.Context, c *mautrix.Client, user id.UserID, body any) error {
	req := mautrix.FullRequest{Method: http.MethodPut, URL: c.BuildClientURL("v3", "presence", user, "status"), RequestJSON: body}
	if raw, ok := body.([]byte); ok {
		req.RequestJSON, req.RequestBytes = nil, raw
	}
	_, err := c.MakeFullRequest(ctx, req)
	return err
}

func getPresence(ctx context.Context, c *mautrix.Client, user string) (seenPresence, error) {
	var p seenPresence
	_, err := c.MakeRequest(ctx, http.MethodGet, c.BuildClientURL("v3", "presence", user, "status"), nil, &p)
	return p, err
}

// TestPresence: users sharing a room see each other's presence change in /sync, and a
// long-poll wakes for it; status messages, set_presence, the presence filter, users who
// share no room, newcomers to a room, and every error of the endpoints.
func TestPresence(t *testing.T) {
	ctx, d, hs := presenceProcess(t, nil, deploymentOptions{})
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")
	carol := newUser(ctx, t, hs.url(), "carol")
	dave := newUser(ctx, t, hs.url(), "dave")
	room := createRoomWith(ctx, t, alice, "private_chat", bob, dave)
	createRoomWith(ctx, t, carol, "private_chat")

	// Dave only ever syncs with set_presence=offline: he never comes online.
	if _, err := dave.SyncRequest(ctx, 0, "", "", false, event.PresenceOffline); err != nil {
		t.Fatal(err)
	}
	first, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOffline)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(first.Presence.Events); n != 0 {
		t.Fatalf("initial sync with everyone offline: %d presence events", n)
	}
	carolFirst, err := carol.SyncRequest(ctx, 0, "", "", false, event.PresenceOffline)
	if err != nil {
		t.Fatal(err)
	}

	// Bob long-polls; alice's first sync brings her online and wakes him.
	asked := time.Now()
	woken := longPoll(ctx, t, bob, 30000, first.NextBatch, "", false, event.PresenceOffline)
	time.Sleep(200 * time.Millisecond) // the long-poll waits before alice syncs
	aliceFirst, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	r := <-woken
	if r == nil {
		t.FailNow()
	}
	p, found := presenceIn(t, r, alice.UserID)
	if !found || p.Presence != "online" || p.CurrentlyActive == nil || !*p.CurrentlyActive || p.LastActiveAgo == nil ||
		*p.LastActiveAgo < 0 || *p.LastActiveAgo > 10000 || p.StatusMsg != nil {
		t.Fatalf("bob's long-poll woke after %s with alice's presence %+v (found %v)", time.Since(asked), p, found)
	}
	if _, found := presenceIn(t, r, dave.UserID); found {
		t.Error("dave, syncing with set_presence=offline, shows up")
	}
	// Alice sees herself too: her first sync brought her online before its token, as
	// with Synapse, so that sync already shows it.
	if p, found := presenceIn(t, aliceFirst, alice.UserID); !found || p.Presence != "online" {
		t.Errorf("alice's first sync shows her presence %+v (found %v), want online", p, found)
	}

	// A status message with unavailable: seen in /sync and GET, by her and by bob.
	if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "lunch"}); err != nil {
		t.Fatal(err)
	}
	p, bobNext := watchPresence(ctx, t, bob, r.NextBatch, alice.UserID, "unavailable with a message", is("unavailable"))
	if p.StatusMsg == nil || *p.StatusMsg != "lunch" || p.CurrentlyActive != nil {
		t.Errorf("alice unavailable: %+v", p)
	}
	for _, c := range []*mautrix.Client{alice, bob} {
		got, err := getPresence(ctx, c, alice.UserID.String())
		if err != nil || got.Presence != "unavailable" || got.StatusMsg == nil || *got.StatusMsg != "lunch" || got.LastActiveAgo == nil {
			t.Errorf("%s GETs alice's presence: %+v, %v", c.UserID, got, err)
		}
	}
	// PUT online without a message clears it; set_presence=unavailable on a sync.
	if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline}); err != nil {
		t.Fatal(err)
	}
	p, bobNext = watchPresence(ctx, t, bob, bobNext, alice.UserID, "online again", is("online"))
	if p.StatusMsg != nil {
		t.Errorf("a PUT without status_msg keeps %q", *p.StatusMsg)
	}
	if _, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceUnavailable); err != nil {
		t.Fatal(err)
	}
	_, bobNext = watchPresence(ctx, t, bob, bobNext, alice.UserID, "set_presence=unavailable", is("unavailable"))

	// Bob's initial sync has alice, not dave (offline) nor carol (no shared room).
	all, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOffline)
	if err != nil {
		t.Fatal(err)
	}
	if p, found := presenceIn(t, all, alice.UserID); !found || p.Presence != "unavailable" {
		t.Errorf("bob's initial sync: alice %+v (found %v)", p, found)
	}
	for _, other := range []id.UserID{dave.UserID, carol.UserID} {
		if _, found := presenceIn(t, all, other); found {
			t.Errorf("bob's initial sync shows %s", other)
		}
	}
	// The presence filter.
	for _, filter := range []string{`{"presence":{"types":[]}}`, `{"presence":{"not_senders":["` + alice.UserID.String() + `"]}}`,
		`{"presence":{"senders":["@nobody:x"]}}`} {
		filtered, err := bob.SyncRequest(ctx, 0, "", filter, false, event.PresenceOffline)
		if err != nil {
			t.Fatal(err)
		}
		if _, found := presenceIn(t, filtered, alice.UserID); found {
			t.Errorf("filter %s lets alice's presence through", filter)
		}
	}

	// Carol shares no room: alice's changes never reach her, nor wake her long-poll.
	if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "back"}); err != nil {
		t.Fatal(err)
	}
	quiet, err := carol.SyncRequest(ctx, 1500, carolFirst.NextBatch, "", false, event.PresenceOffline)
	if err != nil {
		t.Fatal(err)
	}
	if len(quiet.Presence.Events) != 0 {
		t.Errorf("carol, sharing no room, got presence %s", quiet.Presence.Events[0].Content.VeryRaw)
	}
	_, err = getPresence(ctx, carol, alice.UserID.String())
	wantError(t, "carol GETs alice's presence", err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = getPresence(ctx, bob, carol.UserID.String())
	wantError(t, "bob GETs carol's presence", err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = getPresence(ctx, bob, "@nobody:"+d.serverName)
	wantError(t, "bob GETs an unknown user's presence", err, http.StatusForbidden, "M_FORBIDDEN")
	if got, err := getPresence(ctx, dave, dave.UserID.String()); err != nil || got.Presence != "offline" || got.LastActiveAgo != nil {
		t.Errorf("dave's own presence, never set: %+v, %v", got, err)
	}

	// A newcomer to the room: bob sees erin's presence, offline as she never synced.
	_, bobNext = watchPresence(ctx, t, bob, bobNext, alice.UserID, "back", func(p seenPresence) bool { return p.StatusMsg != nil && *p.StatusMsg == "back" })
	erin := newUser(ctx, t, hs.url(), "erin")
	if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: erin.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := erin.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	watchPresence(ctx, t, bob, bobNext, erin.UserID, "newcomer", is("offline"))

	// Errors.
	_, err = alice.MakeRequest(ctx, http.MethodPut, alice.BuildClientURL("v3", "presence", bob.UserID, "status"), map[string]any{"presence": "online"}, nil)
	wantError(t, "alice sets bob's presence", err, http.StatusForbidden, "M_FORBIDDEN")
	for _, tc := range []struct {
		what   string
		body   any
		status int
		code   string
	}{
		{"an unknown state", map[string]any{"presence": "busy"}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"no state", map[string]any{"status_msg": "x"}, http.StatusBadRequest, "M_BAD_JSON"},
		{"a state that is not a string", map[string]any{"presence": 1}, http.StatusBadRequest, "M_BAD_JSON"},
		{"a status message that is not a string", map[string]any{"presence": "online", "status_msg": 5}, http.StatusBadRequest, "M_BAD_JSON"},
		{"an unknown key", map[string]any{"presence": "online", "last_active_ago": 5}, http.StatusBadRequest, "M_BAD_JSON"},
		{"a status message too long", map[string]any{"presence": "online", "status_msg": strings.Repeat("x", 5000)}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"a body too large", map[string]any{"presence": "online", "status_msg": strings.Repeat("x", 70000)}, http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
		{"not an object", []string{"online"}, http.StatusBadRequest, "M_BAD_JSON"},
		{"not JSON", []byte(`{"presence":`), http.StatusBadRequest, "M_NOT_JSON"},
	} {
		wantError(t, tc.what, putPresence(ctx, alice, alice.UserID, tc.body), tc.status, tc.code)
	}
	wantError(t, "PUT for a bad user id", putPresence(ctx, alice, "alice", map[string]any{"presence": "online"}), http.StatusBadRequest, "M_INVALID_PARAM")
	_, err = getPresence(ctx, alice, "not-a-user")
	wantError(t, "GET of a bad user id", err, http.StatusBadRequest, "M_INVALID_PARAM")
	_, err = alice.SyncRequest(ctx, 0, "", "", false, "busy")
	wantError(t, "set_presence=busy", err, http.StatusBadRequest, "M_INVALID_PARAM")
	// None of them changed anything (by now alice may have timed out to offline,
	// which keeps her message).
	if got, err := getPresence(ctx, bob, alice.UserID.String()); err != nil || got.StatusMsg == nil || *got.StatusMsg != "back" {
		t.Errorf("alice's presence after refused changes: %+v, %v", got, err)
	}
}

// checkPresenceAcross: presence set through one gateway reaches the /sync of a user
// sharing a room on the other, whichever process writes the stream.
func checkPresenceAcross(ctx context.Context, t *testing.T, c streamClients) {
	first, err := c.bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOffline)
	if err != nil {
		t.Fatal(err)
	}
	marker := "across " + randomLetters(8)
	if err := at(c.alice, c.bob.HomeserverURL.String()).SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: marker}); err != nil {
		t.Fatal(err)
	}
	watchPresence(ctx, t, c.bob, first.NextBatch, c.alice.UserID, "presence set through the other gateway", func(p seenPresence) bool {
		return p.Presence == "unavailable" && p.StatusMsg != nil && *p.StatusMsg == marker
	})
	if got, err := getPresence(ctx, c.alice, c.alice.UserID.String()); err != nil || got.StatusMsg == nil || *got.StatusMsg != marker {
		t.Errorf("read back: %+v, %v", got, err)
	}
}

// presenceRedisCheck: Synapse's presence row, [user_id, state, last_active_ts,
// last_federation_update_ts, last_user_sync_ts, status_msg|null, currently_active].
var presenceRedisCheck = redisStreamCheck{
	stream: "presence",
	act: func(ctx context.Context, t *testing.T, alice, _ *mautrix.Client, _ id.RoomID) {
		if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "on Redis"}); err != nil {
			t.Fatal(err)
		}
	},
	row: func(f []json.RawMessage, alice, _ *mautrix.Client, _ id.RoomID) (bool, error) {
		var user, state string
		var active, fed, synced int64
		var msg *string
		var current bool
		if len(f) != 7 {
			return false, errors.New("want 7 fields")
		}
		for i, dst := range []any{&user, &state, &active, &fed, &synced, &msg, &current} {
			if err := json.Unmarshal(f[i], dst); err != nil {
				return false, fmt.Errorf("field %d: %v", i, err)
			}
		}
		return user == alice.UserID.String() && state == "unavailable" && msg != nil && *msg == "on Redis" && active >= 0 && fed > 0, nil
	},
}

// TestPresenceTimeouts: with short timers, a user holding a long-poll stops being
// currently active, then becomes unavailable when idle, and goes offline once the
// long-poll ends; a PUT alone, without syncing, lasts the sync timeout.
func TestPresenceTimeouts(t *testing.T) {
	// Long enough that a loaded machine still says "alive" within the lease (2.5 s).
	ctx, _, hs := presenceProcess(t, map[string]any{"last_active_granularity": "1s", "sync_online_timeout": "3s", "idle_timeout": 2500}, deploymentOptions{})
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")
	createRoomWith(ctx, t, alice, "private_chat", bob)
	first, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOffline)
	if err != nil {
		t.Fatal(err)
	}

	// Alice holds one long-poll that nothing ends: her own presence is filtered out.
	aliceFirst, err := alice.SyncRequest(ctx, 0, "", quietFilter, false, event.PresenceOffline)
	if err != nil {
		t.Fatal(err)
	}
	pollCtx, endPoll := context.WithCancel(ctx)
	defer endPoll()
	polled := make(chan error, 1)
	go func() {
		_, err := alice.FullSyncRequest(pollCtx, mautrix.ReqSync{Timeout: 60000, Since: aliceFirst.NextBatch, FilterID: quietFilter,
			SetPresence: event.PresenceOnline})
		polled <- err
	}()
	start := time.Now()
	p, next := watchPresence(ctx, t, bob, first.NextBatch, alice.UserID, "online", is("online"))
	if p.CurrentlyActive == nil || !*p.CurrentlyActive {
		t.Errorf("alice online: %+v", p)
	}
	_, next = watchPresence(ctx, t, bob, next, alice.UserID, "no longer current", func(p seenPresence) bool {
		return p.Presence == "online" && p.CurrentlyActive != nil && !*p.CurrentlyActive
	})
	_, next = watchPresence(ctx, t, bob, next, alice.UserID, "idle", is("unavailable"))
	if d := time.Since(start); d < 2500*time.Millisecond {
		t.Errorf("unavailable after %s, before the idle timeout", d)
	}
	// Well past the sync timeout, the open long-poll keeps her there.
	time.Sleep(3500 * time.Millisecond)
	if got, err := getPresence(ctx, alice, alice.UserID.String()); err != nil || got.Presence != "unavailable" {
		t.Errorf("alice while her long-poll is open: %+v, %v", got, err)
	}
	endPoll()
	<-polled
	ended := time.Now()
	_, next = watchPresence(ctx, t, bob, next, alice.UserID, "stopped syncing", is("offline"))
	if d := time.Since(ended); d < 3*time.Second {
		t.Errorf("offline %s after the long-poll ended, before the sync timeout", d)
	}

	// A PUT without syncing: online for the sync timeout.
	if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline}); err != nil {
		t.Fatal(err)
	}
	_, next = watchPresence(ctx, t, bob, next, alice.UserID, "PUT online", is("online"))
	watchPresence(ctx, t, bob, next, alice.UserID, "PUT lapsed", is("offline"))
}

// TestPresenceDisabled: a server that had presence on restarts with it off; clients
// still get the offline states it announces once, then the endpoints answer as
// Synapse's do with presence off (still rate limited) and /sync carries no presence.
func TestPresenceDisabled(t *testing.T) {
	synapseLimit := map[string]any{"rc_presence": map[string]any{"per_user": map[string]any{"per_second": 0.1, "burst_count": 1}}}
	ctx, d, hs := presenceProcess(t, nil, deploymentOptions{rateLimits: synapseLimit})
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")
	createRoomWith(ctx, t, alice, "private_chat", bob)
	if _, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline); err != nil {
		t.Fatal(err)
	}
	_, next := watchPresence(ctx, t, bob, "", alice.UserID, "online", is("online"))

	d.shared["presence"] = map[string]any{"enabled": false}
	cfg := maps.Clone(d.shared)
	cfg["listeners"] = clientListener(hs.port)
	d.writeYAML("homeserver.yaml", cfg)
	hs.stop()
	hs.restart()

	p, next := watchPresence(ctx, t, bob, next, alice.UserID, "presence turned off", is("offline"))
	if p.StatusMsg != nil || p.CurrentlyActive != nil {
		t.Errorf("offline with %+v", p)
	}
	if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "hi"}); err != nil {
		t.Fatalf("PUT with presence off: %v", err)
	}
	err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline})
	wantError(t, "a second PUT within rc_presence", err, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	wantError(t, "alice sets bob's presence", putPresence(ctx, alice, bob.UserID, map[string]any{"presence": "online"}),
		http.StatusForbidden, "M_FORBIDDEN")
	for _, c := range []*mautrix.Client{alice, bob} {
		for _, user := range []string{alice.UserID.String(), "@nobody:" + d.serverName} {
			got, err := getPresence(ctx, c, user)
			if err != nil || got != (seenPresence{Presence: "offline"}) {
				t.Errorf("%s GETs %s with presence off: %+v, %v", c.UserID, user, got, err)
			}
		}
	}
	if _, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline); err != nil {
		t.Fatal(err)
	}
	quiet, err := bob.SyncRequest(ctx, 1000, next, "", false, event.PresenceOnline)
	if err != nil || len(quiet.Presence.Events) != 0 {
		t.Errorf("incremental sync with presence off: %v, %v", quiet, err)
	}
	all, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil || len(all.Presence.Events) != 0 {
		t.Errorf("initial sync with presence off: %v, %v", all, err)
	}
}

// TestPresenceAcrossProcesses: a sync worker tells the presence writer (the main
// process) who syncs on it; when the worker stops, its users go offline after the sync
// timeout (Synapse's CLEAR_USER_SYNC), and when it crashes, once the writer stops
// hearing from it.
func TestPresenceAcrossProcesses(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{externalNATS: true})
	d.shared["presence"] = map[string]any{"last_active_granularity": "3s", "sync_online_timeout": "3s"}
	hs := d.startMain()
	worker := d.launchWorker("sync1", true)
	worker.waitReady()
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")
	createRoomWith(ctx, t, alice, "private_chat", bob)
	next := ""

	for _, end := range []struct {
		what string
		do   func()
	}{
		{"worker stopped", worker.stop},
		{"worker crashed", worker.kill9},
	} {
		there := at(alice, worker.url())
		first, err := there.SyncRequest(ctx, 0, "", quietFilter, false, event.PresenceOffline)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			_, _ = there.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: 60000, Since: first.NextBatch, FilterID: quietFilter,
				SetPresence: event.PresenceOnline})
		}()
		_, next = watchPresence(ctx, t, bob, next, alice.UserID, "online through the worker", is("online"))
		// Well past the sync timeout, the worker's open long-poll keeps her online.
		time.Sleep(4 * time.Second)
		if got, err := getPresence(ctx, bob, alice.UserID.String()); err != nil || got.Presence != "online" {
			t.Fatalf("alice long-polling on the worker: %+v, %v", got, err)
		}
		end.do()
		_, next = watchPresence(ctx, t, bob, next, alice.UserID, end.what, is("offline"))
		worker.restart()
	}
}
