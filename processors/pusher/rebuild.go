package pusher

import (
	"context"
	"fmt"
	"math"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/notifications"
	"github.com/ganglionhq/ganglion/persist/pushers"
	"github.com/ganglionhq/ganglion/streams"
)

// projected is the Projection of a log replayed into Postgres already.
type projected struct{}

func (projected) WaitPosition(context.Context, uint64) {}

// rulesAsStored is the RulesFeed of a replay: nobody changes rules meanwhile.
type rulesAsStored struct{}

func (rulesAsStored) Position() uint64                       { return 0 }
func (rulesAsStored) NewSince(uint64, []string) (bool, bool) { return false, true }

// Rebuild evaluates the whole EVENTS log again for every local user, with the push
// rules stored now, and records the notifications and every pusher instance's position
// at the log's end: the replay of event_push_actions (DESIGN invariant 4). Every
// pusher is set as delivered up to there. It needs the
// events and the push_rules stream replayed first. It returns the notifications stored.
func Rebuild(ctx context.Context, js jetstream.JetStream, topo streams.Topology, db *persist.DB, serverName string, instances []string) (int, error) {
	e := newEvaluator(serverName, 0, 1, db, projected{}, rulesAsStored{})
	store := notifications.Store{Pool: db.Pool}
	n := 0
	last, err := streams.ReadStream(ctx, js, topo.EventsStream(), topo.EventsWildcard(), false, streams.LogRange{Chunk: 512},
		func(msgs []streams.RawMessage) error {
			var out []notifications.Notification
			for _, m := range msgs {
				ns, err := e.message(ctx, m.Seq, m.Data)
				if err != nil && !streams.IsPermanent(err) {
					return err
				}
				out = append(out, ns...)
			}
			n += len(out)
			return store.Record(ctx, out, nil)
		})
	if err != nil {
		return n, fmt.Errorf("pusher: rebuild: %w", err)
	}
	positions := map[string]uint64{}
	for _, instance := range instances {
		positions[instance] = last
	}
	if err := store.Record(ctx, nil, positions); err != nil {
		return n, err
	}
	// What the rebuilt notifications hold was delivered before the database was lost.
	return n, pushers.Store{Pool: db.Pool}.DeliveredEverywhere(ctx, persist.Pos{Seq: last, Idx: math.MaxInt32})
}
