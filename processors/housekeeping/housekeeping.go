// Package housekeeping is the bus's background work, run by the one instance that
// run_background_tasks_on names (the main process by default), as Synapse runs its
// background tasks on one process:
//   - the intent consumers of event writers taken out of the live list (ganglion
//     persisters apply) are deleted once they are drained and nobody pulls from them;
//   - the dead letters waiting for an operator are counted, for the dashboard and
//     alerts, in one place rather than per consumer.
package housekeeping

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/streams"
)

var deadLetters = promauto.NewGauge(prometheus.GaugeOpts{
	Name: "ganglion_dead_letters",
	Help: "Messages in the dead-letter stream, waiting for an operator (ganglion dead-letters).",
})

// Config is what the housekeeping needs.
type Config struct {
	JS       jetstream.JetStream
	Topology streams.Topology
	// Shards is the live list of event writers.
	Shards streams.Shards
	Log    *zap.Logger
	// Every is the time between passes (a minute when 0).
	Every time.Duration
	// IdleFor is how long a drained consumer of a writer taken out must have delivered
	// nothing before it is deleted (ten minutes when 0).
	IdleFor time.Duration
}

// Run makes a pass every cfg.Every until ctx ends. A failed pass is logged and tried
// again at the next.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Every <= 0 {
		cfg.Every = time.Minute
	}
	if cfg.IdleFor <= 0 {
		cfg.IdleFor = 10 * time.Minute
	}
	cfg.Log.Info("background tasks started", zap.Duration("every", cfg.Every))
	tick := time.NewTicker(cfg.Every)
	defer tick.Stop()
	for {
		if err := Pass(ctx, cfg); err != nil && ctx.Err() == nil {
			cfg.Log.Warn("housekeeping pass failed", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Pass does the housekeeping once.
func Pass(ctx context.Context, cfg Config) error {
	return errors.Join(removeRetiredWriters(ctx, cfg), countDeadLetters(ctx, cfg))
}

// removeRetiredWriters deletes the intent consumer of every event writer that is not in
// the live list, holds no intents, has nobody pulling from it, and delivered nothing
// for IdleFor. A writer started before it was made live is pulled from, and kept.
func removeRetiredWriters(ctx context.Context, cfg Config) error {
	t := cfg.Topology
	stream, err := cfg.JS.Stream(ctx, t.IntentsStream())
	if err != nil {
		return err
	}
	live := cfg.Shards.Writers()
	prefix := t.PersisterConsumer("")
	consumers := stream.ListConsumers(ctx)
	for info := range consumers.Info() {
		writer, ok := strings.CutPrefix(info.Name, prefix)
		if !ok || slices.Contains(live, writer) {
			continue
		}
		last := info.Created
		if info.Delivered.Last != nil {
			last = *info.Delivered.Last
		}
		if info.NumPending > 0 || info.NumAckPending > 0 || info.NumWaiting > 0 || time.Since(last) < cfg.IdleFor {
			continue
		}
		if err := stream.DeleteConsumer(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return err
		}
		cfg.Log.Info("removed the intent consumer of an event writer taken out", zap.String("writer", writer),
			zap.Time("last_delivery", last))
	}
	return consumers.Err()
}

// countDeadLetters sets the dead letters' gauge.
func countDeadLetters(ctx context.Context, cfg Config) error {
	stream, err := cfg.JS.Stream(ctx, cfg.Topology.DeadLetterStream())
	if err != nil {
		return err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return err
	}
	deadLetters.Set(float64(info.State.Msgs))
	return nil
}
