package client

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
)

// ownWriteWait bounds how long a /sync waits for the sync feed to show the device's own
// latest write; the feed normally lags a write's answer by a millisecond or two.
const ownWriteWait = time.Second

// ownWrites remembers, per device, its latest write answered by this process, so the
// device's next /sync here includes it, and its other requests see it (read-your-writes):
// an event is answered at its append to the log, and Postgres and the sync feed have it
// a moment later. The zero value is ready.
type ownWrites struct {
	mu     sync.Mutex
	latest map[Device]ownWrite
	// sweepAt is the size at which record next sweeps the map.
	sweepAt int
}

type ownWrite struct {
	// key is whom the write concerns in its feed: its room, or the user.
	key string
	seq uint64
}

// Bounds of the own-writes map. A device that writes here and syncs elsewhere (the front
// door routes /sync by user) never takes its entry, so the map is swept of writes the
// feed already shows once it doubles past the size of the last sweep (at least
// ownWritesSweepMin entries), and never holds more than ownWritesMax devices.
const (
	ownWritesSweepMin = 1024
	ownWritesMax      = 100_000
)

// record remembers dev's write at seq; visible is the feed's position, up to which
// every write is already shown and needs no entry.
func (o *ownWrites) record(dev Device, key string, seq, visible uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.latest == nil {
		o.latest = map[Device]ownWrite{}
	}
	if len(o.latest) >= min(max(o.sweepAt, ownWritesSweepMin), ownWritesMax) {
		for d, w := range o.latest {
			if w.seq <= visible {
				delete(o.latest, d)
			}
		}
		if len(o.latest) >= ownWritesMax {
			// The feed stands still: forget everything rather than grow. A device that
			// syncs here next may miss its own write for the moment the feed lags.
			clear(o.latest)
		}
		o.sweepAt = 2 * len(o.latest)
	}
	if seq > o.latest[dev].seq {
		o.latest[dev] = ownWrite{key: key, seq: seq}
	}
}

// take returns the device's latest write not yet visible at pos and forgets it.
func (o *ownWrites) take(dev Device, pos uint64) (ownWrite, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	w, ok := o.latest[dev]
	delete(o.latest, dev)
	return w, ok && w.seq > pos
}

// seeAnswered holds a request until the events feed, and so Postgres, shows every
// event this process answered before it came, every message the feeds (the events
// log's and the per-user streams') had read by then, and everything the log held
// when the process started (a writer
// recovering after a crash projects it), or for ownWriteWait at most: events are
// answered at their append and projected a moment later, and a client may pass an
// event ID it was just given to another (a receipt, a reply, /event), as it can with
// Synapse. The feed's messages are those answered by other processes: a room
// created through one gateway is there for a read through another, unless the read
// comes before the log's message reached this process (NATS delivers it in about a
// millisecond; the client's answer and next request take longer).
func (s *Server) seeAnswered(ctx context.Context) {
	if s.Feed == nil {
		return // a gateway that serves no reads of rooms
	}
	if !s.caughtUp.Load() {
		// After a crash the writer projects what its clients were answered before
		// anything else: until the feed shows the log's tail at start, requests wait
		// for it longer than for one projection.
		if s.LogTail > s.Feed.Position() {
			sctx, cancel := context.WithTimeout(ctx, startupWait)
			s.Feed.WaitPosition(sctx, s.LogTail)
			cancel()
		}
		if s.LogTail <= s.Feed.Position() {
			s.caughtUp.Store(true)
		}
	}
	// What the per-user streams' feeds had read counts too: a read receipt sent
	// through the receipts writer, then a /sync here, shows the counts it cleared.
	type target struct {
		feed Feed
		seq  uint64
	}
	targets := []target{{s.Feed, max(s.answered.Load(), s.Feed.Received())}}
	for _, f := range s.StreamFeeds {
		targets = append(targets, target{f, f.Received()})
	}
	ctx, cancel := context.WithTimeout(ctx, ownWriteWait)
	defer cancel()
	for _, t := range targets {
		if t.seq > t.feed.Position() {
			t.feed.WaitPosition(ctx, t.seq)
		}
	}
}

// seeEnds holds a read until each of feeds shows its stream as it is when the read
// came, or for ownWriteWait at most. A device's writes answered by other processes
// are then in it: a join answered by a generic worker, then an initial sync at a sync
// worker; a topic set through one gateway, then the room's state read through
// another. Only reads of a whole snapshot wait, as a client takes them for all there
// is: a /sync that answers at once, a room's current state, members or latest page
// of /messages. A long-poll gets what it misses a moment later, and a page from a
// token before the write shows it. The streams' ends are read side by side.
func (s *Server) seeEnds(ctx context.Context, feeds ...Feed) {
	ctx, cancel := context.WithTimeout(ctx, ownWriteWait)
	defer cancel()
	var wg sync.WaitGroup
	for _, f := range feeds {
		wg.Go(func() {
			end, err := f.End(ctx)
			if err != nil {
				if ctx.Err() == nil {
					s.Log.Warn("reading a stream's end for a read", zap.Error(err))
				}
				return
			}
			if end > f.Position() {
				f.WaitPosition(ctx, end)
			}
		})
	}
	wg.Wait()
}

// seeLatest is seeLogEnd for a read of a room's latest state or page, where only
// writes answered elsewhere can be missing: when the bus is shared.
func (s *Server) seeLatest(ctx context.Context) {
	if s.SharedBus {
		s.seeLogEnd(ctx)
	}
}

// seeLogEnd is seeEnds for the events log alone.
func (s *Server) seeLogEnd(ctx context.Context) {
	if s.Feed != nil {
		s.seeEnds(ctx, s.Feed)
	}
}

// missedAnything is for a read that found nothing: it waits until the events feed
// shows the log's end (seeLogEnd) and reports whether the feed moved meanwhile, when
// the read is worth making again. A write answered by another process can reach the
// log before this process's feed has it: the client's answer and next request can
// beat the log's delivery here. Only misses pay for reading the log's end.
func (s *Server) missedAnything(ctx context.Context) bool {
	if s.Feed == nil {
		return false
	}
	before := s.Feed.Position()
	s.seeLogEnd(ctx)
	return s.Feed.Position() > before
}

// startupWait bounds how long a request waits for the feed to show the log as it was
// when the process started.
const startupWait = 10 * time.Second

// noteAnswered raises the position seeAnswered waits for.
func (s *Server) noteAnswered(seq uint64) {
	for {
		cur := s.answered.Load()
		if seq <= cur || s.answered.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// awaitOwnWrite holds a /sync until the feeds show the device's latest writes, or for
// ownWriteWait at most.
func (s *Server) awaitOwnWrite(ctx context.Context, dev Device) {
	ctx, cancel := context.WithTimeout(ctx, ownWriteWait)
	defer cancel()
	if w, ok := s.writes.take(dev, s.Feed.Position()); ok {
		s.Feed.Wait(ctx, w.seq-1, dev.UserID, []string{w.key})
	}
	for name, o := range s.streamWrites {
		f := s.StreamFeeds[name]
		if w, ok := o.take(dev, f.Position()); ok {
			f.Wait(ctx, w.seq-1, dev.UserID, []string{w.key})
		}
	}
}
