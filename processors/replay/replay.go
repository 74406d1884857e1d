// Package replay rebuilds the Postgres projections of the EVENTS log by reading the log
// from its start: the operator's recovery when a database is lost or a projection is
// suspect. Projections are idempotent, so replaying into a database that already holds
// some of them only fills in what is missing.
package replay

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// chunk is how many log messages are projected per transaction.
const chunk = 2048

// Stats says what a replay did.
type Stats struct {
	Messages int
	Events   int
	// Records counts the per-user streams' records.
	Records int
	// Positions is each writer's projected position afterwards.
	Positions map[string]uint64
}

// Progress is how far a replay is: log messages and events projected, of the log's
// messages when it started.
type Progress struct {
	Messages, Events, Total uint64
}

// A Follower projects what lies beside the events' own tables (the pushers'
// notifications, the user directory) from the events log. A replay hands it each
// chunk of the log once the chunk's events are in Postgres, in the log's order, on a
// goroutine of its own, so it runs beside the projection of the next chunks. The
// accounts and push rules streams are replayed before the events log, for followers
// that read them.
type Follower interface {
	Follow(ctx context.Context, msgs []schemas.LogMessage) error
	// Finish records the follower's position at the log's end, last.
	Finish(ctx context.Context, last uint64) error
}

// Options are a replay's optional parts.
type Options struct {
	// Progress, when set, is called about once a second as chunks are projected, and
	// once at the end of the events log.
	Progress func(Progress)
	// Followers are named in errors.
	Followers map[string]Follower
}

// Run projects every message of the log into db and records each writer's position.
func Run(ctx context.Context, js jetstream.JetStream, topo streams.Topology, db *persist.DB, log *zap.Logger) (Stats, error) {
	return RunWith(ctx, js, topo, db, log, Options{})
}

