package pusher

import (
	"context"
	"fmt"
	"math"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/notifications"
	"github.com/ganglionhq/ganglion/persist/pushers"
	"github.com/ganglionhq/ganglion/schemas"
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
// pusher is set as delivered up to there. It is a follower of a replay, which hands it
// the log after the push_rules stream, each chunk once its events are projected.
type Rebuild struct {
	e         *evaluator
	store     notifications.Store
	db        *persist.DB
	instances []string
	// Notifications counts the notifications stored.
	Notifications int
}

// NewRebuild returns the rebuild of the pusher instances' notifications in db.
func NewRebuild(db *persist.DB, serverName string, instances []string) *Rebuild {
	return &Rebuild{e: newEvaluator(serverName, 0, 1, db, projected{}, rulesAsStored{}),
		store: notifications.Store{Pool: db.Pool}, db: db, instances: instances}
}

// Follow evaluates msgs and stores their notifications.
func (r *Rebuild) Follow(ctx context.Context, msgs []schemas.LogMessage) error {
	var out []notifications.Notification
	for _, m := range msgs {
		ns, err := r.e.batch(ctx, m.Seq, m.Batch)
		if err != nil && !streams.IsPermanent(err) {
			return fmt.Errorf("pusher: rebuild: %w", err)
		}
		out = append(out, ns...)
	}
	r.Notifications += len(out)
	return r.store.Record(ctx, out, nil)
}

// Finish records every pusher instance's position at last, and sets every pusher as
// delivered up to there: what the rebuilt notifications hold was delivered before the
// database was lost.
func (r *Rebuild) Finish(ctx context.Context, last uint64) error {
	positions := map[string]uint64{}
	for _, instance := range r.instances {
		positions[instance] = last
	}
	if err := r.store.Record(ctx, nil, positions); err != nil {
		return err
	}
	return pushers.Store{Pool: r.db.Pool}.DeliveredEverywhere(ctx, persist.Pos{Seq: last, Idx: math.MaxInt32})
}
