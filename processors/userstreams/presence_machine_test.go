package userstreams

import (
	"testing"

	"github.com/ganglionhq/ganglion/schemas"
)

// The state machine with Synapse's timers, in milliseconds from an arbitrary start.
func TestPresenceMachine(t *testing.T) {
	tm := DefaultPresenceTimers
	const start = int64(1_000_000_000)
	fresh := func() *presenceUser {
		return newPresenceUser(schemas.PresenceRecord{V: schemas.PresenceVersion, User: "@a:h", State: schemas.PresenceOffline})
	}
	announced := func(t *testing.T, u *presenceUser, what string) {
		t.Helper()
		if !u.dirty {
			t.Fatalf("%s: not announced (%+v)", what, u.rec)
		}
		u.dirty = false
	}
	quiet := func(t *testing.T, u *presenceUser, what string) {
		t.Helper()
		if u.dirty {
			t.Fatalf("%s: announced (%+v)", what, u.rec)
		}
	}
	syncing := func(u *presenceUser, device string, at int64) { u.syncs[syncSource{"p", device}] = at }

	t.Run("a sync brings a user online, active", func(t *testing.T) {
		u := fresh()
		syncing(u, "D", start)
		tm.set(u, "D", schemas.PresenceOnline, nil, true, start)
		announced(t, u, "online")
		if r := u.rec; r.State != schemas.PresenceOnline || !r.CurrentlyActive || r.LastActiveTS != start ||
			r.LastUserSyncTS != start || r.LastFederationUpdateTS != start {
			t.Fatalf("record %+v", r)
		}
		// Syncing again soon changes nothing worth announcing.
		tm.set(u, "D", schemas.PresenceOnline, nil, true, start+20_000)
		quiet(t, u, "a second sync")
		if u.rec.LastActiveTS != start+20_000 || u.rec.LastFederationUpdateTS != start {
			t.Fatalf("record %+v", u.rec)
		}
	})

	t.Run("currently_active lapses after the granularity", func(t *testing.T) {
		u := fresh()
		syncing(u, "D", start)
		tm.set(u, "D", schemas.PresenceOnline, nil, true, start)
		announced(t, u, "online")
		tm.timeout(u, start+59_000)
		quiet(t, u, "before the granularity")
		tm.timeout(u, start+61_000)
		announced(t, u, "granularity passed")
		if u.rec.State != schemas.PresenceOnline || u.rec.CurrentlyActive {
			t.Fatalf("record %+v", u.rec)
		}
		// Activity makes the user current again.
		tm.set(u, "D", schemas.PresenceOnline, nil, true, start+70_000)
		announced(t, u, "active again")
		if !u.rec.CurrentlyActive {
			t.Fatalf("record %+v", u.rec)
		}
	})

	t.Run("idle makes a syncing device unavailable", func(t *testing.T) {
		u := fresh()
		syncing(u, "D", start)
		tm.set(u, "D", schemas.PresenceOnline, nil, true, start)
		announced(t, u, "online")
		tm.timeout(u, start+61_000)
		announced(t, u, "not current")
		tm.timeout(u, start+299_000)
		quiet(t, u, "before idle")
		tm.timeout(u, start+301_000)
		announced(t, u, "idle")
		if u.rec.State != schemas.PresenceUnavailable {
			t.Fatalf("record %+v", u.rec)
		}
	})

	t.Run("offline once the device stopped syncing for the timeout", func(t *testing.T) {
		u := fresh()
		syncing(u, "D", start)
		tm.set(u, "D", schemas.PresenceOnline, nil, true, start)
		announced(t, u, "online")
		// Still syncing after the timeout: online.
		tm.timeout(u, start+40_000)
		quiet(t, u, "syncing")
		delete(u.syncs, syncSource{"p", "D"})
		tm.stopped(u, "D", start+45_000, start+50_000)
		quiet(t, u, "stopped")
		tm.timeout(u, start+74_000)
		announced(t, u, "not current")
		if u.rec.State != schemas.PresenceOnline {
			t.Fatalf("within the timeout of the stop: record %+v", u.rec)
		}
		tm.timeout(u, start+76_000)
		announced(t, u, "offline")
		if u.rec.State != schemas.PresenceOffline || len(u.devices) != 0 {
			t.Fatalf("record %+v, devices %v", u.rec, u.devices)
		}
	})

	t.Run("the most present device wins", func(t *testing.T) {
		u := fresh()
		syncing(u, "phone", start)
		syncing(u, "desk", start)
		tm.set(u, "phone", schemas.PresenceUnavailable, nil, true, start)
		announced(t, u, "unavailable")
		if u.rec.State != schemas.PresenceUnavailable || u.rec.LastActiveTS != 0 {
			t.Fatalf("record %+v", u.rec)
		}
		tm.set(u, "desk", schemas.PresenceOnline, nil, true, start+1000)
		announced(t, u, "online")
		tm.set(u, "phone", schemas.PresenceUnavailable, nil, true, start+2000)
		quiet(t, u, "phone again")
		if u.rec.State != schemas.PresenceOnline {
			t.Fatalf("record %+v", u.rec)
		}
	})

	t.Run("status messages", func(t *testing.T) {
		u := fresh()
		msg := "lunch"
		tm.set(u, "D", schemas.PresenceOnline, &msg, false, start)
		announced(t, u, "set")
		other := "lunch"
		tm.set(u, "D", schemas.PresenceOnline, &other, false, start+1000)
		quiet(t, u, "same message")
		// A sync keeps the message, a PUT without one clears it.
		tm.set(u, "D", schemas.PresenceOnline, nil, true, start+2000)
		quiet(t, u, "sync")
		if u.rec.StatusMsg == nil || *u.rec.StatusMsg != msg {
			t.Fatalf("record %+v", u.rec)
		}
		tm.set(u, "D", schemas.PresenceOnline, nil, false, start+3000)
		announced(t, u, "cleared")
		if u.rec.StatusMsg != nil {
			t.Fatalf("record %+v", u.rec)
		}
		// A PUT without a sync: offline once the device is neither active nor syncing.
		tm.timeout(u, start+3000+30_001)
		announced(t, u, "offline")
		if u.rec.State != schemas.PresenceOffline {
			t.Fatalf("record %+v", u.rec)
		}
	})

	t.Run("a restart's pseudo device times out unless the user syncs", func(t *testing.T) {
		u := newPresenceUser(schemas.PresenceRecord{V: schemas.PresenceVersion, User: "@a:h", State: schemas.PresenceOnline,
			LastActiveTS: start, LastUserSyncTS: start, CurrentlyActive: true})
		syncing(u, "D", start+10_000)
		tm.set(u, "D", schemas.PresenceOnline, nil, true, start+10_000)
		tm.timeout(u, start+40_001)
		if u.rec.State != schemas.PresenceOnline || u.devices[""] != nil || u.devices["D"] == nil {
			t.Fatalf("record %+v, devices %v", u.rec, u.devices)
		}
	})
}

