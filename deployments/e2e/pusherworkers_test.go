package e2e

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/ganglionhq/ganglion/streams"
)

// pushedTo returns, in the order they arrived, the events pushed to pushkey.
func (g *testGateway) pushedTo(pushkey string) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for _, p := range g.got {
		if p.Notification.Devices[0].Pushkey == pushkey {
			out = append(out, p.Notification.EventID)
		}
	}
	return out
}

// waitPushedAll waits until pushkey has had a push for each of events.
func (g *testGateway) waitPushedAll(t *testing.T, pushkey string, events []string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		pushed := map[string]bool{}
		for _, ev := range g.pushedTo(pushkey) {
			pushed[ev] = true
		}
		var missing []int
		for i, ev := range events {
			if !pushed[ev] {
				missing = append(missing, i)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s, %s had no push for %d events, numbers %v", within, pushkey, len(missing), missing[:min(len(missing), 20)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPusherWorkers is issue 9's acceptances 2 and 6: two pusher workers share the users
// by pusher_instances (Synapse's sharding); one is killed with SIGKILL while 1,000 events
// flow. The other's users get every push meanwhile; the killed one's users get nothing
// until it starts again, then every push, in order, the only repeat being the push in
// flight when it died (its delivered position is stored after each push). Then /sync on
// the main process, which has no pusher, counts every message it shows.
func TestPusherWorkers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*flowTimeout)
	defer cancel()
	instances := []string{"pusher1", "pusher2"}
	d := newDeployment(t, deploymentOptions{externalNATS: true})
	d.shared["pusher_instances"] = instances
	main := d.startMain()
	workers := map[string]*process{}
	for _, name := range instances {
		workers[name] = d.launchWorker(name, false)
	}
	for _, w := range workers {
		w.waitReady()
	}

	// Two receivers per pusher instance, each with a pusher of their own.
	gw := newTestGateway(t)
	shardOf := map[string]string{} // pushkey → instance
	clientOf := map[string]*mautrix.Client{}
	var receivers []*mautrix.Client
	perShard := map[string]int{}
	for i := 0; len(receivers) < 4; i++ {
		name := "user" + strconv.Itoa(i)
		owner := streams.ShardOwner("@"+name+":"+d.serverName, instances)
		if perShard[owner] == 2 {
			continue
		}
		perShard[owner]++
		c := newUser(ctx, t, main.url(), name)
		p := httpPusher("org.example.app", name, true)
		p.Data = mautrix.PusherData{"url": gw.url()}
		if err := c.SetPusher(ctx, p); err != nil {
			t.Fatal(err)
		}
		shardOf[name], clientOf[name] = owner, c
		receivers = append(receivers, c)
	}
	sender := newUser(ctx, t, main.url(), "sender")
	room := createRoomWith(ctx, t, sender, "private_chat", receivers...)

	const total, killAt = 1000, 300
	var sent []string
	for i := range total {
		if i == killAt {
			workers["pusher1"].kill9()
		}
		ev, err := sendText(ctx, sender, room, fmt.Sprintf("w%d", i), fmt.Sprintf("message %d", i))
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, ev.String())
	}

	// pusher2's users get every push while pusher1 is down; pusher1's got none of what was sent after its death.
	for key, owner := range shardOf {
		if owner == "pusher2" {
			gw.waitPushedAll(t, key, sent, flowTimeout)
		}
	}
	for key, owner := range shardOf {
		if owner == "pusher1" {
			if n := len(gw.pushedTo(key)); n > killAt+1 {
				t.Errorf("%s, of the killed pusher, had %d pushes of %d events sent before the kill", key, n, killAt)
			}
		}
	}

	workers["pusher1"].restart()
	for key := range shardOf {
		gw.waitPushedAll(t, key, sent, flowTimeout)
	}
	time.Sleep(300 * time.Millisecond) // room for a wrong extra push to arrive
	isMessage := map[string]bool{}
	for _, ev := range sent {
		isMessage[ev] = true
	}
	for key, owner := range shardOf {
		// The receiver's invite notified too.
		got := slices.DeleteFunc(gw.pushedTo(key), func(ev string) bool { return !isMessage[ev] })
		unique := slices.Compact(slices.Clone(got))
		if !slices.Equal(unique, sent) {
			t.Errorf("%s (%s): %d pushes, %d after dropping repeats; not every event once in order", key, owner, len(got), len(unique))
			continue
		}
		repeats := len(got) - len(unique)
		switch {
		case owner == "pusher2" && repeats != 0:
			t.Errorf("%s, of the pusher never killed, had %d repeated pushes", key, repeats)
		case repeats > 1:
			t.Errorf("%s had %d repeated pushes; only the one in flight at the kill may repeat", key, repeats)
		}
	}

	// The main process has no pusher: the /sync that first shows a message counts it,
	// for the users of either instance, since it waits for the position their instance
	// announces.
	for key, c := range clientOf {
		res, err := c.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		before := unread(t, res, room).NotificationCount
		since := res.NextBatch
		for i := range 5 {
			ev, err := sendText(ctx, sender, room, fmt.Sprintf("%s-count-%d", key, i), "count me")
			if err != nil {
				t.Fatal(err)
			}
			res := syncUntilEvent(ctx, t, c, since, room, ev)
			if got, want := unread(t, res, room).NotificationCount, before+i+1; got != want {
				t.Errorf("%s (%s): the /sync showing message %d counts %d notifications, want %d", key, shardOf[key], i, got, want)
			}
			since = res.NextBatch
		}
	}
}
