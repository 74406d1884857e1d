package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ganglionhq/ganglion/streams"
)

// persistersCmd shows or changes the live list of event writers while every process
// runs: `ganglion persisters apply -c shared.yaml` makes the configuration's
// stream_writers.events the list rooms are sharded over, then waits until each writer
// taken out holds no more intents.
func persistersCmd(args []string) error {
	const usage = "usage: ganglion persisters show|apply -c homeserver.yaml [-c worker.yaml ...]"
	if len(args) == 0 || (args[0] != "show" && args[0] != "apply") {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet("persisters "+args[0], flag.ContinueOnError)
	wait := fs.Duration("wait", 5*time.Minute, "apply: how long to wait for the writers taken out to hand on or finish their intents")
	cfg, err := loadConfig(fs, args[1:])
	if err != nil {
		return err
	}
	nc, js, err := dialRunningBus(cfg, "persisters")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx := context.Background()
	t := topology(cfg)
	live, err := streams.ReadShards(ctx, js, t)
	if err != nil {
		return err
	}
	configured := cfg.EventWriters()
	if args[0] == "show" {
		fmt.Printf("live:       %v\nconfigured: %v\n", live, configured)
		return nil
	}
	intents, err := js.Stream(ctx, t.IntentsStream())
	if err != nil {
		return err
	}
	for _, w := range configured {
		if _, err := intents.Consumer(ctx, t.PersisterConsumer(w)); errors.Is(err, jetstream.ErrConsumerNotFound) {
			fmt.Printf("%s has never run: its rooms' intents wait on the bus until it starts\n", w)
		}
	}
	if err := streams.ApplyShards(ctx, js, t, configured); err != nil {
		return err
	}
	fmt.Printf("live event writers: %v (were %v)\n", configured, live)
	// Every process follows the list within moments; a gateway that had not yet seen
	// it may still send a writer taken out an intent, which that writer hands on.
	time.Sleep(time.Second)
	deadline := time.Now().Add(*wait)
	for _, w := range live {
		if slices.Contains(configured, w) {
			continue
		}
		for {
			cons, err := intents.Consumer(ctx, t.PersisterConsumer(w))
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				break
			}
			if err != nil {
				return err
			}
			info, err := cons.Info(ctx)
			if err != nil {
				return err
			}
			if info.NumPending == 0 && info.NumAckPending == 0 {
				fmt.Printf("%s holds no intents: it can be stopped\n", w)
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s still holds %d intents after %s: is it running?", w, info.NumPending+uint64(info.NumAckPending), *wait)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}
