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

// Run projects every message of the log into db and records each writer's position.
func Run(ctx context.Context, js jetstream.JetStream, topo streams.Topology, db *persist.DB, log *zap.Logger) (Stats, error) {
	return RunWithProgress(ctx, js, topo, db, log, nil)
}

// RunWithProgress is Run, calling progress (when not nil) about once a second as chunks
// are projected, and once at the end of the events log.
func RunWithProgress(ctx context.Context, js jetstream.JetStream, topo streams.Topology, db *persist.DB, log *zap.Logger, progress func(Progress)) (Stats, error) {
	st := Stats{Positions: map[string]uint64{}}
	info, err := topo.EventsInfo(ctx, js)
	if err != nil {
		return st, err
	}
	// A fresh database records this log; one of another log is refused, not mixed.
	if err := db.CheckLog(ctx, info.Config.Name, info.Created, topo.EventsLastSeq(js)); err != nil {
		return st, err
	}
	// Rows first, on nobody's behalf; positions once every writer's messages up to them
	// are in. Three stages run side by side, in order (a redaction finds its target):
	// the log is read and decoded, a chunk's statements are built, and Postgres runs
	// the chunk before.
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
		p            persist.Prepared
		msgs, events uint64
	}
	prepared := make(chan chunkOf, 1)
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
			c := chunkOf{p: p, msgs: uint64(len(msgs))}
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
			done.Messages += c.msgs
			done.Events += c.events
			if progress != nil && time.Since(reported) >= time.Second {
				progress(done)
				reported = time.Now()
			}
		}
		if progress != nil {
			progress(done)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return st, err
	}
	for writer, pos := range st.Positions {
		if err := db.AdvanceStreamPosition(ctx, persist.EventsStream, writer, pos); err != nil {
			return st, err
		}
	}
	log.Info("replayed the events log", zap.Int("messages", st.Messages), zap.Int("events", st.Events),
		zap.Int("writers", len(st.Positions)))
	for name, us := range userstreams.Streams(userstreams.Deps{DB: db, JS: js, Topology: topo, Log: log}) {
		n, _, err := userstreams.Replay(ctx, js, topo, db, us)
		if err != nil {
			return st, fmt.Errorf("replay %s: %w", name, err)
		}
		st.Records += n
		log.Info("replayed a stream", zap.String("stream", name), zap.Int("records", n))
	}
	return st, nil
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
