package client

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/schemas"
)

// typingForget is how long a room nobody types in any more is remembered (Synapse
// forgets a room's typing after as long): a token older than that misses nothing that
// matters, since its client has long timed out the typers it saw.
const typingForget = 10 * time.Minute

// Typers is this process's view of the typing stream: each room's last list of typers
// and the position of the record that set it. The typing feed hands it every record
// (syncfeed.Config.Observe), so /sync answers typing from memory, without Postgres. The
// zero value is ready.
type Typers struct {
	mu      sync.Mutex
	rooms   map[string]roomTypers
	sweepAt time.Time
}

type roomTypers struct {
	users []string
	seq   uint64
	at    time.Time
}

// Observe takes one record of the typing stream, in order.
func (t *Typers) Observe(seq uint64, _ nats.Header, data []byte) {
	r, err := schemas.DecodeTyping(data)
	if err != nil {
		return // the writer writes nothing else; a foreign message shows nobody typing
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rooms == nil {
		t.rooms = map[string]roomTypers{}
	}
	t.rooms[r.Room] = roomTypers{users: r.Users, seq: seq, at: now}
	if now.After(t.sweepAt) {
		for room, rt := range t.rooms {
			if len(rt.users) == 0 && now.Sub(rt.at) > typingForget {
				delete(t.rooms, room)
			}
		}
		t.sweepAt = now.Add(typingForget)
	}
}

// of returns room's typers and the position of the record that set them.
func (t *Typers) of(room string) (users []string, seq uint64, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rt, ok := t.rooms[room]
	return rt.users, rt.seq, ok
}

// typingStream is the typing stream's part of /sync: m.typing in the ephemeral events
// of joined rooms whose typers changed.
type typingStream struct {
	feedStream
	typers *Typers
}

// next is always the feed's position. A token ahead of it comes from before a restart
// of the stream (or from a process whose feed is ahead): its field would otherwise hold
// every later record back until the stream passed it, so such a sync starts typing from
// scratch instead, which costs at most a repeat of who is typing now.
func (ts *typingStream) next(uint64) uint64 { return ts.position() }

func (ts *typingStream) fill(_ context.Context, sc *syncCtx, since, to uint64) error {
	if sc.req.incremental && since <= to && !ts.changed(sc, since) && len(sc.newlyJoined) == 0 {
		return nil
	}
	for _, room := range sc.joined {
		users, seq, ok := ts.typers.of(room)
		// A record after to comes with the next sync.
		if !ok || seq > to {
			continue
		}
		fresh := !sc.req.incremental || since > to || sc.newlyJoined[room]
		if fresh && len(users) == 0 || !fresh && seq <= since {
			continue // nobody to show from scratch, or unchanged since the token
		}
		ev, err := matrix.Marshal(schemas.NewTypingEvent("", users))
		if err != nil {
			return err
		}
		jr := sc.joinedRoom(room)
		jr.Ephemeral.Events = append(jr.Ephemeral.Events, ev)
	}
	return nil
}
