package e2e

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/ganglionhq/ganglion/streams"
)

// Acceptance 1: one process; two clients register, log in, create a room, invite, join,
// each send 100 messages, and both see all 200 in one order through incremental /sync
// and once each through /messages; a repeated PUT with the same txnId changes nothing.
func TestSingleProcess(t *testing.T) {
	ctx, base := clientScenario(t)

	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	room := createRoomWith(ctx, t, alice, "", bob)
	converse(ctx, t, [2]party{{"alice", alice, alice}, {"bob", bob, bob}}, []id.RoomID{room}, 100)
}

// Acceptance 2: the same conversation across OS processes: two gateways (each client
// sends through its own), two event persisters owning a room each, and a sync worker
// serving both clients' /sync, on one NATS server.
func TestMultiProcess(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	writers := []string{"persister1", "persister2"}
	// No main process runs here, to spare the machine's cores, so the accounts stream
	// (the main process's by default) is sharded over the event writers too: every
	// registration and login crosses processes.
	d := newDeployment(t, deploymentOptions{externalNATS: true, eventWriters: writers,
		streamWriters: map[string][]string{"accounts": writers}})
	gw1 := d.launchWorker("gateway1", true)
	gw2 := d.launchWorker("gateway2", true)
	p1 := d.launchWorker(writers[0], false)
	p2 := d.launchWorker(writers[1], false)
	syncPort := freePort(t)
	syncListener := clientListener(syncPort)
	syncListener[0]["routes"] = []string{"sync", "initial_sync"}
	sync1 := d.launchWorkerOn("sync1", syncPort, syncListener)
	for _, p := range []*process{gw1, gw2, p1, p2, sync1} {
		p.waitReady()
	}

	alice := newUser(ctx, t, gw1.url(), "alice")
	bob := newUser(ctx, t, gw2.url(), "bob")
	byWriter := roomsOfWriters(ctx, t, alice, writers, 1)
	var rooms []id.RoomID
	for _, w := range writers {
		room := byWriter[w][0]
		if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatalf("invite: %v", err)
		}
		if _, err := bob.JoinRoomByID(ctx, room); err != nil {
			t.Fatalf("join: %v", err)
		}
		rooms = append(rooms, room)
	}
	converse(ctx, t, [2]party{
		{"alice", alice, at(alice, sync1.url())},
		{"bob", bob, at(bob, sync1.url())},
	}, rooms, 100)

	// A join answered by a gateway is in the next initial /sync of the sync worker,
	// whichever writer owns the room: an initial sync waits for the log as it was when
	// it came. (Each such sync here waits half a second for the pusher of the main
	// process, which this deployment does not run.)
	for i := range 8 {
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatalf("createRoom: %v", err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatalf("join: %v", err)
		}
		resp, err := at(bob, sync1.url()).FullSyncRequest(ctx, mautrix.ReqSync{})
		if err != nil {
			t.Fatalf("initial sync: %v", err)
		}
		if _, ok := resp.Rooms.Join[room.RoomID]; !ok {
			t.Fatalf("join %d: the initial /sync at the sync worker right after it lacks %s (%d rooms)", i, room.RoomID, len(resp.Rooms.Join))
		}
	}

	// The front door, reading the processes' files, routes by Synapse's rules: carol's
	// sends reach either gateway, her /sync the sync worker, and she sees her
	// conversation with alice whole.
	front := d.startFrontDoor(gw1, gw2, p1, p2, sync1)
	carol := newUser(ctx, t, front.url(), "carol")
	room := createRoomWith(ctx, t, alice, "", carol)
	converse(ctx, t, [2]party{
		{"alice", alice, at(alice, sync1.url())},
		{"carol", carol, carol},
	}, []id.RoomID{room}, 20)

	// Every room's log was appended by the writer the sharding function names.
	for _, w := range writers {
		room := byWriter[w][0]
		s, err := d.js.Stream(ctx, d.topology().EventsStream())
		if err != nil {
			t.Fatal(err)
		}
		msg, err := s.GetLastMsgForSubject(ctx, d.topology().EventSubject(room.String()))
		if err != nil {
			t.Fatalf("last log message of %s: %v", room, err)
		}
		if got := msg.Header.Get(streams.HeaderWriter); got != w {
			t.Errorf("room %s: last log message written by %q, want %q", room, got, w)
		}
	}
}