// RunWith is Run, with progress reports and followers.
func RunWith(ctx context.Context, js jetstream.JetStream, topo streams.Topology, db *persist.DB, log *zap.Logger, opt Options) (Stats, error) {
	st := Stats{Positions: map[string]uint64{}}
	info, err := topo.EventsInfo(ctx, js)
	if err != nil {
		return st, err
	}
	// A fresh database records this log; one of another log is refused, not mixed.
	if err := db.CheckLog(ctx, info.Config.Name, info.Created, topo.EventsLastSeq(js)); err != nil {
		return st, err
	}
	// The streams that followers read go first: accounts (profiles, pushers) and push
	// rules. The others come after the events log, as some of them (receipts, room
	// account data) leave out the rooms it purges.
	userStreams := userstreams.Streams(userstreams.Deps{DB: db, JS: js, Topology: topo, Log: log})
	for _, name := range []string{schemas.StreamAccounts, schemas.StreamPushRules} {
		if err := replayStream(ctx, js, topo, db, log, &st, userStreams[name]); err != nil {
			return st, err
		}
		delete(userStreams, name)
	}
	// Rows first, on nobody's behalf; positions once every writer's messages up to them
	// are in. The stages run side by side, in order (a redaction finds its target):
	// the log is read and decoded, a chunk's statements are built, Postgres runs the
	// chunk before, and then, on connections of their own, its search rows and the
	// followers.
	// Into a database without events (a rebuild), events are copied rather than
	// inserted, until a copy meets one already there.
	empty, err := db.NoEvents(ctx)
	if err != nil {
		return st, err
	}
	var copying atomic.Bool
	copying.Store(empty)
	decoded := make(chan []schemas.LogMessage, 1)
	// A chunk ready for Postgres, with what it counts for progress.
	type chunkOf struct {
		p      persist.Prepared
		msgs   []schemas.LogMessage
		events uint64
	}
	prepared := make(chan chunkOf, 1)
	// Each chunk in Postgres goes on to the stages after it, each on a goroutine of
	// its own: its search rows, and every follower.
	after := map[string]func(context.Context, chunkOf) error{
		"search rows": func(ctx context.Context, c chunkOf) error { return db.ProjectSearch(ctx, c.p) },
	}
	for name, f := range opt.Followers {
		if _, taken := after[name]; taken {
			return st, fmt.Errorf("replay: a follower may not be called %q", name)
		}
		after[name] = func(ctx context.Context, c chunkOf) error { return f.Follow(ctx, c.msgs) }
	}
	projected := map[string]chan chunkOf{}
	for name := range after {
		projected[name] = make(chan chunkOf, 2)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(decoded)
		_, err := streams.ReadLog(gctx, js, topo, streams.LogRange{Chunk: chunk},
			func(msgs []schemas.LogMessage) error {
				for _, m := range msgs {
					st.Messages++
					st.Events += len(m.Batch.Events)
					st.Positions[m.Writer] = max(st.Positions[m.Writer], m.Seq)
				}
				return send(gctx, decoded, msgs)
			})
		return err
	})
	g.Go(func() error {
		defer close(prepared)
		for msgs := range decoded {
			p, err := persist.Prepare(persist.BatchesOf(msgs), copying.Load())
			if err != nil {
				return err
			}
			c := chunkOf{p: p, msgs: msgs}
			for _, m := range msgs {
				c.events += uint64(len(m.Batch.Events))
			}
			if err := send(gctx, prepared, c); err != nil {
				return err
			}
		}
		return nil
	})
	g.Go(func() error {
		defer func() {
			for _, ch := range projected {
				close(ch)
			}
		}()
		done := Progress{Total: info.State.Msgs}
		reported := time.Now()
		for c := range prepared {
			inserted, err := db.ProjectPrepared(gctx, c.p)
			if err != nil {
				return err
			}
			if inserted && copying.Swap(false) {
				log.Info("events already in the database: inserting instead of copying")
			}
			for _, ch := range projected {
				if err := send(gctx, ch, c); err != nil {
					return err
				}
			}
			done.Messages += uint64(len(c.msgs))
			done.Events += c.events
			if opt.Progress != nil && time.Since(reported) >= time.Second {
				opt.Progress(done)
				reported = time.Now()
			}
		}
		if opt.Progress != nil {
			opt.Progress(done)
		}
		return nil
	})
	for name, stage := range after {
		g.Go(func() error {
			for c := range projected[name] {
				if err := stage(gctx, c); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return st, err
	}
	var last uint64
	for _, pos := range st.Positions {
		last = max(last, pos)
	}
	for name, f := range opt.Followers {
		if err := f.Finish(ctx, last); err != nil {
			return st, fmt.Errorf("%s: %w", name, err)
		}
	}
	for writer, pos := range st.Positions {
		if err := db.AdvanceStreamPosition(ctx, persist.EventsStream, writer, pos); err != nil {
			return st, err
		}
	}
	log.Info("replayed the events log", zap.Int("messages", st.Messages), zap.Int("events", st.Events),
		zap.Int("writers", len(st.Positions)))
	for _, us := range userStreams {
		if err := replayStream(ctx, js, topo, db, log, &st, us); err != nil {
			return st, err
		}
	}
	return st, nil
}

// replayStream replays one of the per-user streams.
func replayStream(ctx context.Context, js jetstream.JetStream, topo streams.Topology, db *persist.DB, log *zap.Logger, st *Stats, us userstreams.Stream) error {
	n, _, err := userstreams.Replay(ctx, js, topo, db, us)
	if err != nil {
		return fmt.Errorf("replay %s: %w", us.Name(), err)
	}
	st.Records += n
	log.Info("replayed a stream", zap.String("stream", us.Name()), zap.Int("records", n))
	return nil
}

// send hands v to the next stage, or gives up when ctx ends.
func send[T any](ctx context.Context, ch chan<- T, v T) error {
	select {
	case ch <- v:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
