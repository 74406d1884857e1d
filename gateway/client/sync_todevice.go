package client

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Bounds of the to_device part of one /sync response. 1,000 messages of a few KiB
// (room keys) arrive in one response; more, or larger ones, in the next, and the
// response's token stops at the last message given, so none is skipped.
const (
	maxToDevicePerSync      = 1000
	maxToDeviceBytesPerSync = 4 << 20
)

// Bounds of the deletions /sync forwards: how many may be in flight at once (past it, a
// device's next sync asks again) and how long each may take.
const (
	maxInboxAcksInFlight = 256
	inboxAckTimeout      = 30 * time.Second
	// maxInboxAcksKnown bounds the memory of what was deleted; past it, it is forgotten
	// and devices' next syncs look in Postgres once again.
	maxInboxAcksKnown = 100_000
)

// toDeviceStream is the to_device stream's part of /sync: the messages waiting in the
// device's inbox, oldest first. A sync whose token covers messages acknowledges them:
// the stream's writer then deletes them.
type toDeviceStream struct {
	feedStream
	s *Server

	mu sync.Mutex
	// cleared is, per device, the position up to which its inbox was emptied through
	// this process; wanted, for the devices whose deletion is under way, the position
	// their latest sync asked for.
	cleared map[Device]uint64
	wanted  map[Device]uint64
}

func (t *toDeviceStream) fill(ctx context.Context, sc *syncCtx, since, to uint64) error {
	if sc.req.incremental {
		// The client's own token, not since (a long-poll looks again from later
		// positions), and never past what is visible, whatever a token says.
		t.acknowledge(sc.dev, min(sc.req.since[t.slot()], t.position()))
	}
	if !t.changed(sc, since) {
		return nil
	}
	msgs, more, err := t.s.toDevice.Inbox(ctx, sc.dev.UserID, sc.dev.DeviceID, since, to, maxToDevicePerSync, maxToDeviceBytesPerSync)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		sc.res.ToDevice.Events = append(sc.res.ToDevice.Events, m.JSON)
	}
	if more {
		sc.next[t.slot()] = msgs[len(msgs)-1].Pos
	}
	return nil
}

// acknowledge has the device's inbox emptied up to upTo, in the background, when it may
// hold anything there: a sync must not wait for the writer. A deletion that fails is
// asked for again by the device's next sync.
func (t *toDeviceStream) acknowledge(dev Device, upTo uint64) {
	if upTo == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	cleared, known := t.cleared[dev]
	if upTo <= cleared {
		return
	}
	if wanted, busy := t.wanted[dev]; busy {
		// The deletion under way goes on to here once it is done.
		t.wanted[dev] = max(wanted, upTo)
		return
	}
	if known {
		// Nothing for the user since the last deletion: nothing to delete either.
		if changed, remembered := t.feed.NewSince(cleared, []string{dev.UserID}); remembered && !changed {
			t.clearedLocked(dev, upTo)
			return
		}
	}
	if len(t.wanted) >= maxInboxAcksInFlight {
		return
	}
	if t.wanted == nil {
		t.wanted = map[Device]uint64{}
	}
	t.wanted[dev] = upTo
	go t.clear(dev)
}

// clear deletes the device's messages up to the position wanted, again while syncs
// want more.
func (t *toDeviceStream) clear(dev Device) {
	for {
		t.mu.Lock()
		upTo := t.wanted[dev]
		t.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), inboxAckTimeout)
		err := t.s.clearToDevice(ctx, dev, []string{dev.DeviceID}, upTo)
		cancel()
		t.mu.Lock()
		if err != nil {
			delete(t.wanted, dev)
			t.mu.Unlock()
			t.s.Log.Warn("to-device messages a device synced past not deleted; its next sync asks again",
				zap.String("user_id", dev.UserID), zap.String("device_id", dev.DeviceID), zap.Error(err))
			return
		}
		t.clearedLocked(dev, upTo)
		if t.wanted[dev] <= upTo {
			delete(t.wanted, dev)
			t.mu.Unlock()
			return
		}
		t.mu.Unlock()
	}
}

func (t *toDeviceStream) clearedLocked(dev Device, upTo uint64) {
	if t.cleared == nil || len(t.cleared) >= maxInboxAcksKnown {
		t.cleared = map[Device]uint64{}
	}
	t.cleared[dev] = max(t.cleared[dev], upTo)
}
