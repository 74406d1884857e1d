package streams

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// PositionSubject is where an instance of a role downstream of the log (a pusher)
// announces how far it has come, on core NATS: other processes wait on it (a /sync
// waits for the pusher of its user before counting notifications).
func (t Topology) PositionSubject(role, instance string) string {
	return t.ns() + ".positions." + role + "." + instance
}

// announceEvery is how often an announcer repeats its position unasked, so a process
// that starts following it later learns it while it does not move.
const announceEvery = time.Second

// Announce publishes p's value on subject whenever it moves, and every announceEvery
// while it does not, until ctx ends.
func Announce(ctx context.Context, nc *nats.Conn, subject string, p *Position) {
	var last uint64
	for {
		wctx, cancel := context.WithTimeout(ctx, announceEvery)
		_ = p.Wait(wctx, last+1)
		cancel()
		if ctx.Err() != nil {
			return
		}
		last = p.Get()
		_ = nc.Publish(subject, binary.BigEndian.AppendUint64(nil, last))
	}
}

// Followed are the announced positions of a role's instances, each key's instance
// chosen by the role's sharding (ShardOwner).
type Followed struct {
	instances []string
	positions map[string]*Position
}

// Follow subscribes to the positions of role's instances, starting from known (read
// from Postgres at start; an announcement only moves a position forward).
func Follow(nc *nats.Conn, t Topology, role string, instances []string, known map[string]uint64) (*Followed, func(), error) {
	f := &Followed{instances: instances, positions: map[string]*Position{}}
	var subs []*nats.Subscription
	stop := func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}
	for _, inst := range instances {
		p := &Position{}
		p.Set(known[inst])
		f.positions[inst] = p
		sub, err := nc.Subscribe(t.PositionSubject(role, inst), func(m *nats.Msg) {
			if len(m.Data) == 8 {
				p.Set(binary.BigEndian.Uint64(m.Data))
			}
		})
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("streams: follow %s %s: %w", role, inst, err)
		}
		subs = append(subs, sub)
	}
	return f, stop, nil
}

// Wait returns once the instance that key is sharded to has announced seq, or when ctx
// ends (its error then).
func (f *Followed) Wait(ctx context.Context, key string, seq uint64) error {
	return f.positions[ShardOwner(key, f.instances)].Wait(ctx, seq)
}
