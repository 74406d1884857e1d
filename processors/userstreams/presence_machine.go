package userstreams

import (
	"time"

	"github.com/ganglionhq/ganglion/schemas"
)

// PresenceTimers are the timers of Synapse's presence state machine (its presence
// section's last_active_granularity, sync_online_timeout and idle_timeout).
type PresenceTimers struct {
	// LastActiveGranularity is how long after their last activity a user counts as
	// currently active.
	LastActiveGranularity time.Duration
	// SyncOnlineTimeout is how long after a device's last sync it goes offline.
	SyncOnlineTimeout time.Duration
	// IdleTimeout is how long without activity an online device takes to become
	// unavailable.
	IdleTimeout time.Duration
}

// DefaultPresenceTimers are Synapse's defaults (LAST_ACTIVE_GRANULARITY,
// SYNC_ONLINE_TIMEOUT and IDLE_TIMER).
var DefaultPresenceTimers = PresenceTimers{
	LastActiveGranularity: time.Minute,
	SyncOnlineTimeout:     30 * time.Second,
	IdleTimeout:           5 * time.Minute,
}

// Relay is how often a process tells the presence writer about a device that keeps
// syncing: Synapse's relay interval, 5/6 of the tighter of the timers it feeds (25 s
// by default), so neither runs out between two notices.
func (t PresenceTimers) Relay() time.Duration {
	return min(t.SyncOnlineTimeout, t.LastActiveGranularity) * 5 / 6
}

// StopDelay is how long a process waits, once a device's last open /sync ended, before
// telling the presence writer it stopped: the device usually syncs again at once, and
// a stop followed by a start would be two notices for nothing. It is Synapse's 10 s
// (UPDATE_SYNCING_USERS), shortened with a shorter sync_online_timeout so a device that
// really stopped still goes offline on the timeout's scale.
func (t PresenceTimers) StopDelay() time.Duration {
	return min(10*time.Second, t.SyncOnlineTimeout/3)
}

// Lease is how long the presence writer counts a device as syncing on a process that
// no longer says so (its notices repeat every Relay): three relays, so one lost notice
// costs nothing, while a crashed process's users still go offline within a minute or
// two (Synapse waits five minutes for a silent worker).
func (t PresenceTimers) Lease() time.Duration { return 3 * t.Relay() }

// tick is how often the writer looks for timers that ran out: Synapse's 5 s, shorter
// when a timer is short enough that 5 s would be a large part of it.
func (t PresenceTimers) tick() time.Duration {
	d := min(5*time.Second, t.SyncOnlineTimeout/5, t.LastActiveGranularity/5)
	return max(d, 10*time.Millisecond)
}

// PresenceSettings is Synapse's presence section.
type PresenceSettings struct {
	// Enabled is presence.enabled (true by default, as in Synapse). Off, the
	// endpoints still answer, but nothing is tracked, stored or sent.
	Enabled bool
	// Untracked is presence.enabled: "untracked": presence is shown, but neither
	// clients' updates nor their syncs change it.
	Untracked bool
	// IncludeOfflineUsersOnSync is presence.include_offline_users_on_sync: initial
	// syncs show offline users too.
	IncludeOfflineUsersOnSync bool
	Timers                    PresenceTimers
}

// Track reports whether clients change presence.
func (s PresenceSettings) Track() bool { return s.Enabled && !s.Untracked }

// presencePriority orders device states when a user's devices disagree: the user is
// as present as their most present device (Synapse's PRESENCE_BY_PRIORITY).
var presencePriority = map[string]int{
	schemas.PresenceOnline:      3,
	schemas.PresenceUnavailable: 2,
	schemas.PresenceOffline:     1,
}

// presenceDevice is what the writer knows of one device of a user (Synapse's
// UserDevicePresenceState); times are milliseconds since the epoch.
type presenceDevice struct {
	state                string
	lastActive, lastSync int64
}

// syncSource is one process on which a device syncs.
type syncSource struct{ process, device string }

// presenceUser is the writer's state of one user.
type presenceUser struct {
	// rec is the user's presence now; it is announced when it changes in a way
	// Synapse notifies about.
	rec     schemas.PresenceRecord
	devices map[string]*presenceDevice
	// syncs are the processes telling that a device of the user syncs there, with
	// when they last said so.
	syncs map[syncSource]int64
	// dirty is set while rec holds a change no appended record carries yet.
	dirty bool
	// changed is when rec last changed.
	changed int64
}