// roomsOfWriters has c create rooms until every writer owns at least n of them, and
// returns them by owner.
func roomsOfWriters(ctx context.Context, t *testing.T, c *mautrix.Client, writers []string, n int) map[string][]id.RoomID {
	t.Helper()
	by := map[string][]id.RoomID{}
	for created := 0; ; created++ {
		enough := true
		for _, w := range writers {
			enough = enough && len(by[w]) >= n
		}
		if enough {
			return by
		}
		if created > 64*n {
			t.Fatalf("after %d rooms some writer owns fewer than %d: %v", created, n, by)
		}
		resp, err := c.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatalf("createRoom: %v", err)
		}
		w := streams.ShardOwner(resp.RoomID.String(), writers)
		by[w] = append(by[w], resp.RoomID)
	}
}

// party is one user of a conversation: the client it sends and pages through, and the
// same device at the process serving its /sync.
type party struct {
	name string
	send *mautrix.Client
	sync *mautrix.Client
}

// sentMessage is a message as its sender knows it.
type sentMessage struct {
	id     id.EventID
	sender id.UserID
	txn    string
	body   string
}

// converse runs the conversation of acceptance 1 in every room at once: both parties
// send perUser messages into each room concurrently while both follow /sync.
func converse(ctx context.Context, t *testing.T, parties [2]party, rooms []id.RoomID, perUser int) {
	t.Helper()
	var since [2]string
	for i, p := range parties {
		var err error
		if since[i], err = syncUntilJoined(ctx, p.sync, rooms); err != nil {
			t.Fatal(err)
		}
	}

	followCtx, stopFollowing := context.WithCancel(ctx)
	bar := newBarriers(len(rooms))
	var seen [2]timelines
	var followErr [2]error
	var followers sync.WaitGroup
	for i, p := range parties {
		followers.Go(func() { seen[i], followErr[i] = follow(followCtx, p.sync, since[i], rooms, bar.allSeen) })
	}
	defer func() { stopFollowing(); followers.Wait() }()

	// sent[room][party] lists that party's messages in the order they were sent.
	sent := make([][2][]sentMessage, len(rooms))
	var senders sync.WaitGroup
	var mu sync.Mutex
	var sendErrs []error
	fail := func(err error) { mu.Lock(); sendErrs = append(sendErrs, err); mu.Unlock() }
	for ri, room := range rooms {
		for pi, p := range parties {
			senders.Go(func() {
				for i := range perUser {
					txn := fmt.Sprintf("%s-%d-%d", p.name, ri, i)
					body := fmt.Sprintf("%s says %d in room %d", p.name, i, ri)
					ev, err := sendText(ctx, p.send, room, txn, body)
					if err != nil {
						fail(fmt.Errorf("%s: send %s: %w", p.name, txn, err))
						return
					}
					if i == perUser/2 {
						again, err := sendText(ctx, p.send, room, txn, body)
						if err != nil || again != ev {
							fail(fmt.Errorf("%s: immediate repeat of %s: got %q, %v; first PUT gave %s", p.name, txn, again, err, ev))
							return
						}
					}
					sent[ri][pi] = append(sent[ri][pi], sentMessage{ev, p.send.UserID, txn, body})
				}
			})
		}
	}
	senders.Wait()
	if len(sendErrs) > 0 {
		t.Fatalf("%d sends failed, first: %v", len(sendErrs), sendErrs[0])
	}

	// A retry long after the first PUT succeeded, as a client whose answer got lost
	// would send it, must give the first event id and add nothing.
	for ri, room := range rooms {
		for pi, p := range parties {
			first := sent[ri][pi][0]
			again, err := sendText(ctx, p.send, room, first.txn, first.body)
			if err != nil || again != first.id {
				t.Fatalf("%s: late repeat of %s: got %q, %v; first PUT gave %s", p.name, first.txn, again, err, first.id)
			}
		}
	}

	if err := setBarriers(ctx, parties[0].send, rooms, bar); err != nil {
		t.Fatal(err)
	}
	followers.Wait()
	for i, err := range followErr {
		if err != nil {
			t.Fatalf("%s following /sync: %v", parties[i].name, err)
		}
	}

	for ri, room := range rooms {
		want := map[id.EventID]sentMessage{}
		for pi := range parties {
			for _, m := range sent[ri][pi] {
				if _, dup := want[m.id]; dup {
					t.Fatalf("room %s: two sends answered with event %s", room, m.id)
				}
				want[m.id] = m
			}
		}
		var order [2][]id.EventID
		for vi, viewer := range parties {
			tl := seen[vi][room]
			if dup := duplicateID(tl); dup != "" {
				t.Errorf("%s's /sync of room %s delivered %s twice", viewer.name, room, dup)
			}
			msgs := ofType(tl, event.EventMessage)
			checkMessages(t, fmt.Sprintf("%s's /sync of room %s", viewer.name, room), msgs, want, sent[ri], viewer.send)
			if last := tl[len(tl)-1]; last.ID != bar.get(room) {
				t.Errorf("%s's /sync of room %s: last event is %s (%s), want the barrier %s", viewer.name, room, last.ID, last.Type, bar.get(room))
			}
			order[vi] = eventIDs(msgs)

			history, err := messagesBackwards(ctx, viewer.send, room)
			if err != nil {
				t.Fatalf("%s: room %s: %v", viewer.name, room, err)
			}
			what := fmt.Sprintf("%s's /messages of room %s", viewer.name, room)
			if dup := duplicateID(history); dup != "" {
				t.Errorf("%s returned %s twice", what, dup)
			}
			if history[0].Type != event.StateCreate || history[len(history)-1].ID != bar.get(room) {
				t.Errorf("%s runs from %s (%s) to %s, want from the m.room.create event to the barrier %s",
					what, history[0].ID, history[0].Type, history[len(history)-1].ID, bar.get(room))
			}
			hmsgs := ofType(history, event.EventMessage)
			checkMessages(t, what, hmsgs, want, sent[ri], viewer.send)
			if !slices.Equal(eventIDs(hmsgs), order[vi]) {
				t.Errorf("%s and /sync order the messages differently", what)
			}
		}
		if !slices.Equal(order[0], order[1]) {
			t.Errorf("room %s: %s and %s saw the messages in different orders", room, parties[0].name, parties[1].name)
		}
	}
}

