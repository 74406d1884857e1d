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
	// this process; inFlight the devices whose deletion is under way.
	cleared  map[Device]uint64
	inFlight map[Device]bool
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
// hold anything there: a sync must not wait for the writer, and one that fails is
// asked for again by the device's next sync.
func (t *toDeviceStream) acknowledge(dev Device, upTo uint64) {
	if upTo == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	cleared, known := t.cleared[dev]
	if upTo <= cleared || t.inFlight[dev] || len(t.inFlight) >= maxInboxAcksInFlight {
		return
	}
	if known {
		// Nothing for the user since the last deletion: nothing to delete either.
		if changed, remembered := t.feed.NewSince(cleared, []string{dev.UserID}); remembered && !changed {
			t.clearedLocked(dev, upTo)
			return
		}
	}
	if t.inFlight == nil {
		t.inFlight = map[Device]bool{}
	}
	t.inFlight[dev] = true
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), inboxAckTimeout)
		defer cancel()
		err := t.s.clearToDevice(ctx, dev, []string{dev.DeviceID}, upTo)
		t.mu.Lock()
		defer t.mu.Unlock()
		delete(t.inFlight, dev)
		if err != nil {
			t.s.Log.Warn("to-device messages a device synced past not deleted; its next sync asks again",
				zap.String("user_id", dev.UserID), zap.String("device_id", dev.DeviceID), zap.Error(err))
			return
		}
		t.clearedLocked(dev, upTo)
	}()
}

func (t *toDeviceStream) clearedLocked(dev Device, upTo uint64) {
	if t.cleared == nil || len(t.cleared) >= maxInboxAcksKnown {
		t.cleared = map[Device]uint64{}
	}
	t.cleared[dev] = max(t.cleared[dev], upTo)
}
