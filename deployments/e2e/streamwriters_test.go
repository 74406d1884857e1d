package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/ganglionhq/ganglion/streams"
)

// streamCheck exercises one per-user stream between two users who share a room, each
// talking to their own gateway, and fails t when a behaviour does not hold.
type streamCheck struct {
	name string
	run  func(ctx context.Context, t *testing.T, c streamClients)
}

// streamClients are the parties of a check: alice and bob share room; each writes
// through their own gateway and reads /sync from their own.
type streamClients struct {
	alice, bob *mautrix.Client
	room       id.RoomID
}

// streamChecks are the behaviours every stream writer placement must keep; each stream
// adds its own.
var streamChecks = []streamCheck{
	{"account_data", checkAccountDataAcross},
	{"device_lists", checkDeviceListsAcross},
	{"push_rules", checkPushRulesAcross},
	{"typing", checkTypingAcross},
	{"receipts", checkReceiptsAcross},
	{"to_device", checkToDeviceAcross},
	{"accounts", checkAccountsAcross},
	{"presence", checkPresenceAcross},
}

// TestStreamWritersMove is issue 6's acceptance 3: the per-user streams written by two
// workers (typing, to_device and receipts on one; account_data, presence, push_rules
// and device_lists on the other; Ganglion's accounts on the first), clients on two
// different gateways, every behaviour holds; then the writers move to the main process
// by configuration and a restart, and it holds again.
func TestStreamWritersMove(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*flowTimeout)
	defer cancel()
	placement := map[string][]string{
		"typing": {"streams1"}, "to_device": {"streams1"}, "receipts": {"streams1"},
		"account_data": {"streams2"}, "presence": {"streams2"}, "push_rules": {"streams2"}, "device_lists": {"streams2"},
		"accounts": {"streams1"},
	}
	d := newDeployment(t, deploymentOptions{externalNATS: true, streamWriters: placement})
	main := d.startMain()
	gw1 := d.launchWorker("gateway1", true)
	gw2 := d.launchWorker("gateway2", true)
	w1 := d.launchWorker("streams1", false)
	w2 := d.launchWorker("streams2", false)
	for _, p := range []*process{gw1, gw2, w1, w2} {
		p.waitReady()
	}
	alice := newUser(ctx, t, gw1.url(), "alice")
	bob := newUser(ctx, t, gw2.url(), "bob")
	room := createRoomWith(ctx, t, alice, "private_chat", at(bob, gw2.url()))
	c := streamClients{alice: alice, bob: bob, room: room}
	for _, ch := range streamChecks {
		t.Run("workers/"+ch.name, func(t *testing.T) { ch.run(ctx, t, c) })
	}
	checkLastWriters(ctx, t, d, placement, func(ws []string) string { return ws[0] })

	// Move every writer to the main process: a change of configuration and a restart.
	for _, p := range []*process{gw1, gw2, w1, w2, main} {
		p.stop()
	}
	d.setStreamWriters(nil, nil)
	if err := os.Remove(filepath.Join(d.dir, "shared.yaml")); err != nil {
		t.Fatal(err)
	}
	d.startMain()
	gw1 = d.launchWorker("gateway1b", true)
	gw2 = d.launchWorker("gateway2b", true)
	gw1.waitReady()
	gw2.waitReady()
	c = streamClients{alice: at(alice, gw1.url()), bob: at(bob, gw2.url()), room: room}
	for _, ch := range streamChecks {
		t.Run("main/"+ch.name, func(t *testing.T) { ch.run(ctx, t, c) })
	}
	checkLastWriters(ctx, t, d, placement, func([]string) string { return "master" })
}

// checkLastWriters checks that the newest record of every stream the checks wrote was
// appended by the writer the placement names.
func checkLastWriters(ctx context.Context, t *testing.T, d *deployment, placement map[string][]string, want func([]string) string) {
	t.Helper()
	for _, ch := range streamChecks {
		s, err := d.js.Stream(ctx, d.topology().UserStreamName(ch.name))
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := s.GetMsg(ctx, info.State.LastSeq)
		if err != nil {
			t.Fatalf("%s: last record: %v", ch.name, err)
		}
		if got, w := msg.Header.Get(streams.HeaderWriter), want(placement[ch.name]); got != w {
			t.Errorf("%s: last record written by %q, want %q", ch.name, got, w)
		}
	}
}

// syncUntil long-polls c's /sync from since until done accepts a response, or fails t
// after a while; it returns the last next_batch.
func syncUntil(ctx context.Context, t *testing.T, c *mautrix.Client, since, what string, done func(*mautrix.RespSync) bool) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := c.SyncRequest(ctx, 2000, since, "", false, "")
		if err != nil {
			t.Fatalf("%s: sync: %v", what, err)
		}
		since = resp.NextBatch
		if done(resp) {
			return since
		}
	}
	t.Fatalf("%s: not seen in /sync", what)
	return since
}

// checkAccountDataAcross: account data written through one gateway reaches the
// owner's /sync on the other.
func checkAccountDataAcross(ctx context.Context, t *testing.T, c streamClients) {
	first, err := c.alice.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	other := at(c.alice, c.bob.HomeserverURL.String())
	marker := "v" + randomLetters(12)
	value := map[string]any{"at": marker}
	if err := other.SetAccountData(ctx, "org.example.across", value); err != nil {
		t.Fatal(err)
	}
	syncUntil(ctx, t, c.alice, first.NextBatch, "account data written through the other gateway", func(r *mautrix.RespSync) bool {
		for _, ev := range r.AccountData.Events {
			if ev.Type.Type == "org.example.across" && ev.Content.Raw["at"] == marker {
				return true
			}
		}
		return false
	})
	var got map[string]any
	if err := c.alice.GetAccountData(ctx, "org.example.across", &got); err != nil || got["at"] != marker {
		t.Errorf("read back: %v, %v", got, err)
	}
}
