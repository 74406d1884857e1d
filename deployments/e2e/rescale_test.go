package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/ganglionhq/ganglion/streams"
)

// TestRescaleEventPersisters: under steady sends, a third event persister is added to
// two and taken out again with `ganglion persisters apply`, while every process keeps
// running. No acknowledged send is lost or stored twice, and each room's log shows its
// writers changing only where the live list moved the room, each writer's appends in
// one run: never two writers taking turns.
func TestRescaleEventPersisters(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	two, three := []string{"p1", "p2"}, []string{"p1", "p2", "p3"}
	d := newDeployment(t, deploymentOptions{externalNATS: true, eventWriters: two})
	hs := d.startMain()
	p1, p2 := d.launchWorker("p1", false), d.launchWorker("p2", false)
	p1.waitReady()
	p2.waitReady()
	// Background work runs on run_background_tasks_on only: the main process by default.
	hs.waitLogged("background tasks started")
	for _, p := range []*process{p1, p2} {
		_, _, logPath := p.current()
		if data, err := os.ReadFile(logPath); err != nil || strings.Contains(string(data), "background tasks started") {
			t.Errorf("%s runs background tasks too (%v)", p.name, err)
		}
	}

	const senders = 3
	clients := make([]*mautrix.Client, senders)
	for i := range clients {
		clients[i] = newUser(ctx, t, hs.url(), fmt.Sprintf("sender%d", i))
	}
	// Rooms that p3 will own and rooms that stay where they are.
	var rooms []id.RoomID
	moving, staying := 0, 0
	for attempt := 0; moving < 2 || staying < 2; attempt++ {
		if attempt > 40 {
			t.Fatal("no mix of moving and staying rooms in 40 rooms")
		}
		room := createRoomWith(ctx, t, clients[0], "private_chat", clients[1:]...)
		if streams.ShardOwner(room.String(), three) == "p3" {
			if moving == 2 {
				continue
			}
			moving++
		} else {
			if staying == 2 {
				continue
			}
			staying++
		}
		rooms = append(rooms, room)
	}

	sends := startSteadySends(ctx, t, clients, rooms, 10*time.Millisecond)
	waitAcked := func(what string, n int64) { t.Helper(); sends.waitAcked(ctx, t, what, n) }
	apply := func(writers []string) {
		t.Helper()
		d.setStreamWriters(writers, nil)
		shared := d.writeYAML("shared.yaml", d.shared)
		out, err := exec.CommandContext(ctx, ganglionBin, "persisters", "apply", "-c", shared).CombinedOutput()
		if err != nil {
			t.Fatalf("persisters apply %v: %v\n%s", writers, err, out)
		}
		t.Logf("persisters apply %v:\n%s", writers, out)
	}

	waitAcked("before p3", 30)
	// p3 starts with the new list in its files, then the list goes live.
	d.setStreamWriters(three, nil)
	d.writeYAML("shared.yaml", d.shared)
	p3 := d.launchWorker("p3", false)
	p3.waitReady()
	apply(three)
	waitAcked("with p3", 60)
	// p3 is taken out: the list goes back, apply waits until p3 holds nothing, and p3
	// stops.
	apply(two)
	p3.stop()
	waitAcked("after p3", 30)
	sends.finish()
	if t.Failed() {
		return
	}

	for _, room := range rooms {
		checkStoredOnce(ctx, t, d, room, sends.acked[room])
		// The room's writers, in log order, with each run of one writer collapsed.
		s, err := d.js.Stream(ctx, d.topology().EventsStream())
		if err != nil {
			t.Fatal(err)
		}
		oc, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{d.topology().EventSubject(room.String())}, HeadersOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		var runs []string
		for {
			msg, err := oc.Next(jetstream.FetchMaxWait(time.Second))
			if err != nil {
				break
			}
			if w := msg.Headers().Get(streams.HeaderWriter); len(runs) == 0 || runs[len(runs)-1] != w {
				runs = append(runs, w)
			}
		}
		want := slices.Compact([]string{streams.ShardOwner(room.String(), two), streams.ShardOwner(room.String(), three), streams.ShardOwner(room.String(), two)})
		if !slices.Equal(runs, want) {
			t.Errorf("room %s: writers in log order %s, want %s", room, strings.Join(runs, " → "), strings.Join(want, " → "))
		}
	}
	t.Logf("%d sends acknowledged", sends.total.Load())
}
