package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zaptest"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/accounts"
	"github.com/ganglionhq/ganglion/persist/projtest"
	"github.com/ganglionhq/ganglion/schemas"
)

// stepFeed is a sync feed whose visible position the test moves by hand, so a test can
// hold back rows that are already in Postgres, as a slow writer would.
type stepFeed struct {
	mu      sync.Mutex
	pos     uint64
	waiting int
	moved   chan struct{}
}

func newStepFeed(pos uint64) *stepFeed { return &stepFeed{pos: pos, moved: make(chan struct{})} }

func (f *stepFeed) Position() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pos
}

func (f *stepFeed) Wait(ctx context.Context, since uint64, _ string, _ []string) uint64 {
	f.mu.Lock()
	f.waiting++
	defer func() { f.mu.Lock(); f.waiting--; f.mu.Unlock() }()
	for f.pos <= since {
		moved := f.moved
		f.mu.Unlock()
		select {
		case <-moved:
		case <-ctx.Done():
			return f.Position()
		}
		f.mu.Lock()
	}
	pos := f.pos
	f.mu.Unlock()
	return pos
}

func (f *stepFeed) Notify(since uint64, _ []string, ch chan<- struct{}) func() {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		f.Wait(ctx, since, "", nil)
		if ctx.Err() == nil {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	return cancel
}

func (f *stepFeed) WaitPosition(ctx context.Context, seq uint64) {
	if seq > 0 {
		f.Wait(ctx, seq-1, "", nil)
	}
}

// End is the position: the feed has read everything there is.
func (f *stepFeed) End(context.Context) (uint64, error) { return f.Position(), nil }

// Received is the position: the feed shows whatever it reads.
func (f *stepFeed) Received() uint64 { return f.Position() }

// NewSince knows nothing of keys: anything after since may concern anyone.
func (f *stepFeed) NewSince(since uint64, _ []string) (bool, bool) {
	return f.Position() > since, true
}

// ChangedKeys knows nothing of keys either: all of them, when anything came.
func (f *stepFeed) ChangedKeys(since uint64, keys []string) (map[string]bool, bool) {
	changed := map[string]bool{}
	if f.Position() > since {
		for _, k := range keys {
			changed[k] = true
		}
	}
	return changed, true
}

func (f *stepFeed) set(pos uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pos = pos
	close(f.moved)
	f.moved = make(chan struct{})
}

func (f *stepFeed) waiters() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.waiting
}

// syncTestRoom is a room of real signed events, projected at log sequences the test
// chooses.
type syncTestRoom struct {
	*projtest.Room
	t  *testing.T
	db *persist.DB
}

func (r *syncTestRoom) project(seq uint64, evs ...projtest.Event) {
	r.t.Helper()
	if err := r.db.Project(context.Background(), projtest.Writer, []persist.BatchAt{{Seq: seq, Batch: r.Batch(evs...)}}); err != nil {
		r.t.Fatal(err)
	}
}

// syncClient calls /sync as one user.
type syncClient struct {
	t     *testing.T
	url   string
	token string
}

type syncTestBody struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join   map[string]syncTestRoomBody `json:"join"`
		Invite map[string]struct {
			InviteState struct {
				Events []map[string]any `json:"events"`
			} `json:"invite_state"`
		} `json:"invite"`
		Leave map[string]syncTestRoomBody `json:"leave"`
	} `json:"rooms"`
	raw map[string]any
}

type syncTestRoomBody struct {
	Timeline struct {
		Events    []map[string]any `json:"events"`
		Limited   bool             `json:"limited"`
		PrevBatch string           `json:"prev_batch"`
	} `json:"timeline"`
	State struct {
		Events []map[string]any `json:"events"`
	} `json:"state"`
}

// get calls /sync with query and returns the status and the decoded body.
func (c *syncClient) get(query url.Values) (int, *syncTestBody) {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.url+"/_matrix/client/v3/sync?"+query.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body syncTestBody
	dec := json.NewDecoder(resp.Body)
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		c.t.Fatal(err)
	}
	_ = json.Unmarshal(raw, &body)
	_ = json.Unmarshal(raw, &body.raw)
	return resp.StatusCode, &body
}

func (c *syncClient) sync(kv ...string) *syncTestBody {
	c.t.Helper()
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	status, body := c.get(q)
	if status != http.StatusOK {
		c.t.Fatalf("sync %v: status %d: %v", q, status, body.raw)
	}
	return body
}