func newPresenceUser(rec schemas.PresenceRecord) *presenceUser {
	u := &presenceUser{rec: rec, devices: map[string]*presenceDevice{}, syncs: map[syncSource]int64{}}
	if rec.State != schemas.PresenceOffline {
		// A pseudo device carries the stored state until the user's real devices
		// show up, as in Synapse after a restart.
		u.devices[""] = &presenceDevice{state: rec.State, lastActive: rec.LastActiveTS, lastSync: rec.LastUserSyncTS}
	}
	return u
}

// syncingOn reports whether a process says device is syncing.
func (u *presenceUser) syncingOn(device string) bool {
	for s := range u.syncs {
		if s.device == device {
			return true
		}
	}
	return false
}

// combine is the user's state from their devices' (Synapse's _combine_device_states):
// the most present, the most recently active among equals; offline without devices.
func (u *presenceUser) combine() string {
	state, last := schemas.PresenceOffline, int64(-1)
	for _, d := range u.devices {
		p, best := presencePriority[d.state], presencePriority[state]
		if p > best || p == best && d.lastActive > last {
			state, last = d.state, d.lastActive
		}
	}
	return state
}

// shouldNotify is Synapse's rule for which changes of a local user's presence are
// announced to others: a new state or status message, a change of currently_active,
// or last_active moving by more than the granularity while it is not shown as current.
func shouldNotify(old, next *schemas.PresenceRecord, granularity int64) bool {
	if !equalStrings(old.StatusMsg, next.StatusMsg) || old.State != next.State {
		return true
	}
	bumped := next.LastActiveTS-old.LastActiveTS > granularity
	if old.State == schemas.PresenceOnline {
		return next.CurrentlyActive != old.CurrentlyActive || bumped && !next.CurrentlyActive
	}
	return bumped
}

func equalStrings(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// update makes next the user's state (Synapse's handle_update for a local user):
// currently_active follows last_active while online, and a change worth announcing
// marks the user dirty.
func (t PresenceTimers) update(u *presenceUser, next schemas.PresenceRecord, now int64) {
	granularity := t.LastActiveGranularity.Milliseconds()
	if next.State == schemas.PresenceOnline {
		next.CurrentlyActive = now-next.LastActiveTS < granularity
	}
	if shouldNotify(&u.rec, &next, granularity) {
		// Synapse stamps each announced change as sent to other servers.
		next.LastFederationUpdateTS = now
		u.dirty = true
		u.changed = now
	}
	u.rec = next
}

// set applies a presence a device sets (Synapse's set_state): from PUT /presence with
// its status message, or from a /sync's set_presence (isSync), which leaves the status
// message alone and counts as the device syncing. Either counts as activity.
func (t PresenceTimers) set(u *presenceUser, device, presence string, statusMsg *string, isSync bool, now int64) {
	d := u.devices[device]
	if d == nil {
		d = &presenceDevice{state: schemas.PresenceOffline}
		u.devices[device] = d
	}
	d.state, d.lastActive = presence, now
	if isSync {
		d.lastSync = now
	}
	next := u.rec
	next.State = u.combine()
	if next.State == schemas.PresenceOnline {
		next.LastActiveTS = now
	}
	if isSync {
		next.LastUserSyncTS = now
	} else {
		next.StatusMsg = statusMsg
	}
	t.update(u, next, now)
}

// stopped records that device stopped syncing at ts.
func (t PresenceTimers) stopped(u *presenceUser, device string, ts, now int64) {
	if d := u.devices[device]; d != nil {
		d.lastSync = max(d.lastSync, ts)
	}
	next := u.rec
	next.LastUserSyncTS = max(next.LastUserSyncTS, ts)
	t.update(u, next, now)
}

// timeout applies the timers that ran out (Synapse's handle_timeout for a local
// user): a device idle too long becomes unavailable, one neither syncing nor active
// within the sync timeout goes away, and currently_active lapses.
func (t PresenceTimers) timeout(u *presenceUser, now int64) {
	if u.rec.State == schemas.PresenceOffline {
		return
	}
	idle, online := t.IdleTimeout.Milliseconds(), t.SyncOnlineTimeout.Milliseconds()
	devicesChanged := false
	for id, d := range u.devices {
		if d.state == schemas.PresenceOnline && now-d.lastActive > idle {
			d.state = schemas.PresenceUnavailable
			devicesChanged = true
		}
		// A device active recently but not syncing stays too.
		if !u.syncingOn(id) && now-max(d.lastSync, d.lastActive) > online {
			delete(u.devices, id)
			devicesChanged = true
		}
	}
	next, changed := u.rec, false
	if devicesChanged {
		if state := u.combine(); state != next.State {
			next.State, changed = state, true
		}
	}
	if now-next.LastActiveTS > t.LastActiveGranularity.Milliseconds() {
		// currently_active may have lapsed: update recomputes it.
		changed = true
	}
	if changed {
		t.update(u, next, now)
	}
}
