package userstreams

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ganglionhq/ganglion/persist/presence"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// testTimers are short enough for a test to watch every timer run out.
var testTimers = PresenceTimers{LastActiveGranularity: 400 * time.Millisecond, SyncOnlineTimeout: 600 * time.Millisecond,
	IdleTimeout: 1500 * time.Millisecond}

// presenceEnv is a presence writer on real NATS and Postgres, and what a gateway uses
// to talk to it.
type presenceEnv struct {
	*fixture
	stop func()
}

func newPresenceEnv(t *testing.T) *presenceEnv {
	t.Helper()
	return &presenceEnv{fixture: newFixture(t, map[string][]string{schemas.StreamPresence: {"master"}})}
}

// start runs a presence writer with settings until the test ends or e.stop.
func (e *presenceEnv) start(settings PresenceSettings) {
	e.t.Helper()
	_, e.stop = e.runWriter("master", NewPresence(presence.Store{Pool: e.db.Pool}, settings))
}

// notice publishes a sync notice of process as a gateway would.
func (e *presenceEnv) notice(process string, clear bool, devs ...schemas.UserSyncDevice) {
	e.t.Helper()
	data, _ := json.Marshal(schemas.UserSync{V: schemas.UserSyncVersion, Process: process, Clear: clear, Devices: devs})
	if err := e.env.NC.Publish(e.env.Topology.UserSyncSubject("master"), data); err != nil {
		e.t.Fatal(err)
	}
}

// set is PUT /presence by user's device through the writer; refusals are answers here.
func (e *presenceEnv) set(user, device string, body any) *schemas.IntentResult {
	e.t.Helper()
	raw, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := e.client.Write(ctx, &schemas.StreamWrite{V: schemas.StreamWriteVersion, ID: nats.NewInbox()[len(nats.InboxPrefix):],
		Stream: schemas.StreamPresence, Op: OpPresenceSet, Key: user, User: user, Device: device, Body: raw})
	if err != nil {
		e.t.Fatal(err)
	}
	return res
}

// wait waits until the user's stored presence satisfies ok, calling each of repeat
// every tenth of a second meanwhile: a notice published before the writer listens is
// lost, as it would be on the bus, and gateways repeat theirs too.
func (e *presenceEnv) wait(what, user string, ok func(presence.Item) bool, repeat ...func()) presence.Item {
	e.t.Helper()
	store := presence.Store{Pool: e.db.Pool}
	var it presence.Item
	var repeated time.Time
	eventually(e.t, what, func() bool {
		if time.Since(repeated) >= 100*time.Millisecond {
			for _, f := range repeat {
				f()
			}
			repeated = time.Now()
		}
		var err error
		it, err = store.Get(context.Background(), user)
		return err == nil && ok(it)
	})
	return it
}

func state(s string) func(presence.Item) bool {
	return func(it presence.Item) bool { return it.State == s }
}

func start(user, device, state string) schemas.UserSyncDevice {
	return schemas.UserSyncDevice{User: user, Device: device, Kind: schemas.UserSyncStart, State: state}
}