// checkMessages checks a sequence of m.room.message events a viewer got: exactly the
// sent messages, each once, every sender's in the order it sent them, with their
// content, and unsigned.transaction_id on the viewer's own messages only.
func checkMessages(t *testing.T, what string, msgs []*event.Event, want map[id.EventID]sentMessage, bySender [2][]sentMessage, viewer *mautrix.Client) {
	t.Helper()
	if len(msgs) != len(want) {
		t.Errorf("%s: %d messages, want %d", what, len(msgs), len(want))
	}
	var perSender [2][]id.EventID
	for _, e := range msgs {
		m, ok := want[e.ID]
		if !ok {
			t.Errorf("%s: message %s was never sent", what, e.ID)
			continue
		}
		if e.Sender != m.sender || e.Content.Raw["body"] != m.body {
			t.Errorf("%s: %s from %s with body %v, want from %s with %q", what, e.ID, e.Sender, e.Content.Raw["body"], m.sender, m.body)
		}
		wantTxn := ""
		if m.sender == viewer.UserID {
			wantTxn = m.txn
		}
		if e.Unsigned.TransactionID != wantTxn {
			t.Errorf("%s: %s has unsigned.transaction_id %q, want %q", what, e.ID, e.Unsigned.TransactionID, wantTxn)
		}
		for pi, list := range bySender {
			if len(list) > 0 && list[0].sender == e.Sender {
				perSender[pi] = append(perSender[pi], e.ID)
			}
		}
	}
	for pi, list := range bySender {
		ids := make([]id.EventID, len(list))
		for i, m := range list {
			ids[i] = m.id
		}
		if !slices.Equal(perSender[pi], ids) {
			t.Errorf("%s: the messages of sender %d do not come in the order they were sent", what, pi)
		}
	}
}
