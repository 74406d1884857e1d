package client

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap/zaptest"

	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
	"github.com/ganglionhq/ganglion/streams/natstest"
)

// What a process tells the presence writer about its syncs, on a real NATS subject:
// a start when a device starts syncing or changes its set_presence, nothing for a
// /sync that follows soon after, alive while a long-poll stays open, stop once the
// device's syncs ended for the stop delay, clear when the process stops.
func TestUserSyncNotices(t *testing.T) {
	t.Parallel()
	conn := natstest.Connect(t)
	const subject = "t.user_sync.master"
	got := make(chan *schemas.UserSync, 64)
	sub, err := conn.NC.Subscribe(subject, func(m *nats.Msg) {
		n, err := schemas.DecodeUserSync(m.Data)
		if err != nil {
			t.Errorf("notice %s: %v", m.Data, err)
			return
		}
		got <- n
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := conn.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	timers := userstreams.PresenceTimers{LastActiveGranularity: 600 * time.Millisecond, SyncOnlineTimeout: 600 * time.Millisecond,
		IdleTimeout: time.Second}
	u := newUserSyncs(streams.Notices{NC: conn.NC, Subject: subject}, timers, zaptest.NewLogger(t))
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); u.run(ctx) }()

	next := func(what string) schemas.UserSync {
		t.Helper()
		select {
		case n := <-got:
			if n.Process != u.process {
				t.Fatalf("%s: notice of process %q, want %q", what, n.Process, u.process)
			}
			return *n
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no notice", what)
			return schemas.UserSync{}
		}
	}
	device := func(what string, kind, state string) schemas.UserSyncDevice {
		t.Helper()
		n := next(what)
		if len(n.Devices) != 1 || n.Clear || n.Devices[0].User != "@a:h" || n.Devices[0].Device != "D" ||
			n.Devices[0].Kind != kind || n.Devices[0].State != state {
			t.Fatalf("%s: notice %+v, want one %s of @a:h's D with state %q", what, n, kind, state)
		}
		return n.Devices[0]
	}
	quiet := func(what string, d time.Duration) {
		t.Helper()
		select {
		case n := <-got:
			t.Fatalf("%s: unexpected notice %+v", what, n)
		case <-time.After(d):
		}
	}

	end, changed := u.begin("@a:h", "D", schemas.PresenceOnline)
	if !changed {
		t.Error("a device's first sync is a change")
	}
	device("first sync", schemas.UserSyncStart, schemas.PresenceOnline)
	end()
	end, changed = u.begin("@a:h", "D", schemas.PresenceOnline)
	if changed {
		t.Error("a sync right after, with the same set_presence, is no change")
	}
	quiet("a sync right after", timers.StopDelay()/2)
	also, changed := u.begin("@a:h", "D", schemas.PresenceUnavailable)
	if !changed {
		t.Error("a new set_presence is a change")
	}
	device("set_presence changed", schemas.UserSyncStart, schemas.PresenceUnavailable)
	also()
	// One /sync stays open: alive every relay interval.
	opened := time.Now()
	device("long-poll open", schemas.UserSyncAlive, "")
	if d := time.Since(opened); d < timers.Relay()/2 {
		t.Errorf("alive %s after the last notice, well before the relay interval %s", d, timers.Relay())
	}
	end()
	ended := time.Now()
	stopped := device("syncs ended", schemas.UserSyncStop, "")
	if d := time.Since(ended); d < timers.StopDelay() || stopped.AgoMS < timers.StopDelay().Milliseconds() {
		t.Errorf("stop %s after the end, %d ms ago: want at least the stop delay %s", d, stopped.AgoMS, timers.StopDelay())
	}
	// The process stops: clear.
	u.begin("@a:h", "D", schemas.PresenceOnline)
	device("syncing again", schemas.UserSyncStart, schemas.PresenceOnline)
	stop()
	<-done
	if n := next("process stops"); !n.Clear || len(n.Devices) != 0 {
		t.Fatalf("process stops: %+v", n)
	}
}