func (c *syncClient) syncError(kv ...string) (int, string) {
	c.t.Helper()
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	status, body := c.get(q)
	code, _ := body.raw["errcode"].(string)
	return status, code
}

// names lists events by label, or by type/state_key for stripped events.
func (r *syncTestRoom) names(evs []map[string]any) []string {
	out := []string{}
	for _, e := range evs {
		if id, ok := e["event_id"].(string); ok {
			out = append(out, r.Label(id))
			continue
		}
		out = append(out, fmt.Sprintf("%v/%v", e["type"], e["state_key"]))
	}
	return out
}

func txnID(ev map[string]any) any {
	unsigned, _ := ev["unsigned"].(map[string]any)
	return unsigned["transaction_id"]
}

func newSyncTestUser(t *testing.T, db *persist.DB, userID, deviceID string) string {
	t.Helper()
	tok, hash := newAccessToken(userID)
	projectAccounts(t, db, schemas.AccountsRecord{Kind: schemas.AccountUserCreated, User: userID, Device: deviceID, TokenHash: hash[:]})
	return tok
}

// accountsSeq numbers the accounts records tests project without a writer.
var accountsSeq atomic.Uint64

// projectAccounts stores accounts records as the accounts stream's writer would, for
// tests of reads that need no writer.
func projectAccounts(t *testing.T, db *persist.DB, recs ...schemas.AccountsRecord) {
	t.Helper()
	ptrs := make([]*schemas.AccountsRecord, len(recs))
	seqs := make([]uint64, len(recs))
	for i := range recs {
		seqs[i] = accountsSeq.Add(1)
		recs[i].V, recs[i].TS, recs[i].Write = schemas.AccountsVersion, time.Now().UnixMilli(), fmt.Sprint("write-", seqs[i])
		ptrs[i] = &recs[i]
	}
	if err := pgx.BeginFunc(context.Background(), db.Pool, func(tx pgx.Tx) error {
		return accounts.Project(context.Background(), tx, ptrs, seqs)
	}); err != nil {
		t.Fatal(err)
	}
}

// syncServer is a client API server over a real database and a step feed at 0.
type syncServer struct {
	*Server
	db   *persist.DB
	feed *stepFeed
	url  string
}

func newSyncServer(t *testing.T) *syncServer {
	t.Helper()
	db := openAccountsDB(t)
	feed := newStepFeed(0)
	srv := &Server{ServerName: testServerName, DB: db, Feed: feed, Log: zaptest.NewLogger(t)}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &syncServer{Server: srv, db: db, feed: feed, url: hs.URL}
}

