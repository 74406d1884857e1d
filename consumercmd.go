package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ganglionhq/ganglion/deployments/config"
	"github.com/ganglionhq/ganglion/streams"
)

// consumerCmd acts on one durable consumer of a running deployment: `ganglion consumer
// rewind -c ... (-to-seq N | -since TIME) [-yes] NAME` makes it process the events log
// again from that point, while its process runs.
func consumerCmd(args []string) error {
	const usage = "usage: ganglion consumer rewind -c homeserver.yaml [-c worker.yaml ...] (-to-seq N | -since TIME) [-yes] NAME"
	if len(args) == 0 || args[0] != "rewind" {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet("consumer rewind", flag.ContinueOnError)
	toSeq := fs.Uint64("to-seq", 0, "process the log again from this sequence")
	since := fs.String("since", "", "process the log again from the first message at or after this time (RFC 3339, or a duration ago such as 1h)")
	yes := fs.Bool("yes", false, "go ahead when processing again sends things outside the server (pushes, appservice transactions)")
	cfg, err := loadConfig(fs, args[1:])
	if err != nil {
		return err
	}
	if fs.NArg() != 1 || (*toSeq == 0) == (*since == "") {
		return errors.New(usage)
	}
	name := fs.Arg(0)
	var from time.Time
	if *since != "" {
		if from, err = parseSince(*since, time.Now()); err != nil {
			return err
		}
	}
	nc, js, err := dialRunningBus(cfg, "consumer-rewind")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t := topology(cfg)
	start, count, err := streams.RewindPlan(ctx, js, t, name, *toSeq, from)
	if err != nil {
		return err
	}
	fmt.Printf("%s processes %d log messages again, from sequence %d.\n", name, count, start)
	dry, err := streams.RequestRewind(ctx, nc, t, streams.RewindRequest{Consumer: name, DryRun: true})
	if err != nil {
		return fmt.Errorf("%s: %w (start the process that runs it)", name, err)
	}
	if dry.SideEffects != "" && !*yes {
		return fmt.Errorf("this sends again %s; run again with -yes to go ahead", dry.SideEffects)
	}
	rep, err := streams.RequestRewind(ctx, nc, t, streams.RewindRequest{Consumer: name, Seq: start})
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	fmt.Printf("rewound: %d messages pending for %s\n", rep.Pending, name)
	return nil
}

// parseSince reads -since: an RFC 3339 time, or a duration before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("-since %q: want an RFC 3339 time (2026-12-03T15:00:00Z) or a duration ago (90m)", s)
	}
	return t, nil
}

// dialRunningBus connects to the NATS of a running deployment, which commands that talk
// to its processes must reach, not start: an embedded server is reached on its port.
func dialRunningBus(cfg *config.Config, command string) (*nats.Conn, jetstream.JetStream, error) {
	url := cfg.NATS.URL
	if e := cfg.NATS.Embedded; e != nil {
		if e.Port <= 0 {
			return nil, nil, errors.New("this command talks to the running processes over NATS: with the embedded server, set nats.embedded.port so it can be reached")
		}
		url = "nats://127.0.0.1:" + strconv.Itoa(e.Port)
	}
	nc, err := nats.Connect(url, nats.Name("ganglion-"+command))
	if err != nil {
		return nil, nil, fmt.Errorf("nats: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}
