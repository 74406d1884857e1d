package client

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
)

// Notices sends fire-and-forget messages to the presence writer (streams.Notices).
type Notices interface {
	Publish(data []byte) error
	Flush() error
}

// userSyncs tells the presence writer which devices sync on this process (Synapse's
// USER_SYNC), without costing a /sync a round trip or a database write: a /sync only
// touches this process's memory, and a notice goes out, fire and forget, when a device
// starts syncing here, changes its set_presence, or has synced for a relay interval
// since the last one. While a long-poll stays open, the device is said to be alive
// every relay interval; once its last /sync here ended and it did not come back within
// the stop delay, it is said to have stopped. A process that stops says all its
// devices stopped (Synapse's CLEAR_USER_SYNC); a crashed one falls silent, and the
// writer forgets its devices when their lease runs out.
type userSyncs struct {
	out     Notices
	process string
	timers  userstreams.PresenceTimers
	log     *zap.Logger

	mu   sync.Mutex
	devs map[[2]string]*syncingDevice
}

// syncingDevice is one device seen syncing here.
type syncingDevice struct {
	// open counts its /sync requests in progress here.
	open int
	// state is the set_presence last announced.
	state string
	// started is when a start was last announced, told when anything was.
	started, told time.Time
	// ended is when the last open /sync ended.
	ended time.Time
}

func newUserSyncs(out Notices, timers userstreams.PresenceTimers, log *zap.Logger) *userSyncs {
	return &userSyncs{out: out, process: randomIntentID(), timers: timers, log: log,
		devs: map[[2]string]*syncingDevice{}}
}

// begin records a /sync of the device starting with set_presence state (online or
// unavailable); the returned function records its end. changed reports a device that
// starts syncing here, or changes its set_presence: its presence may change with it.
func (u *userSyncs) begin(user, device, state string) (end func(), changed bool) {
	now := time.Now()
	u.mu.Lock()
	d := u.devs[[2]string{user, device}]
	if d == nil {
		d = &syncingDevice{}
		u.devs[[2]string{user, device}] = d
	}
	d.open++
	changed = d.state != state
	announce := changed || now.Sub(d.started) >= u.timers.Relay()
	if announce {
		d.state, d.started, d.told = state, now, now
	}
	u.mu.Unlock()
	if announce {
		u.send(schemas.UserSync{Devices: []schemas.UserSyncDevice{{User: user, Device: device, Kind: schemas.UserSyncStart, State: state}}})
	}
	return func() {
		u.mu.Lock()
		defer u.mu.Unlock()
		if d.open--; d.open == 0 {
			d.ended = time.Now()
		}
	}, changed
}

// run says which devices are still syncing and which stopped until ctx ends, then
// that every one of them stopped.
func (u *userSyncs) run(ctx context.Context) {
	tick := time.NewTicker(max(min(u.timers.Relay(), u.timers.StopDelay())/2, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			u.send(schemas.UserSync{Clear: true})
			if err := u.out.Flush(); err != nil {
				u.log.Warn("presence: the stopped syncs may not have reached the presence writer", zap.Error(err))
			}
			return
		case <-tick.C:
			u.sweep()
		}
	}
}

// sweep announces the devices still syncing for a relay interval since they were last
// announced, and those whose syncs all ended longer than the stop delay ago.
func (u *userSyncs) sweep() {
	now := time.Now()
	var out []schemas.UserSyncDevice
	u.mu.Lock()
	for k, d := range u.devs {
		switch {
		case d.open > 0 && now.Sub(d.told) >= u.timers.Relay():
			d.told = now
			out = append(out, schemas.UserSyncDevice{User: k[0], Device: k[1], Kind: schemas.UserSyncAlive})
		case d.open == 0 && now.Sub(d.ended) >= u.timers.StopDelay():
			delete(u.devs, k)
			out = append(out, schemas.UserSyncDevice{User: k[0], Device: k[1], Kind: schemas.UserSyncStop,
				AgoMS: now.Sub(d.ended).Milliseconds()})
		}
	}
	u.mu.Unlock()
	for len(out) > 0 {
		n := min(len(out), schemas.MaxUserSyncDevices)
		u.send(schemas.UserSync{Devices: out[:n]})
		out = out[n:]
	}
}

// send publishes a notice; one that is lost is repaired by the next (a start by the
// device's next relay, a stop by the writer's lease).
func (u *userSyncs) send(n schemas.UserSync) {
	n.V, n.Process = schemas.UserSyncVersion, u.process
	data, err := schemas.Marshal(n)
	if err == nil {
		err = u.out.Publish(data)
	}
	if err != nil {
		u.log.Debug("presence: sync notice not sent", zap.Error(err))
	}
}
