package e2e

import (
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// `ganglion streams status` against a running deployment on an external NATS: the
// events log with its messages, the durable consumers that follow it, the recorded
// positions, the projection watermark and the dead letters.
func TestStreamsStatus(t *testing.T) {
	ctx, d, hs := mainProcess(t, deploymentOptions{externalNATS: true})
	alice := newUser(ctx, t, hs.url(), "alice")
	room := createRoomWith(ctx, t, alice, "private_chat")
	if _, err := sendText(ctx, alice, room, "s1", "counted"); err != nil {
		t.Fatal(err)
	}
	last := d.lastSeq(ctx, d.topology().EventsStream())
	out, err := exec.CommandContext(ctx, ganglionBin, "streams", "status", "-c", hs.files[0]).CombinedOutput()
	if err != nil {
		t.Fatalf("streams status: %v\n%s", err, out)
	}
	report := string(out)
	events := regexp.MustCompile(`(?m)^` + d.topology().EventsStream() + `\s+(\d+)\s+\d+\s+1\s+(\d+)\s+1\s`).FindStringSubmatch(report)
	if events == nil || events[2] != strconv.FormatUint(last, 10) {
		t.Errorf("the events stream's line (last sequence %d) is missing or wrong:\n%s", last, report)
	}
	for _, want := range []string{
		d.topology().IntentsStream(), d.topology().DeadLetterStream(), // the other streams
		"pusher_master", // a durable consumer of the events log
		"events", "projection watermark (events, the lowest writer's position):", "dead letters:",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %q:\n%s", want, report)
		}
	}
	// The events writer records its position with its projection, which follows the
	// answers.
	eventually(t, "the projection watermark", func() error {
		out, err := exec.CommandContext(ctx, ganglionBin, "streams", "status", "-c", hs.files[0]).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		watermark := regexp.MustCompile(`projection watermark[^:]*:\s+(\d+)`).FindStringSubmatch(string(out))
		if watermark == nil || watermark[1] != strconv.FormatUint(last, 10) {
			return fmt.Errorf("%v, want %d", watermark, last)
		}
		return nil
	})
	if _, err := exec.CommandContext(ctx, ganglionBin, "streams").CombinedOutput(); err == nil {
		t.Error("streams without a subcommand succeeded")
	}
}