func TestSyncSections(t *testing.T) {
	t.Parallel()
	ss := newSyncServer(t)
	db, feed := ss.db, ss.feed
	const alice, bob = "@alice:" + testServerName, "@bob:" + testServerName
	aliceC := &syncClient{t: t, url: ss.url, token: newSyncTestUser(t, db, alice, "ALICEDEV")}
	bobC := &syncClient{t: t, url: ss.url, token: newSyncTestUser(t, db, bob, "BOBDEV")}

	room := &syncTestRoom{Room: projtest.NewRoom(t, "!room:"+testServerName, testServerName), t: t, db: db}
	room.project(1,
		projtest.State("create", "m.room.create", alice, map[string]any{"room_version": "11"}),
		projtest.Member("alice-join", alice, alice, "join"),
		projtest.State("join-rules", "m.room.join_rules", alice, map[string]any{"join_rule": "invite"}),
		projtest.State("name", "m.room.name", alice, map[string]any{"name": "room"}))
	room.project(2, projtest.Member("bob-invite", bob, alice, "invite"))
	feed.set(2)

	// Initial syncs: alice is joined, bob invited.
	b := bobC.sync()
	if b.NextBatch != "s2" || len(b.Rooms.Join) != 0 || len(b.Rooms.Leave) != 0 {
		t.Fatalf("bob initial: next %s, %d joined, %d left", b.NextBatch, len(b.Rooms.Join), len(b.Rooms.Leave))
	}
	inv := room.names(b.Rooms.Invite[room.ID].InviteState.Events)
	if want := []string{"m.room.create/", "m.room.join_rules/", "m.room.name/", "m.room.member/" + bob}; !slices.Equal(inv, want) {
		t.Errorf("bob's invite state %v, want %v", inv, want)
	}
	for _, key := range []string{"account_data", "presence", "to_device"} {
		if evs, ok := b.raw[key].(map[string]any)["events"].([]any); !ok || len(evs) != 0 {
			t.Errorf("top-level %s: %v", key, b.raw[key])
		}
	}
	if dl, ok := b.raw["device_lists"].(map[string]any); !ok || dl["changed"] == nil || dl["left"] == nil {
		t.Errorf("device_lists: %v", b.raw["device_lists"])
	}
	a := aliceC.sync()
	j := a.Rooms.Join[room.ID]
	if tl := room.names(j.Timeline.Events); !slices.Equal(tl, []string{"create", "alice-join", "join-rules", "name", "bob-invite"}) ||
		j.Timeline.Limited || j.Timeline.PrevBatch != "t1_0" || len(j.State.Events) != 0 {
		t.Errorf("alice initial: timeline %v limited %v prev %s state %v", tl, j.Timeline.Limited, j.Timeline.PrevBatch, room.names(j.State.Events))
	}

	// Bob joins and talks at 3. Message 4 is in Postgres but not visible: a slow
	// writer holds the position at 3, and nothing of 4 may leak.
	hi := projtest.Message("hi", bob)
	hi.DeviceID, hi.TxnID = "BOBDEV", "txn1"
	room.project(3, projtest.Member("bob-join", bob, bob, "join"), hi)
	room.project(4, projtest.Message("hidden", alice))
	feed.set(3)
	b = bobC.sync("since", "s2", "filter", `{"room":{"timeline":{"limit":2}}}`)
	j = b.Rooms.Join[room.ID]
	if b.NextBatch != "s3" || len(b.Rooms.Invite) != 0 {
		t.Fatalf("bob after joining: next %s, invites %v", b.NextBatch, b.Rooms.Invite)
	}
	if tl := room.names(j.Timeline.Events); !slices.Equal(tl, []string{"bob-join", "hi"}) || !j.Timeline.Limited || j.Timeline.PrevBatch != "t3_0" {
		t.Errorf("bob's new room: timeline %v limited %v prev %s", tl, j.Timeline.Limited, j.Timeline.PrevBatch)
	}
	// A room new to the client whose timeline does not reach back to the start of its
	// readable history is limited, however few events the filter lets through.
	b = bobC.sync("since", "s2", "filter", `{"room":{"timeline":{"limit":10,"types":["m.room.message"]}}}`)
	if j := b.Rooms.Join[room.ID]; !slices.Equal(room.names(j.Timeline.Events), []string{"hi"}) || !j.Timeline.Limited {
		t.Errorf("bob's new room, messages only: timeline %v limited %v", room.names(j.Timeline.Events), j.Timeline.Limited)
	}
	b = bobC.sync("since", "s2", "filter", `{"room":{"timeline":{"limit":10}}}`)
	if j := b.Rooms.Join[room.ID]; len(j.Timeline.Events) != 7 || j.Timeline.Limited {
		t.Errorf("bob's new room from its creation: timeline %v limited %v", room.names(j.Timeline.Events), j.Timeline.Limited)
	}
	// A new join gets the full state at the start of its timeline.
	if st := room.names(j.State.Events); !slices.Equal(st, []string{"create", "alice-join", "join-rules", "name", "bob-invite"}) {
		t.Errorf("bob's new room state: %v", st)
	}
	if txn := txnID(j.Timeline.Events[1]); txn != "txn1" {
		t.Errorf("transaction_id for the sending device: %v", txn)
	}
	a = aliceC.sync("since", "s2", "timeout", "0")
	j = a.Rooms.Join[room.ID]
	if tl := room.names(j.Timeline.Events); !slices.Equal(tl, []string{"bob-join", "hi"}) || j.Timeline.Limited || len(j.State.Events) != 0 {
		t.Errorf("alice incremental: timeline %v limited %v state %v", tl, j.Timeline.Limited, room.names(j.State.Events))
	}
	if txn := txnID(j.Timeline.Events[1]); txn != nil {
		t.Error("transaction_id shown to another user")
	}

	// A long-poll with nothing new waits, and wakes when the position moves.
	done := make(chan *syncTestBody, 1)
	go func() { done <- bobC.sync("since", "s3", "timeout", "30000") }()
	for feed.waiters() == 0 {
		time.Sleep(time.Millisecond)
	}
	feed.set(4)
	b = <-done
	if tl := room.names(b.Rooms.Join[room.ID].Timeline.Events); b.NextBatch != "s4" || !slices.Equal(tl, []string{"hidden"}) {
		t.Errorf("long-poll: next %s timeline %v", b.NextBatch, tl)
	}

	// A gap larger than the limit: limited, and the state changes of the gap.
	evs := []projtest.Event{projtest.State("rename", "m.room.name", alice, map[string]any{"name": "renamed"})}
	for i := range 12 {
		evs = append(evs, projtest.Message(fmt.Sprintf("m%d", i), alice))
	}
	room.project(5, evs...)
	feed.set(5)
	b = bobC.sync("since", "s4", "filter", `{"room":{"timeline":{"limit":5}}}`)
	j = b.Rooms.Join[room.ID]
	if tl := room.names(j.Timeline.Events); !slices.Equal(tl, []string{"m7", "m8", "m9", "m10", "m11"}) || !j.Timeline.Limited || j.Timeline.PrevBatch != "t5_8" {
		t.Errorf("limited: timeline %v limited %v prev %s", tl, j.Timeline.Limited, j.Timeline.PrevBatch)
	}
	if st := room.names(j.State.Events); !slices.Equal(st, []string{"rename"}) {
		t.Errorf("limited: state %v, want the rename only", st)
	}
	// The same through a stored filter.
	projectAccounts(t, db, schemas.AccountsRecord{Kind: schemas.AccountFilterCreated, User: bob, FilterID: 3,
		Filter: json.RawMessage(`{"room":{"timeline":{"limit":1}}}`)})
	b = bobC.sync("since", "s4", "filter", "3")
	if tl := room.names(b.Rooms.Join[room.ID].Timeline.Events); !slices.Equal(tl, []string{"m11"}) {
		t.Errorf("stored filter: timeline %v", tl)
	}

	// Bob leaves: the room moves to his leave section, alice sees it in her timeline.
	room.project(6, projtest.Member("bob-leave", bob, bob, "leave"))
	feed.set(6)
	b = bobC.sync("since", "s5")
	l, ok := b.Rooms.Leave[room.ID]
	if _, joined := b.Rooms.Join[room.ID]; !ok || joined {
		t.Fatalf("bob after leaving: join %v leave %v", b.Rooms.Join, b.Rooms.Leave)
	}
	if tl := room.names(l.Timeline.Events); !slices.Equal(tl, []string{"bob-leave"}) {
		t.Errorf("bob's leave timeline %v", tl)
	}
	a = aliceC.sync("since", "s5", "full_state", "true")
	j = a.Rooms.Join[room.ID]
	if tl := room.names(j.Timeline.Events); !slices.Equal(tl, []string{"bob-leave"}) {
		t.Errorf("alice full_state timeline %v", tl)
	}
	if st := room.names(j.State.Events); !slices.Equal(st, []string{"create", "alice-join", "join-rules", "bob-join", "rename"}) {
		t.Errorf("alice full_state state %v", st)
	}
	// Bob is out: nothing more for him, and his initial sync no longer lists the room
	// unless he asks for left rooms.
	b = bobC.sync("since", "s6", "timeout", "50")
	if b.NextBatch != "s6" || len(b.Rooms.Join)+len(b.Rooms.Invite)+len(b.Rooms.Leave) != 0 {
		t.Errorf("bob with nothing new: next %s, rooms %v", b.NextBatch, b.raw["rooms"])
	}
	if b = bobC.sync(); len(b.Rooms.Join)+len(b.Rooms.Leave) != 0 {
		t.Errorf("bob initial after leaving: %v", b.raw["rooms"])
	}
	// Asked for, a left room comes with its recent history up to the leave, as bob
	// saw it (as Synapse).
	b = bobC.sync("filter", `{"room":{"include_leave":true,"timeline":{"limit":3}}}`)
	if l := b.Rooms.Leave[room.ID]; !slices.Equal(room.names(l.Timeline.Events), []string{"m10", "m11", "bob-leave"}) || !l.Timeline.Limited {
		t.Errorf("bob initial with include_leave: %v", b.raw["rooms"])
	}
	// A token ahead of this process's position never moves back.
	if b = bobC.sync("since", "s9"); b.NextBatch != "s9" {
		t.Errorf("token ahead of the position: next %s", b.NextBatch)
	}
}

