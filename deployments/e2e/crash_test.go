package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/ganglionhq/ganglion/streams"
)

// Acceptance 3: while 4 clients send to 20 rooms, one persister is killed with SIGKILL
// and restarted. Every send that got a 200 is in /sync and in Postgres exactly once, and
// a send that failed, retried with the same txnId, lands once.
func TestCrashSafety(t *testing.T) {
	t.Parallel()
	const (
		users        = 4
		roomCount    = 20
		perUser      = 50
		killAfter    = users * perUser / 3
		attemptLimit = 15 * time.Second
	)
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	writers := []string{"persister1", "persister2"}
	// No main process runs here, to spare the machine's cores, so the accounts stream
	// (the main process's by default) is sharded over the event writers too: every
	// registration and login crosses processes.
	d := newDeployment(t, deploymentOptions{externalNATS: true, eventWriters: writers,
		streamWriters: map[string][]string{"accounts": writers}})
	gws := []*process{d.launchWorker("gateway1", true), d.launchWorker("gateway2", true)}
	victim := d.launchWorker(writers[0], false)
	other := d.launchWorker(writers[1], false)
	sync1 := d.launchWorker("sync1", true)
	for _, p := range []*process{gws[0], gws[1], victim, other, sync1} {
		p.waitReady()
	}

	clients := make([]*mautrix.Client, users)
	for u := range clients {
		clients[u] = newUser(ctx, t, gws[u%2].url(), fmt.Sprintf("user%d", u))
	}
	rooms := make([]id.RoomID, roomCount)
	for i := range rooms {
		rooms[i] = createRoomWith(ctx, t, clients[0], "", clients[1:]...)
	}
	var victimRooms []id.RoomID
	for _, r := range rooms {
		if streams.ShardOwner(r.String(), writers) == victim.name {
			victimRooms = append(victimRooms, r)
		}
	}
	if len(victimRooms) == 0 || len(victimRooms) == roomCount {
		t.Fatalf("%d of %d rooms belong to %s; the test needs rooms on both writers", len(victimRooms), roomCount, victim.name)
	}

	since := make([]string, users)
	for u, c := range clients {
		var err error
		if since[u], err = syncUntilJoined(ctx, at(c, sync1.url()), rooms); err != nil {
			t.Fatal(err)
		}
	}
	followCtx, stopFollowing := context.WithCancel(ctx)
	bar := newBarriers(roomCount)
	seen := make([]timelines, users)
	followErr := make([]error, users)
	var followers sync.WaitGroup
	for u, c := range clients {
		followers.Go(func() { seen[u], followErr[u] = follow(followCtx, at(c, sync1.url()), since[u], rooms, bar.allSeen) })
	}
	defer func() { stopFollowing(); followers.Wait() }()

	// Every send is retried with its txnId until it gets a 200, as a client does.
	var (
		mu       sync.Mutex
		acked    = map[string]id.EventID{} // txn (also the body) -> event id
		roomOf   = map[string]id.RoomID{}
		failures []string
		sendErrs []error
	)
	send := func(c *mautrix.Client, room id.RoomID, txn string, limit time.Duration) error {
		for {
			attemptCtx, cancel := context.WithTimeout(ctx, limit)
			ev, err := sendText(attemptCtx, c, room, txn, txn)
			cancel()
			mu.Lock()
			if err == nil {
				acked[txn], roomOf[txn] = ev, room
			} else {
				failures = append(failures, fmt.Sprintf("%s: %v", txn, err))
			}
			mu.Unlock()
			if err == nil || ctx.Err() != nil {
				return err
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	var count atomic.Int32
	reached := make(chan struct{})
	var senders sync.WaitGroup
	for u, c := range clients {
		senders.Go(func() {
			for i := range perUser {
				room := rooms[(i*7+u*5)%roomCount]
				txn := fmt.Sprintf("u%d-%d", u, i)
				if err := send(c, room, txn, attemptLimit); err != nil {
					mu.Lock()
					sendErrs = append(sendErrs, fmt.Errorf("%s gave up: %w", txn, err))
					mu.Unlock()
					return
				}
				if count.Add(1) == killAfter {
					close(reached)
				}
			}
		})
	}
	sendersDone := make(chan struct{})
	go func() { senders.Wait(); close(sendersDone) }()

	select {
	case <-reached:
	case <-sendersDone:
		t.Fatalf("senders stopped before %d sends: %v", killAfter, sendErrs)
	}
	victim.kill9()
	t.Logf("killed %s after %d acknowledged sends", victim.name, count.Load())

	// A send into a room of the dead writer cannot be answered; the client gives up on
	// it, and retries it once the writer is back.
	probeRoom := victimRooms[0]
	probeCtx, probeCancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := sendText(probeCtx, clients[0], probeRoom, "probe", "probe")
	probeCancel()
	if err == nil {
		t.Fatalf("a send into %s succeeded while its writer %s was down", probeRoom, victim.name)
	}
	victim.restart()
	if err := send(clients[0], probeRoom, "probe", attemptLimit); err != nil {
		t.Fatalf("retrying the failed send: %v", err)
	}

	<-sendersDone
	if len(sendErrs) > 0 {
		t.Fatalf("%d senders gave up, first: %v", len(sendErrs), sendErrs[0])
	}
	t.Logf("%d sends acknowledged, %d attempts failed and were retried: %q", len(acked), len(failures), failures[:min(len(failures), 5)])
	if err := setBarriers(ctx, clients[0], rooms, bar); err != nil {
		t.Fatal(err)
	}
	followers.Wait()
	for u, err := range followErr {
		if err != nil {
			t.Fatalf("user%d following /sync: %v", u, err)
		}
	}
	if len(acked) != users*perUser+1 {
		t.Fatalf("%d sends acknowledged, want %d", len(acked), users*perUser+1)
	}
	byID := map[id.EventID]string{}
	for txn, ev := range acked {
		if other, dup := byID[ev]; dup {
			t.Fatalf("sends %s and %s were both answered with %s", other, txn, ev)
		}
		byID[ev] = txn
	}

	// /sync: every user sees every acknowledged message once, and all in one order.
	for ri, room := range rooms {
		var first []id.EventID
		for u := range clients {
			tl := seen[u][room]
			if dup := duplicateID(tl); dup != "" {
				t.Errorf("user%d's /sync of room %d delivered %s twice", u, ri, dup)
			}
			got := eventIDs(ofType(tl, event.EventMessage))
			var want []id.EventID
			for txn, r := range roomOf {
				if r == room {
					want = append(want, acked[txn])
				}
			}
			if !sameSet(got, want) {
				t.Errorf("user%d's /sync of room %d: %d messages, want the %d acknowledged ones (missing %v, unexpected %v)",
					u, ri, len(got), len(want), minus(want, got), minus(got, want))
			}
			if u == 0 {
				first = got
			} else if !slices.Equal(got, first) {
				t.Errorf("room %d: user%d and user0 saw the messages in different orders", ri, u)
			}
		}
	}

	// Postgres: exactly one row per send, with the event id its sender was given.
	d.query(ctx, func(conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, `SELECT event_id, room_id, json FROM events WHERE type = 'm.room.message'`)
		if err != nil {
			return err
		}
		bodies := map[string]int{}
		for rows.Next() {
			var evID, roomID, raw string
			if err := rows.Scan(&evID, &roomID, &raw); err != nil {
				return err
			}
			var ev struct {
				Content struct {
					Body string `json:"body"`
				} `json:"content"`
			}
			if err := json.Unmarshal([]byte(raw), &ev); err != nil {
				return fmt.Errorf("event %s: %w", evID, err)
			}
			bodies[ev.Content.Body]++
			txn := ev.Content.Body
			if acked[txn] != id.EventID(evID) || roomOf[txn] != id.RoomID(roomID) {
				t.Errorf("Postgres has %s in %s for send %q, which was answered with %s in %s", evID, roomID, txn, acked[txn], roomOf[txn])
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for txn := range acked {
			if bodies[txn] != 1 {
				t.Errorf("send %q is in Postgres %d times", txn, bodies[txn])
			}
		}
		if len(bodies) != len(acked) {
			t.Errorf("Postgres has messages of %d sends, want %d", len(bodies), len(acked))
		}
		return nil
	})
}

func sameSet(a, b []id.EventID) bool {
	return len(a) == len(b) && len(minus(a, b)) == 0 && len(minus(b, a)) == 0
}

// minus returns the elements of a that are not in b.
func minus(a, b []id.EventID) []id.EventID {
	var out []id.EventID
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// TestSingleProcessKill9 is invariant 1 for the single process, whose NATS server is
// embedded and dies with it: sends are answered at their append to the log and
// projected behind the answer, and the process is killed (kill -9) 20 times at random
// moments with sends in flight; every send that got a 200 is there after the last
// restart exactly once, in /messages and in Postgres, and /sync's timeline is the
// newest of them. The seed of the moments is logged.
func TestSingleProcessKill9(t *testing.T) {
	ctx, d, hs := singleProcess(t)
	alice := newUser(ctx, t, hs.url(), "alice")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("seed %d", seed)
	var mu sync.Mutex
	acked := map[id.EventID]bool{}
	const kills = 20
	for k := range kills {
		var senders sync.WaitGroup
		for s := range 4 {
			senders.Go(func() {
				for i := 0; ; i++ {
					ev, err := sendText(ctx, alice, room, fmt.Sprintf("k%d-%d-%d", k, s, i), "x")
					if err != nil {
						return // the process is gone
					}
					mu.Lock()
					acked[ev] = true
					mu.Unlock()
				}
			})
		}
		time.Sleep(time.Duration(20+rng.IntN(300)) * time.Millisecond)
		hs.kill9()
		senders.Wait()
		hs.restart()
	}

	history := func() []id.EventID {
		var seen []id.EventID
		from := ""
		for {
			msgs, err := alice.Messages(ctx, room, from, "", mautrix.DirectionBackward, nil, 500)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range msgs.Chunk {
				if e.Type == event.EventMessage {
					seen = append(seen, e.ID)
				}
			}
			if msgs.End == "" {
				return seen
			}
			from = msgs.End
		}
	}
	// A /sync timeline holds at most 1,000 events: it must be the newest of /messages,
	// in the same order (seen is newest first). A send that was never answered can
	// still land after the last restart (its intent comes back once the killed
	// process's hold on it times out), so the comparison counts only when the history
	// was the same before and after the sync.
	filter := `{"room":{"timeline":{"limit":1000,"types":["m.room.message"]}}}`
	var seen, inSync []id.EventID
	for settled := false; !settled; {
		seen = history()
		resp, err := alice.SyncRequest(ctx, 0, "", filter, false, event.PresenceOffline)
		if err != nil || resp.Rooms.Join[room] == nil {
			t.Fatalf("sync after the restarts: %v", err)
		}
		inSync = inSync[:0]
		for _, e := range slices.Backward(resp.Rooms.Join[room].Timeline.Events) {
			inSync = append(inSync, e.ID)
		}
		settled = slices.Equal(seen, history())
	}
	if want := seen[:min(len(seen), 1000)]; !slices.Equal(inSync, want) {
		t.Errorf("/sync's timeline (%d events) is not the newest %d of /messages", len(inSync), len(want))
	}
	count := map[id.EventID]int{}
	for _, e := range seen {
		count[e]++
	}
	for e := range acked {
		if count[e] != 1 {
			t.Errorf("acknowledged event %s appears %d times in /messages after the restarts", e, count[e])
		}
	}
	d.query(ctx, func(conn *pgx.Conn) error {
		var rows, distinct int
		err := conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT event_id) FROM events WHERE type = 'm.room.message'`).Scan(&rows, &distinct)
		if err == nil && (rows < len(acked) || rows != distinct) {
			t.Errorf("Postgres holds %d message rows (%d distinct) for %d acknowledged sends", rows, distinct, len(acked))
		}
		return err
	})
	t.Logf("%d sends acknowledged over %d kills, all present once after the last restart", len(acked), kills)
}