func TestShouldNotify(t *testing.T) {
	const g = 60_000
	msg := "m"
	base := schemas.PresenceRecord{State: schemas.PresenceOnline, LastActiveTS: 1000, CurrentlyActive: true}
	for _, tc := range []struct {
		name   string
		change func(r *schemas.PresenceRecord)
		want   bool
	}{
		{"nothing", func(*schemas.PresenceRecord) {}, false},
		{"state", func(r *schemas.PresenceRecord) { r.State = schemas.PresenceUnavailable }, true},
		{"status message", func(r *schemas.PresenceRecord) { r.StatusMsg = &msg }, true},
		{"currently active", func(r *schemas.PresenceRecord) { r.CurrentlyActive = false }, true},
		{"small bump", func(r *schemas.PresenceRecord) { r.LastActiveTS += g }, false},
		{"large bump while current", func(r *schemas.PresenceRecord) { r.LastActiveTS += g + 1 }, false},
		{"sync time", func(r *schemas.PresenceRecord) { r.LastUserSyncTS = 99 }, false},
	} {
		next := base
		tc.change(&next)
		if got := shouldNotify(&base, &next, g); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	idle := base
	idle.State, idle.CurrentlyActive = schemas.PresenceUnavailable, false
	bumped := idle
	bumped.LastActiveTS += g + 1
	if !shouldNotify(&idle, &bumped, g) {
		t.Error("a large bump while not online is announced")
	}
}