func TestSyncRejectsBadParameters(t *testing.T) {
	t.Parallel()
	ss := newSyncServer(t)
	c := &syncClient{t: t, url: ss.url, token: newSyncTestUser(t, ss.db, "@u:"+testServerName, "DEV")}
	cases := []struct {
		kv     []string
		status int
		code   string
	}{
		{[]string{"since", "garbage"}, 400, "M_INVALID_PARAM"},
		{[]string{"since", "s-1"}, 400, "M_INVALID_PARAM"},
		{[]string{"timeout", "soon"}, 400, "M_INVALID_PARAM"},
		{[]string{"full_state", "yes"}, 400, "M_INVALID_PARAM"},
		{[]string{"filter", "{not json"}, 400, "M_NOT_JSON"},
		{[]string{"filter", `{"room":{"timeline":{"limit":"ten"}}}`}, 400, "M_BAD_JSON"},
		{[]string{"filter", "filter-name"}, 400, "M_INVALID_PARAM"},
		{[]string{"filter", "42"}, 400, "M_INVALID_PARAM"},
		{[]string{"filter", `{"room":{"rooms":["!a\u0000:x"]}}`}, 400, "M_BAD_JSON"},
		{[]string{"filter", `{"room":{"rooms":["!a\ud800:x"]}}`}, 400, "M_BAD_JSON"},
		{[]string{"filter", `{"room":{"not_rooms":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}}`}, 400, "M_BAD_JSON"},
		{[]string{"filter", "{\"room\":{\"rooms\":[\"!a\x00:x\"]}}"}, 400, "M_INVALID_PARAM"},
		{[]string{"set_presence", "\xff"}, 400, "M_INVALID_PARAM"},
	}
	for _, tc := range cases {
		if status, code := c.syncError(tc.kv...); status != tc.status || code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", strings.Join(tc.kv, "="), status, code, tc.status, tc.code)
		}
	}
	// set_presence is accepted and ignored.
	if b := c.sync("set_presence", "offline"); b.NextBatch != "s0" {
		t.Errorf("set_presence: next %s", b.NextBatch)
	}
}

