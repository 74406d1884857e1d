package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/streams"
)

// streamsCmd shows the bus as an operator sees it: `ganglion streams status -c ...`
// lists every stream of the deployment's namespace with its consumers, every recorded
// writer and consumer position, the events log's projection watermark and the dead
// letters. With the embedded bus it starts that bus, so it runs while the server is
// stopped; against an external NATS, while everything runs.
func streamsCmd(args []string) error {
	if len(args) == 0 || args[0] != "status" {
		return errors.New("usage: ganglion streams status -c homeserver.yaml [-c worker.yaml ...]")
	}
	bus, err := openBusCommand(flag.NewFlagSet("streams status", flag.ContinueOnError), args[1:])
	if err != nil {
		return err
	}
	defer bus.close()
	ctx, cfg := bus.ctx, bus.cfg
	status, err := streams.Status(ctx, bus.js, topology(cfg))
	if err != nil {
		return err
	}
	db, err := persist.Open(ctx, cfg.Database.DSN(), bus.log)
	if err != nil {
		return err
	}
	defer db.Close()
	positions, err := db.AllStreamPositions(ctx)
	if err != nil {
		return err
	}
	return printStatus(os.Stdout, status, positions, topology(cfg))
}

// printStatus writes the report of streamsCmd.
func printStatus(out io.Writer, status []streams.StreamStatus, positions []persist.StreamPosition, topo streams.Topology) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "STREAM\tMESSAGES\tBYTES\tFIRST\tLAST\tREPLICAS\tLEADER")
	var deadLetters uint64
	for _, st := range status {
		leader := st.Leader
		if leader == "" {
			leader = "-"
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%s\n", st.Name, st.Messages, st.Bytes, st.FirstSeq, st.LastSeq, st.Replicas, leader)
		if st.Name == topo.DeadLetterStream() {
			deadLetters = st.Messages
		}
	}
	fmt.Fprintln(w, "\nCONSUMER\tSTREAM\tPENDING\tACK PENDING\tREDELIVERED\tACK FLOOR\tLAG")
	for _, st := range status {
		for _, c := range st.Consumers {
			fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%d\n", c.Name, st.Name, c.Pending, c.AckPending, c.Redelivered, c.AckFloor, c.Lag)
		}
	}
	fmt.Fprintln(w, "\nPOSITION\tINSTANCE\tAT")
	var watermark uint64
	first := true
	for _, p := range positions {
		fmt.Fprintf(w, "%s\t%s\t%d\n", p.Stream, p.Instance, p.Pos)
		if p.Stream == persist.EventsStream && (first || p.Pos < watermark) {
			watermark, first = p.Pos, false
		}
	}
	fmt.Fprintf(w, "\nprojection watermark (events, the lowest writer's position):\t%d\n", watermark)
	fmt.Fprintf(w, "dead letters:\t%d\n", deadLetters)
	return w.Flush()
}
