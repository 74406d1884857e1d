package persister

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/nats-io/nats.go"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/pgtest"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// fastRetries makes the runner's redeliveries quick, so a test reaches dead letters in
// milliseconds.
func fastRetries(cfg *Config) { cfg.Backoff = func(int) time.Duration { return 10 * time.Millisecond } }

func textMessage(id, room, body string) *schemas.Intent {
	raw, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": body})
	return &schemas.Intent{V: schemas.IntentVersion, Kind: schemas.KindClientEvent, ID: id, RoomID: room, Sender: alice,
		Event: &schemas.ProtoEvent{Type: "m.room.message", Content: raw}}
}

// submitAll submits intents at once and fails unless every one is accepted.
func submitAll(t *testing.T, ic *streams.IntentClient, intents []*schemas.Intent) {
	t.Helper()
	errs := make(chan error, len(intents))
	for _, in := range intents {
		go func() {
			res, err := ic.Submit(context.Background(), in)
			if err == nil && res.Error != nil {
				err = fmt.Errorf("%s: %+v", in.ID, res.Error)
			}
			errs <- err
		}()
	}
	for range intents {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// eventually polls cond; the deadline only guards against hanging forever.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkChains fails unless every stored event's prev_events are stored events of its
// room, one step shallower: no event was built on one that never reached the log.
func (c *cluster) checkChains(t *testing.T) {
	c.settled()
	t.Helper()
	rows, err := c.db.Pool.Query(context.Background(), `SELECT e.event_id, e.room_id, r.room_version, e.json
		FROM events e JOIN rooms r USING (room_id)`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	type node struct {
		room  string
		depth int64
		prev  []string
	}
	nodes := map[string]node{}
	for rows.Next() {
		var id, room, version, js string
		if err := rows.Scan(&id, &room, &version, &js); err != nil {
			t.Fatal(err)
		}
		pdu, err := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(version)).NewEventFromTrustedJSONWithEventID(id, []byte(js), false)
		if err != nil {
			t.Fatal(err)
		}
		nodes[id] = node{room: room, depth: pdu.Depth(), prev: pdu.PrevEventIDs()}
	}
	for id, n := range nodes {
		for _, p := range n.prev {
			pn, ok := nodes[p]
			if !ok || pn.room != n.room || pn.depth != n.depth-1 {
				t.Errorf("event %s (depth %d) builds on %s, which is not the stored event before it", id, n.depth, p)
			}
		}
	}
}

// positionViolation returns a description of the first log message of writer at or
// below its recorded position that Postgres lacks, or "" when there is none: a sync
// feed trusting the position would skip it (invariant 5).
func (c *cluster) positionViolation(writer string) (string, error) {
	ctx := context.Background()
	positions, err := c.db.StreamPositions(ctx, persist.EventsStream)
	if err != nil {
		return "", err
	}
	pos := positions[writer]
	var missing string
	_, err = streams.ReadLog(ctx, c.env.JS, c.env.Topology, streams.LogRange{Writer: writer}, func(msgs []schemas.LogMessage) error {
		for _, m := range msgs {
			if m.Seq > pos || missing != "" {
				continue
			}
			var n int
			if err := c.db.Pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE seq = $1`, int64(m.Seq)).Scan(&n); err != nil {
				return err
			}
			if n != len(m.Batch.Events) {
				missing = fmt.Sprintf("position %d of %s passes log message %d, of which Postgres has %d of %d events",
					pos, writer, m.Seq, n, len(m.Batch.Events))
			}
		}
		return nil
	})
	return missing, err
}

// watchPositions checks the position invariant of writer until the test ends, and
// reports the first violation then.
func (c *cluster) watchPositions(t *testing.T, writer string) {
	done := make(chan struct{})
	var violation atomic.Value
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if v, err := c.positionViolation(writer); err == nil && v != "" {
				violation.CompareAndSwap(nil, v)
			}
		}
	})
	t.Cleanup(func() {
		close(done)
		wg.Wait()
		if v := violation.Load(); v != nil {
			t.Errorf("invariant 5 broken: %s", v)
		}
	})
}

// countInLog counts the events of the log whose body contains marker.
func (c *cluster) countInLog(t *testing.T, marker string) int {
	t.Helper()
	n := 0
	_, err := streams.ReadLog(context.Background(), c.env.JS, c.env.Topology, streams.LogRange{}, func(msgs []schemas.LogMessage) error {
		for _, m := range msgs {
			for _, e := range m.Batch.Events {
				if strings.Contains(string(e.JSON), marker) {
					n++
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestOversizedIntentRefusedAtOnce sends a createRoom whose initial events cannot fit
// one log message: it is answered 413 at once, not retried, not dead-lettered, and
// leaves no room behind, while the writer goes on serving others.
func TestOversizedIntentRefusedAtOnce(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	w := c.writer("w1", 0)
	events := []schemas.ProtoEvent{
		state("m.room.create", "", map[string]string{"room_version": "11"}),
		state("m.room.member", alice, map[string]string{"membership": "join"}),
	}
	big := strings.Repeat("x", 60000)
	for i := range 14 { // 14 × 60 KB: past the 768 KiB of one append, and the intent below NATS's 1 MiB
		events = append(events, state("x.big", fmt.Sprint(i), map[string]string{"v": big}))
	}
	res := submit(t, w, &schemas.Intent{Kind: schemas.KindCreateRoom, ID: c.nextID(), RoomID: "!huge:test", Sender: alice,
		CreateRoom: &schemas.CreateRoom{RoomVersion: "11", Events: events}})
	wantError(t, res, 413, "M_TOO_LARGE")
	wantError(t, submit(t, w, textMessage(c.nextID(), "!huge:test", "hello")), 404, "M_NOT_FOUND")
	c.createRoom(w)
	if res := c.message(w, alice, "still serving"); res.Error != nil {
		t.Fatal(res.Error)
	}
	if m := c.writers["w1"].Metrics.Snapshot(); m.Failed != 0 || m.Retried != 0 || m.DeadLettered != 0 {
		t.Fatalf("the oversized intent was retried or dead-lettered: %+v", m)
	}
}

// TestRefusedCreateLeavesNoRoom: once a room's create is refused, the room does not
// exist for the next intent either (404, not a 403 from an empty room's auth rules).
func TestRefusedCreateLeavesNoRoom(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	w := c.writer("w1", 0)
	// Alice may not join Bob into a room she creates.
	res := submit(t, w, &schemas.Intent{Kind: schemas.KindCreateRoom, ID: c.nextID(), RoomID: "!refused:test", Sender: alice,
		CreateRoom: &schemas.CreateRoom{RoomVersion: "11", Events: []schemas.ProtoEvent{
			state("m.room.create", "", map[string]string{"room_version": "11"}),
			state("m.room.member", bob, map[string]string{"membership": "join"}),
		}}})
	wantError(t, res, 403, "M_FORBIDDEN")
	wantError(t, submit(t, w, textMessage(c.nextID(), "!refused:test", "hello")), 404, "M_NOT_FOUND")
}

// TestPanicLeavesRoomsIntact makes the build of one intent panic, as a bug in the
// protocol library would, while other intents of its room are in the same batches. The
// process survives, the culprit alone is dead-lettered, every other intent is answered,
// and no stored event builds on one that was never appended.
func TestPanicLeavesRoomsIntact(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	// Each build takes a while, so the intents sent meanwhile share batches with the
	// poison one (projections run behind the loop and no longer hold it).
	w := c.writer("w1", 0, fastRetries, func(cfg *Config) {
		cfg.faults.build = func(in *schemas.Intent) {
			if in.Event != nil && strings.Contains(string(in.Event.Content), "poison") {
				panic("injected: the protocol library panicked")
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	c.createRoom(w)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() { _, _ = w.Submit(ctx, textMessage("poison", roomID, "poison")) }()
	var good []*schemas.Intent
	for i := range 12 {
		good = append(good, textMessage(fmt.Sprint("good-", i), roomID, fmt.Sprint("good ", i)))
	}
	submitAll(t, w, good)
	p := c.writers["w1"]
	eventually(t, "the poison intent dead-lettered", func() bool { return p.Metrics.Snapshot().DeadLettered == 1 })
	if res := c.message(w, alice, "after the panic"); res.Error != nil {
		t.Fatal(res.Error)
	}
	if m := p.Metrics.Snapshot(); m.Panics == 0 || m.DeadLettered != 1 {
		t.Fatalf("metrics: %+v", m)
	}
	c.checkChains(t)
	for i := range 12 {
		if n := c.countInLog(t, fmt.Sprint("good ", i)+`"`); n != 1 {
			t.Errorf("good %d is %d times in the log", i, n)
		}
	}
}

// TestLostAckBoundedByTheWriter loses the acknowledgement of an append that the log
// stored. The writer's JetStream has no publish timeout of its own (as in any embedding
// but main's), so only the writer's AppendTimeout ends the wait: the room is caught up,
// the intent is answered from what landed, and the event is stored once.
func TestLostAckBoundedByTheWriter(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	var lost atomic.Bool
	w := c.writer("w1", 0, func(cfg *Config) {
		cfg.AppendTimeout = 300 * time.Millisecond
		cfg.faults.ackLost = func(string) bool { return lost.CompareAndSwap(true, false) }
	})
	c.createRoom(w)
	lost.Store(true)
	res := c.message(w, alice, "ack lost")
	if res.Error != nil || len(res.EventIDs) != 1 {
		t.Fatalf("answer: %+v", res)
	}
	if lost.Load() {
		t.Fatal("the fault was not injected")
	}
	if n := c.countInLog(t, `"ack lost"`); n != 1 {
		t.Fatalf("the event is %d times in the log", n)
	}
	ev, err := c.db.GetEvent(context.Background(), res.EventIDs[0])
	if err != nil || ev == nil {
		t.Fatalf("the answered event is not in Postgres: %v", err)
	}
	if v, err := c.positionViolation("w1"); err != nil || v != "" {
		t.Fatal(v, err)
	}
}

// TestUnknownAppendHoldsThePosition loses the acknowledgement of an append to one room
// and then fails its catch-ups for a while, with another room's intents appended in the
// same loop and after it. No projection may move the writer's position past the
// message whose outcome is unknown while Postgres lacks it (a sync feed would skip it
// for good); once the catch-up works, everything is answered, stored once, and not
// dead-lettered.
func TestUnknownAppendHoldsThePosition(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	const stuck, other = "!stuck:test", "!other:test"
	var lost, catchUpBroken, aside atomic.Bool
	lostFired := make(chan struct{})
	// Building the first intent takes a while, so the intents sent meanwhile arrive as
	// one batch (projections run behind the loop and no longer hold it).
	w := c.writer("w1", 0, fastRetries, func(cfg *Config) {
		cfg.AppendTimeout = 200 * time.Millisecond
		cfg.faults.build = func(in *schemas.Intent) {
			if in.ID == "warm" {
				time.Sleep(400 * time.Millisecond)
			}
		}
		cfg.faults.ackLost = func(room string) bool {
			if room == stuck && lost.CompareAndSwap(true, false) {
				close(lostFired)
				return true
			}
			return false
		}
		cfg.faults.catchUp = func(room string) error {
			if room == stuck && catchUpBroken.Load() {
				return fmt.Errorf("injected: the log is unreachable: %w", nats.ErrDisconnected)
			}
			return nil
		}
		cfg.faults.projectedAside = func() { aside.Store(true) }
	})
	c.createBareRoom(w, stuck)
	c.createBareRoom(w, other)
	c.watchPositions(t, "w1")
	lost.Store(true)
	catchUpBroken.Store(true)
	answers := make(chan *schemas.IntentResult, 7)
	send := func(id, room, body string) {
		res, err := w.Submit(context.Background(), textMessage(id, room, body))
		if err != nil {
			res = &schemas.IntentResult{Error: &schemas.ResultError{Message: err.Error()}}
		}
		answers <- res
	}
	go send("warm", other, "keeps the writer busy")
	time.Sleep(50 * time.Millisecond)
	go send("lost", stuck, "lost ack")
	go send("beside", other, "beside the lost ack")
	<-lostFired
	for i := range 4 {
		go send(fmt.Sprint("after-", i), other, fmt.Sprint("after ", i))
	}
	time.Sleep(time.Second) // the stuck room cannot be caught up meanwhile
	catchUpBroken.Store(false)
	for range 7 {
		if res := <-answers; res.Error != nil || len(res.EventIDs) != 1 {
			t.Fatalf("answer: %+v", res)
		}
	}
	if n := c.countInLog(t, `"lost ack"`); n != 1 {
		t.Fatalf("the lost-ack event is %d times in the log", n)
	}
	if !aside.Load() {
		t.Error("no append shared a loop with the unknown one (the test's timing missed its case)")
	}
	if m := c.writers["w1"].Metrics.Snapshot(); m.DeadLettered != 0 {
		t.Fatalf("dead letters for a passing failure: %+v", m)
	}
}

// TestIdleWriterStartsWhereTheLogIs: a writer that appended nothing while another
// wrote a lot records, at its next start, that it has nothing unprojected up to the
// log's end, so no later start reads that stretch again.
func TestIdleWriterStartsWhereTheLogIs(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	busy := c.writer("busy", 0)
	c.createBareRoom(busy, "!busy:test")
	for i := range 20 {
		if res := submit(t, busy, textMessage(c.nextID(), "!busy:test", fmt.Sprint(i))); res.Error != nil {
			t.Fatal(res.Error)
		}
	}
	c.writer("idle", 0)
	stream, err := c.env.JS.Stream(context.Background(), c.env.Topology.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the idle writer's position at the log's end", func() bool {
		positions, err := c.db.StreamPositions(context.Background(), persist.EventsStream)
		return err == nil && positions["idle"] == info.State.LastSeq
	})
}

// TestDatabaseRestartUnderLoad restarts Postgres (a cluster of the test's own) while
// four clients send to four rooms. The writer waits for it: every send is answered
// once, stored once, nothing is dead-lettered, and no position passes a message
// Postgres lacks.
func TestDatabaseRestartUnderLoad(t *testing.T) {
	t.Parallel()
	srv := pgtest.StartServer(t)
	c := newClusterOn(t, srv.DSN())
	w := c.writer("w1", 0, fastRetries, func(cfg *Config) { cfg.DBTimeout = 2 * time.Second })
	rooms := []string{"!r0:test", "!r1:test", "!r2:test", "!r3:test"}
	for _, r := range rooms {
		c.createBareRoom(w, r)
	}
	const perClient, pauseAt = 40, 10
	// The clients pause once, so the database goes down while the writer is idle and
	// the next intents meet it down from their first query; they keep sending after it
	// is gone, and while it is coming back.
	var paused sync.WaitGroup
	paused.Add(len(rooms))
	resume := make(chan struct{})
	var wg sync.WaitGroup
	results := make(chan string, len(rooms)*perClient)
	for ci, room := range rooms {
		wg.Go(func() {
			pause := sync.OnceFunc(paused.Done)
			defer pause() // a client that stops early does not hold the others
			for i := range perClient {
				if i == pauseAt {
					pause()
					<-resume
				}
				// A client retries a send that timed out with the same transaction.
				in := textMessage(fmt.Sprintf("c%d-%d", ci, i), room, fmt.Sprintf("send c%d m%d", ci, i))
				for {
					res, err := w.Submit(context.Background(), in)
					if err != nil {
						t.Logf("send %s: %v; retrying", in.ID, err)
						continue
					}
					if res.Error != nil || len(res.EventIDs) != 1 {
						t.Errorf("send %s refused: %+v", in.ID, res)
						return
					}
					results <- res.EventIDs[0]
					break
				}
			}
		})
	}
	paused.Wait()
	srv.Stop(t)
	close(resume)
	time.Sleep(3 * time.Second)
	srv.Start(t)
	wg.Wait()
	close(results)
	ids := map[string]bool{}
	for id := range results {
		if ids[id] {
			t.Fatalf("event %s answered twice", id)
		}
		ids[id] = true
	}
	if len(ids) != len(rooms)*perClient {
		t.Fatalf("%d distinct answers, want %d", len(ids), len(rooms)*perClient)
	}
	var stored int
	c.settled()
	if err := c.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type = 'm.room.message'`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != len(ids) || c.countInLog(t, `"send c`) != len(ids) {
		t.Fatalf("%d messages in Postgres, %d in the log, want %d each", stored, c.countInLog(t, `"send c`), len(ids))
	}
	if m := c.writers["w1"].Metrics.Snapshot(); m.DeadLettered != 0 || m.Retried != 0 {
		t.Fatalf("the outage spent deliveries: %+v", m)
	}
	if v, err := c.positionViolation("w1"); err != nil || v != "" {
		t.Fatal(v, err)
	}
	c.checkChains(t)
}

// TestDeferredIntentsSurviveAKnownOne: a room's intents outgrow one append, and among
// those that fit is one handled before (a client's retry). Answering it from its stored
// result rebuilds the room's batch; the intents left for the next append must still
// be handled, not acknowledged unhandled.
func TestDeferredIntentsSurviveAKnownOne(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	// A slow build of "busy": what comes meanwhile is one batch.
	w := c.writer("w1", 0, func(cfg *Config) {
		cfg.faults.build = func(in *schemas.Intent) {
			if in.ID == "busy" {
				time.Sleep(300 * time.Millisecond)
			}
		}
	})
	c.createRoom(w)
	c.createBareRoom(w, "!other:test")
	known := textMessage("known", roomID, "known")
	if res := submit(t, w, known); res.Error != nil {
		t.Fatal(res.Error)
	}
	go func() {
		_, _ = w.Submit(context.Background(), textMessage("busy", "!other:test", "keeps the writer busy"))
	}()
	time.Sleep(100 * time.Millisecond)
	intents := []*schemas.Intent{known}
	body := strings.Repeat("x", 60000)
	for i := range 20 { // 1.2 MB: past one append
		intents = append(intents, textMessage(fmt.Sprint("big-", i), roomID, body))
	}
	submitAll(t, w, intents)
	var stored int
	c.settled()
	if err := c.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type = 'm.room.message' AND room_id = $1`, roomID).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != 21 {
		t.Fatalf("%d messages stored, want 21", stored)
	}
}

// TestHTMLHeavyEventsFitTheirAppend: characters that encoding/json escapes by default
// (<, >, &) must not make a log message larger than the writer counted; a batch of
// such events is appended at the first try.
func TestHTMLHeavyEventsFitTheirAppend(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	w := c.writer("w1", 0)
	c.createRoom(w)
	var intents []*schemas.Intent
	for i := range 12 { // 720 KB of '<' as they are; 4.3 MB escaped
		intents = append(intents, textMessage(fmt.Sprint("html-", i), roomID, strings.Repeat("<", 60000)))
	}
	submitAll(t, w, intents)
	if m := c.writers["w1"].Metrics.Snapshot(); m.Failed != 0 || m.Retried != 0 || m.Waits != 0 {
		t.Fatalf("appends failed on the way: %+v", m)
	}
	if n := c.countInLog(t, "<<<<"); n != 12 {
		t.Fatalf("%d of 12 events in the log", n)
	}
}

// TestEventAloneOverTheAppendBoundIsRefused: with a bus whose messages are small
// (max_payload), an event that cannot fit one append even alone is refused with 413,
// and the writer goes on serving.
func TestEventAloneOverTheAppendBoundIsRefused(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	w := c.writer("w1", 0, func(cfg *Config) { cfg.faults.maxAppend = 20000 }) // as with max_payload about 26 KB
	c.createBareRoom(w, roomID)
	wantError(t, submit(t, w, textMessage("big", roomID, strings.Repeat("x", 30000))), 413, "M_TOO_LARGE")
	if res := submit(t, w, textMessage("small", roomID, "still serving")); res.Error != nil {
		t.Fatal(res.Error)
	}
}

// TestHungDatabaseWaitsInPlace freezes Postgres (SIGSTOP: connections open, no
// answers) while intents arrive. New sends need no Postgres: they are answered during
// the hang. Retries of sends whose results only Postgres holds must ask it; every
// database call of the writer has a deadline, so the writer notices and waits in place
// instead of hanging in a call; once Postgres answers again every retry gets its
// original event, none spent a delivery or was dead-lettered, and nothing is twice in
// the log.
func TestHungDatabaseWaitsInPlace(t *testing.T) {
	t.Parallel()
	srv := pgtest.StartServer(t)
	c := newClusterOn(t, srv.DSN())
	// One intent per batch keeps few in memory: the early ones are in Postgres only.
	w := c.writer("w1", 0, fastRetries, func(cfg *Config) { cfg.DBTimeout = 300 * time.Millisecond; cfg.MaxBatch = 1 })
	c.createRoom(w)
	p := c.writers["w1"]
	eventually(t, "the intent id filter", func() bool { return !p.seen.maybe("never sent") })
	first := map[string]string{}
	for i := range 30 {
		id := fmt.Sprint("before-", i)
		res, err := w.Submit(context.Background(), textMessage(id, roomID, fmt.Sprint("before the hang ", i)))
		if err != nil || res.Error != nil || len(res.EventIDs) != 1 {
			t.Fatalf("%s: %v %+v", id, err, res)
		}
		first[id] = res.EventIDs[0]
	}
	c.settled()
	if _, held := p.recent.Get("before-0"); held {
		t.Fatal("the first send is still in memory")
	}
	srv.Pause(t)
	resumed := false
	defer func() {
		if !resumed {
			srv.Resume(t)
		}
	}()
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := w.Submit(ctx, textMessage(fmt.Sprint("new-", i), roomID, fmt.Sprint("during the hang ", i)))
		cancel()
		if err != nil || res.Error != nil || len(res.EventIDs) != 1 {
			t.Fatalf("a new send during the hang: %v %+v", err, res)
		}
	}
	answers := make(chan error, 5)
	for i := range 5 {
		go func() {
			id := fmt.Sprint("before-", i)
			res, err := w.Submit(context.Background(), textMessage(id, roomID, "a retry"))
			if err == nil && (res.Error != nil || len(res.EventIDs) != 1 || res.EventIDs[0] != first[id]) {
				err = fmt.Errorf("retry of %s: %+v, first answered %s", id, res, first[id])
			}
			answers <- err
		}()
	}
	eventually(t, "the writer to notice the hang", func() bool { return p.Metrics.Snapshot().Waits > 0 })
	srv.Resume(t)
	resumed = true
	for range 5 {
		if err := <-answers; err != nil {
			t.Fatal(err)
		}
	}
	if m := p.Metrics.Snapshot(); m.Retried != 0 || m.DeadLettered != 0 {
		t.Fatalf("the hang spent deliveries: %+v", m)
	}
	if n := c.countInLog(t, "the hang"); n != 33 {
		t.Fatalf("%d of 33 events in the log", n)
	}
	if n := c.countInLog(t, "a retry"); n != 0 {
		t.Fatalf("%d retries in the log", n)
	}
}

// TestProjectionFailingAfterTheAnswer: sends are answered at their append while the
// projection fails for ten seconds; a retry meanwhile gets the same event, the
// writer's position stays below them (so no sync feed passes them), and once Postgres
// takes writes again every event is there once.
func TestProjectionFailingAfterTheAnswer(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	var failing atomic.Bool
	w := c.writer("w1", 0, func(cfg *Config) {
		cfg.faults.project = func() error {
			if failing.Load() {
				return errors.New("injected projection failure")
			}
			return nil
		}
	})
	c.createRoom(w)
	c.settled()
	before, err := c.db.StreamPositions(context.Background(), persist.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	failing.Store(true)
	start := time.Now()
	var sent []*schemas.Intent
	var answers []*schemas.IntentResult
	for i := range 5 {
		in := textMessage(fmt.Sprintf("behind-%d", i), roomID, fmt.Sprintf("behind %d", i))
		res := submit(t, w, in)
		if res.Error != nil || len(res.EventIDs) != 1 || res.Seq == 0 {
			t.Fatalf("send %d while projections fail: %+v", i, res)
		}
		sent, answers = append(sent, in), append(answers, res)
	}
	if again := submit(t, w, sent[2]); again.Error != nil || again.EventIDs[0] != answers[2].EventIDs[0] {
		t.Fatalf("a retry before the projection: %+v, want %s", again, answers[2].EventIDs[0])
	}
	time.Sleep(10*time.Second - time.Since(start))
	var stored int
	if err := c.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type = 'm.room.message'`).Scan(&stored); err != nil || stored != 0 {
		t.Fatalf("%d messages in Postgres while projections fail (%v)", stored, err)
	}
	during, err := c.db.StreamPositions(context.Background(), persist.EventsStream)
	if err != nil || during["w1"] != before["w1"] || during["w1"] >= answers[0].Seq {
		t.Fatalf("position %d while projections fail (was %d, first answer at %d): %v", during["w1"], before["w1"], answers[0].Seq, err)
	}
	failing.Store(false)
	c.settled()
	for _, a := range answers {
		ev, err := c.db.GetEvent(context.Background(), a.EventIDs[0])
		if err != nil || ev.Seq != a.Seq {
			t.Fatalf("event %s after recovery: %+v, %v", a.EventIDs[0], ev, err)
		}
	}
	if err := c.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type = 'm.room.message'`).Scan(&stored); err != nil || stored != len(answers) {
		t.Fatalf("%d messages in Postgres, want %d (%v)", stored, len(answers), err)
	}
	if v, err := c.positionViolation("w1"); err != nil || v != "" {
		t.Fatal(v, err)
	}
	c.checkChains(t)
}

// TestLostCommitsProjectedAgain: projections behind answers commit without waiting for
// their WAL flush, so a crash of Postgres can lose the last of them. The writer finds
// the loss while idle (the stored position is behind one it committed), projects the
// lost batches again from the log, and goes on.
func TestLostCommitsProjectedAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t)
	w := c.writer("w1", 0)
	c.createRoom(w)
	c.message(w, alice, "kept")
	c.settled()
	tables := []string{"events", "current_state", "rooms", "intent_results", "stream_positions"}
	exec := func(tx pgx.Tx, q string) {
		t.Helper()
		if _, err := tx.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	err := pgx.BeginFunc(ctx, c.db.Pool, func(tx pgx.Tx) error {
		for _, table := range tables {
			exec(tx, "CREATE TABLE lost_"+table+" AS SELECT * FROM "+table)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var lost []string
	for i := range 3 {
		lost = append(lost, c.message(w, alice, fmt.Sprint("lost ", i)).EventIDs[0])
	}
	c.settled()
	// Postgres comes back without the last commits.
	err = pgx.BeginFunc(ctx, c.db.Pool, func(tx pgx.Tx) error {
		for _, table := range tables {
			exec(tx, "DELETE FROM "+table)
			exec(tx, "INSERT INTO "+table+" SELECT * FROM lost_"+table)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the lost events projected again", func() bool {
		for _, id := range lost {
			if _, err := c.db.GetEvent(ctx, id); err != nil {
				return false
			}
		}
		return true
	})
	if res := c.message(w, alice, "after"); res.Error != nil {
		t.Fatal(res.Error)
	}
	c.settled()
	var n int
	if err := c.db.Pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE type = 'm.room.message'`).Scan(&n); err != nil || n != 5 {
		t.Fatalf("%d messages in Postgres, want 5 (%v)", n, err)
	}
	if v, err := c.positionViolation("w1"); err != nil || v != "" {
		t.Fatal(v, err)
	}
	c.checkChains(t)
}