func TestSyncFilterParsing(t *testing.T) {
	t.Parallel()
	f := &filter{}
	if f.timelineLimit() != defaultTimelineLimit || !f.allowsRoom("!a:x") {
		t.Fatal("zero filter must allow every room with the default limit")
	}
	if err := json.Unmarshal([]byte(`{"room":{"rooms":["!a:x","!b:x"],"not_rooms":["!b:x"],"timeline":{"limit":100000}}}`), f); err != nil {
		t.Fatal(err)
	}
	if f.timelineLimit() != maxTimelineLimit {
		t.Errorf("limit %d, want the cap %d", f.timelineLimit(), maxTimelineLimit)
	}
	for room, want := range map[string]bool{"!a:x": true, "!b:x": false, "!c:x": false} {
		if f.allowsRoom(room) != want {
			t.Errorf("allowsRoom(%s) = %v", room, !want)
		}
	}
	if err := json.Unmarshal([]byte(`{"room":{"timeline":{"limit":-3}}}`), &f); err != nil || f.timelineLimit() != 0 {
		t.Errorf("negative limit: %d, %v", f.timelineLimit(), err)
	}
}

// TestSyncWaitsForOwnWrite: a device's /sync right after its own write on this process
// waits until the sync feed shows the write (read-your-writes), and only for that.
func TestSyncWaitsForOwnWrite(t *testing.T) {
	t.Parallel()
	srv := newSyncServer(t)
	db, feed := srv.db, srv.feed
	const alice = "@alice:" + testServerName
	aliceC := &syncClient{t: t, url: srv.url, token: newSyncTestUser(t, db, alice, "ALICEDEV")}
	room := &syncTestRoom{Room: projtest.NewRoom(t, "!own:"+testServerName, testServerName), t: t, db: db}
	room.project(1,
		projtest.State("create", "m.room.create", alice, map[string]any{"room_version": "11"}),
		projtest.Member("alice-join", alice, alice, "join"))
	feed.set(1)
	// Alice's message is answered (in Postgres at 2) but the feed has not shown it yet.
	room.project(2, projtest.Message("mine", alice))
	srv.writes.record(Device{UserID: alice, DeviceID: "ALICEDEV"}, room.ID, 2, feed.Position())

	done := make(chan *syncTestBody, 1)
	go func() { done <- aliceC.sync() }()
	for feed.waiters() == 0 {
		select {
		case b := <-done:
			t.Fatalf("sync answered before the feed showed alice's write: %v", b.raw)
		default:
			time.Sleep(time.Millisecond)
		}
	}
	feed.set(2)
	b := <-done
	if tl := room.names(b.Rooms.Join[room.ID].Timeline.Events); !slices.Contains(tl, "mine") || b.NextBatch != "s2" {
		t.Fatalf("sync after the write: timeline %v, next %s", tl, b.NextBatch)
	}
	// The write is seen: the next sync does not wait.
	if b := aliceC.sync(); b.NextBatch != "s2" {
		t.Fatalf("second sync: next %s", b.NextBatch)
	}
}