// Sync notices drive the state machine on the writer: online at once, the record
// naming the user's rooms as whom it concerns; currently_active lapsing; unavailable
// when idle while syncing; offline once the device stopped, the process stopped or
// fell silent.
func TestPresenceWriterNotices(t *testing.T) {
	t.Parallel()
	e := newPresenceEnv(t)
	_, err := e.db.Pool.Exec(context.Background(), `INSERT INTO current_state (room_id, type, state_key, event_id, seq, idx, membership)
		VALUES ('!r1:h', 'm.room.member', '@a:h', '$1', 1, 0, 'join'), ('!r2:h', 'm.room.member', '@a:h', '$2', 2, 0, 'join'),
		('!r3:h', 'm.room.member', '@a:h', '$3', 3, 0, 'leave')`)
	if err != nil {
		t.Fatal(err)
	}
	e.start(PresenceSettings{Enabled: true, Timers: testTimers})

	it := e.wait("a sync", "@a:h", state(schemas.PresenceOnline),
		func() { e.notice("p1", false, start("@a:h", "D", schemas.PresenceOnline)) })
	if !it.CurrentlyActive || it.LastActiveTS == 0 || it.LastUserSyncTS == 0 {
		t.Fatalf("online: %+v", it)
	}
	stream, err := e.env.JS.Stream(context.Background(), e.env.Topology.UserStreamName(schemas.StreamPresence))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetLastMsgForSubject(context.Background(), e.env.Topology.UserStreamSubject(schemas.StreamPresence, "@a:h"))
	if err != nil {
		t.Fatal(err)
	}
	keys := strings.Fields(msg.Header.Get(streams.HeaderKeys))
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"!r1:h", "!r2:h", "@a:h"}) {
		t.Errorf("wake keys %v, want the joined rooms and the user", keys)
	}

	// Still syncing (alive), currently_active lapses, then idle makes it unavailable.
	alive := func(stop <-chan struct{}) {
		for {
			e.notice("p1", false, schemas.UserSyncDevice{User: "@a:h", Device: "D", Kind: schemas.UserSyncAlive})
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	stopAlive := make(chan struct{})
	go alive(stopAlive)
	e.wait("granularity", "@a:h", func(it presence.Item) bool { return it.State == schemas.PresenceOnline && !it.CurrentlyActive })
	e.wait("idle", "@a:h", state(schemas.PresenceUnavailable))
	close(stopAlive)

	// A stop: offline after the sync timeout.
	e.notice("p1", false, start("@a:h", "D", schemas.PresenceOnline))
	e.wait("active again", "@a:h", state(schemas.PresenceOnline))
	stopped := time.Now()
	e.notice("p1", false, schemas.UserSyncDevice{User: "@a:h", Device: "D", Kind: schemas.UserSyncStop})
	e.wait("stopped", "@a:h", state(schemas.PresenceOffline))
	if d := time.Since(stopped); d < testTimers.SyncOnlineTimeout {
		t.Errorf("offline %s after the stop, before the sync timeout", d)
	}

	// The process stops (clear): offline too; another process's syncs are not its.
	e.notice("p2", false, start("@b:h", "D", schemas.PresenceOnline), start("@c:h", "D", schemas.PresenceUnavailable))
	e.notice("p3", false, start("@c:h", "E", schemas.PresenceUnavailable))
	e.wait("b syncs", "@b:h", state(schemas.PresenceOnline))
	e.wait("c syncs", "@c:h", state(schemas.PresenceUnavailable))
	keep := make(chan struct{})
	go func() {
		for {
			e.notice("p3", false, schemas.UserSyncDevice{User: "@c:h", Device: "E", Kind: schemas.UserSyncAlive})
			select {
			case <-keep:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	e.notice("p2", true)
	e.wait("b's process stopped", "@b:h", state(schemas.PresenceOffline))
	time.Sleep(2 * testTimers.Lease())
	if it := e.wait("c syncs elsewhere", "@c:h", state(schemas.PresenceUnavailable)); it.LastActiveTS != 0 {
		t.Errorf("unavailable through syncs only, yet active: %+v", it)
	}
	close(keep)
	// p3 falls silent without a stop: its lease runs out.
	e.wait("c's process fell silent", "@c:h", state(schemas.PresenceOffline))
}

// PUT /presence through the writer: states and status messages are stored, invalid
// ones refused with the spec's errors.
func TestPresenceWriterSet(t *testing.T) {
	t.Parallel()
	e := newPresenceEnv(t)
	e.start(PresenceSettings{Enabled: true, Timers: DefaultPresenceTimers})
	res := e.set("@a:h", "D", PresenceSet{Presence: schemas.PresenceUnavailable, StatusMsg: ptr("away")})
	if res.Error != nil || res.Seq == 0 {
		t.Fatalf("answer %+v", res)
	}
	it := e.wait("set", "@a:h", state(schemas.PresenceUnavailable))
	if it.StatusMsg == nil || *it.StatusMsg != "away" || it.Pos != res.Seq {
		t.Fatalf("stored %+v, answer %+v", it, res)
	}
	// The same again announces nothing, so it answers no position to wait for.
	again := e.set("@a:h", "D", PresenceSet{Presence: schemas.PresenceUnavailable, StatusMsg: ptr("away")})
	if again.Error != nil || again.Seq != 0 {
		t.Fatalf("same presence again: %+v after %+v", again, res)
	}
	for _, tc := range []struct {
		body any
		code string
	}{
		{PresenceSet{Presence: "busy"}, "M_INVALID_PARAM"},
		{PresenceSet{Presence: schemas.PresenceOnline, StatusMsg: ptr(strings.Repeat("x", MaxStatusMsg+1))}, "M_INVALID_PARAM"},
		{[]int{1}, "M_BAD_JSON"},
	} {
		if res := e.set("@a:h", "D", tc.body); res.Error == nil || res.Error.Status != 400 || res.Error.Code != tc.code {
			t.Errorf("%+v: answer %+v, want 400 %s", tc.body, res.Error, tc.code)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// A restart keeps what was announced, gives devices time to say they still sync, then
// times out those that do not; with presence turned off, the writer announces everyone
// offline once.
func TestPresenceWriterRestart(t *testing.T) {
	t.Parallel()
	e := newPresenceEnv(t)
	on := PresenceSettings{Enabled: true, Timers: testTimers}
	e.start(on)
	e.wait("a syncs", "@a:h", state(schemas.PresenceOnline), func() {
		e.notice("p1", false, start("@a:h", "D", schemas.PresenceOnline), start("@b:h", "D", schemas.PresenceOnline))
	})
	e.wait("b syncs", "@b:h", state(schemas.PresenceOnline))
	e.stop()

	e.start(on)
	restarted := time.Now()
	stopAlive := make(chan struct{})
	defer close(stopAlive)
	go func() {
		for {
			e.notice("p1", false, schemas.UserSyncDevice{User: "@a:h", Device: "D", Kind: schemas.UserSyncAlive},
				start("@a:h", "D", schemas.PresenceOnline))
			select {
			case <-stopAlive:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	e.wait("b's device is gone", "@b:h", state(schemas.PresenceOffline))
	if d := time.Since(restarted); d < testTimers.SyncOnlineTimeout {
		t.Errorf("b timed out %s after the restart, before the grace", d)
	}
	e.wait("a still syncs", "@a:h", state(schemas.PresenceOnline))
	e.stop()

	e.start(PresenceSettings{Enabled: false, Timers: testTimers})
	it := e.wait("presence off", "@a:h", state(schemas.PresenceOffline))
	if it.CurrentlyActive || it.StatusMsg != nil {
		t.Errorf("offline with %+v", it)
	}
}
