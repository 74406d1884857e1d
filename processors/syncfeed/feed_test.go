package syncfeed

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	mathrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/pgtest"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
	"github.com/ganglionhq/ganglion/streams/natstest"
)

// fixture is one test's NATS server, stream namespace and database.
type fixture struct {
	t    *testing.T
	nc   *nats.Conn
	js   jetstream.JetStream
	topo streams.Topology
	db   *persist.DB
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	env := natstest.Start(t)
	db, err := persist.Open(context.Background(), pgtest.DSN(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return &fixture{t: t, nc: env.NC, js: env.JS, topo: env.Topology, db: db}
}

func (fx *fixture) config() Config {
	// Polling is off (an hour) unless a test turns it on, so every advance in the other
	// tests comes from the notices the test sends.
	return Config{JS: fx.js, NC: fx.nc, Topology: fx.topo, DB: fx.db, PollInterval: time.Hour}
}

// run creates a feed and runs it until the test ends.
func (fx *fixture) run(d Config) *Feed {
	fx.t.Helper()
	f, err := New(context.Background(), d)
	if err != nil {
		fx.t.Fatal(err)
	}
	// Notices sent before the feed subscribes are lost by design (polling recovers
	// them); the tests that turn polling off wait for the subscription. It is made on
	// the test's connection before anything else Run subscribes to.
	subs := fx.nc.NumSubscriptions()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := f.Run(ctx); err != nil {
			fx.t.Errorf("Run: %v", err)
		}
	}()
	fx.t.Cleanup(func() { cancel(); <-done })
	eventually(fx.t, "the feed to subscribe", func() bool { return fx.nc.NumSubscriptions() > subs })
	return f
}

// publish appends a synthetic log message; the feed must never look at the body.
func (fx *fixture) publish(writer, room string, members ...string) uint64 {
	fx.t.Helper()
	msg := nats.NewMsg(fx.topo.EventSubject(room))
	msg.Header.Set(streams.HeaderWriter, writer)
	msg.Header.Set(streams.HeaderRoom, room)
	if len(members) > 0 {
		msg.Header.Set(streams.HeaderMembers, strings.Join(members, " "))
	}
	msg.Data = []byte("not a log batch")
	ack, err := fx.js.PublishMsg(context.Background(), msg)
	if err != nil {
		fx.t.Fatal(err)
	}
	return ack.Sequence
}

func (fx *fixture) notice(writer string, seq uint64) {
	fx.t.Helper()
	data, _ := json.Marshal(schemas.Projected{Writer: writer, Seq: seq})
	if err := fx.nc.Publish(fx.topo.ProjectedSubject(), data); err != nil {
		fx.t.Fatal(err)
	}
}

func (fx *fixture) setRow(writer string, seq uint64) {
	fx.t.Helper()
	_, err := fx.db.Pool.Exec(context.Background(), `INSERT INTO stream_positions (stream_name, instance_name, stream_id)
		VALUES ('events', $1, $2) ON CONFLICT (stream_name, instance_name) DO UPDATE SET stream_id = excluded.stream_id`,
		writer, int64(seq))
	if err != nil {
		fx.t.Fatal(err)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// state is a consistent snapshot of the feed's bookkeeping.
func (f *Feed) state() (pos, next uint64, pending int, projected map[string]uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	projected = make(map[string]uint64, len(f.projected))
	for w, p := range f.projected {
		projected[w] = p
	}
	return f.pos, f.next, len(f.pending), projected
}

// waitersIndexed counts the index entries of waiters by room keys and user keys.
func (f *Feed) waitersIndexed() (rooms, users int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, s := range f.byKey {
		if strings.HasPrefix(k, "!") {
			rooms += len(s)
		} else {
			users += len(s)
		}
	}
	return rooms, users
}

// read waits until the feed has read every message up to seq.
func read(t *testing.T, f *Feed, seq uint64) {
	t.Helper()
	eventually(t, "the feed to read the log", func() bool { _, next, _, _ := f.state(); return next > seq })
}

// noticed waits until the feed knows writer projected up to at least seq.
func noticed(t *testing.T, f *Feed, writer string, seq uint64) {
	t.Helper()
	eventually(t, "the feed to take the notice", func() bool { _, _, _, p := f.state(); return p[writer] >= seq })
}

// modelPosition is the rule itself: the largest published sequence such that every
// message up to it is projected by its writer.
func modelPosition(writers []string, projected map[string]uint64) uint64 {
	var pos uint64
	for i, w := range writers {
		seq := uint64(i + 1)
		if projected[w] < seq {
			break
		}
		pos = seq
	}
	return pos
}

func TestOneSlowWriterHoldsThePosition(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	f := fx.run(fx.config())

	a1 := fx.publish("A", "!a:x")
	b2 := fx.publish("B", "!b:x")
	a3 := fx.publish("A", "!a:x")
	a4 := fx.publish("A", "!a:x")
	read(t, f, a4)
	if pos := f.Position(); pos != 0 {
		t.Fatalf("position %d before any projection", pos)
	}

	// A is fast: all its messages are projected, but B's message 2 is not, so nothing
	// after 1 may become visible.
	fx.notice("A", a4)
	noticed(t, f, "A", a4)
	if pos := f.Position(); pos != a1 {
		t.Fatalf("position %d with B's message %d unprojected, want %d", pos, b2, a1)
	}
	// Notices arrive out of order: an older one changes nothing.
	fx.notice("A", a3)
	fx.notice("B", a1)
	noticed(t, f, "B", a1)
	if pos, _, _, p := f.state(); pos != a1 || p["A"] != a4 {
		t.Fatalf("after stale notices: position %d, projected[A] %d", pos, p["A"])
	}
	fx.notice("B", b2)
	noticed(t, f, "B", b2)
	if pos := f.Position(); pos != a4 {
		t.Fatalf("position %d once B caught up, want %d", pos, a4)
	}
}

// seed replays a failed randomized run: go test -run Interleavings -seed N.
var seed = flag.Uint64("seed", 0, "seed of the randomized tests (0: a new one, logged)")

// newRand returns the test's random source, its seed logged so a failure can be
// replayed with -seed.
func newRand(t *testing.T) *mathrand.Rand {
	s := *seed
	if s == 0 {
		s = mathrand.Uint64()
	}
	t.Logf("random seed %d (rerun with -seed %d)", s, s)
	return mathrand.New(mathrand.NewPCG(s, s))
}

func TestPositionFollowsTheRuleUnderRandomInterleavings(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	f := fx.run(fx.config())
	rnd := newRand(t)

	var writers []string // writer of each published sequence, index = seq-1
	projected := map[string]uint64{}
	last := map[string]uint64{}
	for step := 0; step < 80; step++ {
		w := []string{"A", "B"}[rnd.IntN(2)]
		// B is the slow one: it projects less often than A.
		projectOdds := map[string]int{"A": 2, "B": 5}[w]
		if rnd.IntN(projectOdds) != 0 || last[w] == 0 {
			seq := fx.publish(w, "!r"+w+":x")
			writers = append(writers, w)
			last[w] = seq
			read(t, f, seq)
		} else {
			// Project up to some message of w, not necessarily its last (batched
			// projection), sometimes a position already covered (late notice).
			var mine []uint64
			for i, ww := range writers {
				if ww == w {
					mine = append(mine, uint64(i+1))
				}
			}
			seq := mine[rnd.IntN(len(mine))]
			fx.notice(w, seq)
			projected[w] = max(projected[w], seq)
			noticed(t, f, w, projected[w])
		}
		if pos, want := f.Position(), modelPosition(writers, projected); pos != want {
			t.Fatalf("step %d: position %d, rule gives %d (writers %v, projected %v)", step, pos, want, writers, projected)
		}
	}
	// Everyone catches up: everything becomes visible.
	fx.notice("A", uint64(len(writers)))
	fx.notice("B", uint64(len(writers)))
	eventually(t, "everything visible", func() bool { return f.Position() == uint64(len(writers)) })
}

// waitAsync runs Wait in a goroutine and returns where its result arrives.
func waitAsync(ctx context.Context, f *Feed, since uint64, user string, rooms ...string) <-chan uint64 {
	ch := make(chan uint64, 1)
	go func() { ch <- f.Wait(ctx, since, user, rooms) }()
	return ch
}

func TestWaitWakesTheConcernedWaitersOnly(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	f := fx.run(fx.config())
	ctx := context.Background()

	byRoom := waitAsync(ctx, f, 0, "@x:x", "!a:x", "!c:x")
	byUser := waitAsync(ctx, f, 0, "@u:x", "!c:x")
	otherCtx, cancelOther := context.WithCancel(ctx)
	other := waitAsync(otherCtx, f, 0, "@o:x", "!b:x")
	eventually(t, "three waiters", func() bool { r, u := f.waitersIndexed(); return r == 4 && u == 3 })

	// A message of !a from fast writer A after an unprojected one of slow writer B in
	// another room: the !a waiter must not wake before the position passes it.
	b1 := fx.publish("B", "!z:x")
	a2 := fx.publish("A", "!a:x")
	read(t, f, a2)
	fx.notice("A", a2)
	noticed(t, f, "A", a2)
	if r, u := f.waitersIndexed(); r != 4 || u != 3 {
		t.Fatalf("a waiter woke while message %d of the slow writer is unprojected (%d room, %d user entries)", b1, r, u)
	}
	fx.notice("B", b1)
	if got := <-byRoom; got < a2 {
		t.Fatalf("room waiter woke at %d, before its message %d", got, a2)
	}
	if r, u := f.waitersIndexed(); r != 2 || u != 2 {
		t.Fatalf("after the !a message: %d room and %d user entries, want 2 and 2", r, u)
	}

	// A membership change naming @u in a room it does not wait on wakes it.
	a3 := fx.publish("A", "!new:x", "@someone:x", "@u:x")
	fx.notice("A", a3)
	if got := <-byUser; got < a3 {
		t.Fatalf("user waiter woke at %d, before its message %d", got, a3)
	}
	eventually(t, "the user waiter to leave the index", func() bool { r, u := f.waitersIndexed(); return r == 1 && u == 1 })
	select {
	case got := <-other:
		t.Fatalf("unconcerned waiter woke at %d", got)
	default:
	}

	// Ending the context releases the waiter with the current position and forgets it.
	cancelOther()
	if got := <-other; got != a3 {
		t.Fatalf("cancelled waiter returned %d, want the position %d", got, a3)
	}
	if r, u := f.waitersIndexed(); r != 0 || u != 0 {
		t.Fatalf("cancelled waiter still indexed: %d room, %d user entries", r, u)
	}

	// A token behind the position returns at once when a remembered message after it
	// concerns the caller, and blocks when none does.
	if got := f.Wait(ctx, 0, "@nobody:x", []string{"!a:x"}); got != a3 {
		t.Fatalf("Wait behind the position returned %d, want %d", got, a3)
	}
	if got := f.Wait(ctx, a2, "@u:x", nil); got != a3 {
		t.Fatalf("Wait for a remembered membership returned %d, want %d", got, a3)
	}
	// Which keys changed, in one pass: after 0, !a (a2) and @u (a3), not !b; after a2,
	// only @u.
	if changed, known := f.ChangedKeys(0, []string{"!a:x", "!b:x", "@u:x"}); !known ||
		!maps.Equal(changed, map[string]bool{"!a:x": true, "@u:x": true}) {
		t.Errorf("ChangedKeys after 0: %v, %v", changed, known)
	}
	if changed, known := f.ChangedKeys(a2, []string{"!a:x", "@u:x"}); !known || !maps.Equal(changed, map[string]bool{"@u:x": true}) {
		t.Errorf("ChangedKeys after %d: %v, %v", a2, changed, known)
	}
	if changed, known := f.ChangedKeys(a3, []string{"!a:x"}); !known || len(changed) != 0 {
		t.Errorf("ChangedKeys at the position: %v, %v", changed, known)
	}
	blockedCtx, cancelBlocked := context.WithCancel(ctx)
	blocked := waitAsync(blockedCtx, f, a2, "@nobody:x", "!a:x")
	eventually(t, "the waiter to block", func() bool { r, _ := f.waitersIndexed(); return r == 1 })
	cancelBlocked()
	<-blocked
}

func TestWaitReturnsAtOnceForTokensOlderThanItRemembers(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	d := fx.config()
	d.Recent = 2
	f := fx.run(d)
	var last uint64
	for range 3 {
		last = fx.publish("A", "!a:x")
	}
	fx.notice("A", last)
	eventually(t, "visible", func() bool { return f.Position() == last })
	if _, known := f.ChangedKeys(0, []string{"!a:x"}); known {
		t.Error("ChangedKeys claims to know what it forgot")
	}
	// Message 1 has left the memory; a caller at 0 must look in Postgres.
	if got := f.Wait(context.Background(), 0, "@nobody:x", []string{"!unrelated:x"}); got != last {
		t.Fatalf("Wait returned %d, want %d", got, last)
	}
}

func TestPollingRecoversALostNotice(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	d := fx.config()
	d.PollInterval = 10 * time.Millisecond
	f := fx.run(d)

	a1 := fx.publish("A", "!a:x")
	b2 := fx.publish("B", "!b:x")
	read(t, f, b2)
	fx.notice("A", a1)
	noticed(t, f, "A", a1)
	// B's projection commits but its notice never arrives.
	fx.setRow("B", b2)
	waiter := waitAsync(context.Background(), f, a1, "@x:x", "!b:x")
	if got := <-waiter; got != b2 {
		t.Fatalf("waiter woke at %d, want %d", got, b2)
	}
}

func TestPollingFindsAMessageProjectedByAnotherWriter(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	d := fx.config()
	d.PollInterval = 10 * time.Millisecond
	f := fx.run(d)

	x1 := fx.publish("X", "!a:x") // X appended, then its shard moved to W
	w2 := fx.publish("W", "!b:x")
	read(t, f, w2)
	fx.notice("W", w2)
	noticed(t, f, "W", w2)
	if pos := f.Position(); pos != 0 {
		t.Fatalf("position %d with X's message unprojected", pos)
	}
	// W catches the room up from the log and projects X's message under its own name:
	// the message is in Postgres, but X's position will never cover it.
	_, err := fx.db.Pool.Exec(context.Background(), `INSERT INTO events
		(event_id, room_id, seq, idx, type, sender, depth, origin_server_ts, json)
		VALUES ('$x1', '!a:x', $1, 0, 'm.room.message', '@x:x', 1, 0, '{}')`, int64(x1))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "X's message found in Postgres", func() bool { return f.Position() == w2 })
	if _, _, _, p := f.state(); p["X"] != 0 {
		t.Fatalf("projected[X] = %d, want 0: only the message itself was found", p["X"])
	}
}

func TestStartsAtTheSlowestWritersPosition(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	fx.publish("A", "!a:x")
	b2 := fx.publish("B", "!b:x")
	a3 := fx.publish("A", "!a:x")
	a4 := fx.publish("A", "!a:x")
	fx.setRow("A", a3)
	fx.setRow("B", b2)

	start := func(writers ...string) uint64 {
		d := fx.config()
		d.Writers = writers
		f, err := New(context.Background(), d)
		if err != nil {
			t.Fatal(err)
		}
		return f.Position()
	}
	if pos := start("A", "B"); pos != b2 {
		t.Fatalf("start position %d, want the slowest writer's %d", pos, b2)
	}
	// A configured writer that has never projected anything could have messages
	// anywhere in the log: the feed must start from the beginning.
	if pos := start("A", "B", "C"); pos != 0 {
		t.Fatalf("start position %d with an unprojected configured writer, want 0", pos)
	}

	f := fx.run(fx.config())
	read(t, f, a4)
	if pos := f.Position(); pos != a3 {
		t.Fatalf("position %d after reading the log, want %d (A projected up to %d)", pos, a3, a3)
	}
	fx.notice("A", a4)
	eventually(t, "A's last message visible", func() bool { return f.Position() == a4 })
}

func TestPendingIsBounded(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	d := fx.config()
	d.MaxPending = 3
	f := fx.run(d)

	b1 := fx.publish("B", "!b:x")
	var last uint64
	for range 7 {
		last = fx.publish("A", "!a:x")
	}
	fx.notice("A", last)
	noticed(t, f, "A", last)
	read(t, f, 3)
	// The reader stops while B's message holds the position and pending is full. A sleep
	// can only hide a failure here, never invent one.
	time.Sleep(50 * time.Millisecond)
	if pos, next, pending, _ := f.state(); pos != 0 || next != 4 || pending != 3 {
		t.Fatalf("with pending full: position %d, next %d, pending %d; want 0, 4, 3", pos, next, pending)
	}
	fx.notice("B", b1)
	eventually(t, "everything visible", func() bool { return f.Position() == last })
	if _, _, pending, _ := f.state(); pending != 0 {
		t.Fatalf("%d messages still pending", pending)
	}
}

// Many waiters on one room all wake for one message, and only once.
func TestManyWaitersOnOneRoom(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	f := fx.run(fx.config())
	var wg sync.WaitGroup
	results := make(chan uint64, 50)
	for i := range 50 {
		wg.Go(func() { results <- f.Wait(context.Background(), 0, "@u"+string(rune('a'+i%26))+":x", []string{"!a:x"}) })
	}
	eventually(t, "50 waiters", func() bool { r, _ := f.waitersIndexed(); return r == 50 })
	seq := fx.publish("A", "!a:x")
	fx.notice("A", seq)
	wg.Wait()
	close(results)
	for got := range results {
		if got != seq {
			t.Fatalf("waiter returned %d, want %d", got, seq)
		}
	}
	if r, u := f.waitersIndexed(); r != 0 || u != 0 {
		t.Fatalf("%d room and %d user entries left", r, u)
	}
}

// TestRememberedIndexAgreesWithTheRing checks the per-key index that answers NewSince
// and ChangedKeys against a scan of the ring it indexes, while the ring wraps many
// times, for every token the ring answers for.
func TestRememberedIndexAgreesWithTheRing(t *testing.T) {
	rng := mathrand.New(mathrand.NewPCG(7, 11))
	f := &Feed{recent: make([]entry, 0, 16), latest: map[string]uint64{}}
	// Many keys, most of them rare, so keys leave the ring and must leave the index.
	keys := []string{"!a", "!b", "!c", "@u", "@v"}
	for i := range 60 {
		keys = append(keys, fmt.Sprintf("!r%d", i))
	}
	keys = append(keys, streams.WakeEveryone)
	scan := func(since uint64, asked []string) map[string]bool {
		got := map[string]bool{}
		for _, e := range f.recent {
			if e.seq <= since {
				continue
			}
			for _, k := range e.keys {
				if k == streams.WakeEveryone {
					for _, a := range asked {
						got[a] = true
					}
				}
				if slices.Contains(asked, k) {
					got[k] = true
				}
			}
		}
		return got
	}
	var seq uint64
	for range 500 {
		seq += 1 + uint64(rng.IntN(3))
		var ek []string
		for range rng.IntN(3) {
			// The message to everyone is rare, as in the log.
			k := keys[rng.IntN(len(keys)-1)]
			if rng.IntN(40) == 0 {
				k = streams.WakeEveryone
			}
			ek = append(ek, k)
		}
		f.remember(entry{seq: seq, keys: ek})
		inRing := map[string]bool{}
		for _, e := range f.recent {
			for _, k := range e.keys {
				inRing[k] = true
			}
		}
		if len(f.latest) > len(inRing) {
			t.Fatalf("the index holds %d keys, the ring %d", len(f.latest), len(inRing))
		}
		asked := keys[:1+rng.IntN(len(keys)-1)]
		for since := f.recentFloor; since <= seq; since++ {
			want := scan(since, asked)
			got := f.concernedLocked(since, asked, false)
			if len(got) != len(want) {
				t.Fatalf("since %d keys %v: index says %v, ring says %v", since, asked, got, want)
			}
			for k := range want {
				if !got[k] {
					t.Fatalf("since %d keys %v: index says %v, ring says %v", since, asked, got, want)
				}
			}
			if first := f.concernedLocked(since, asked, true); (len(first) > 0) != (len(want) > 0) {
				t.Fatalf("since %d keys %v: first says %v, ring says %v", since, asked, first, want)
			}
		}
	}
}

// End is a position the feed reaches: 0 for a stream without messages (an empty
// typing stream's last sequence is its clock-based first one less one, which no
// message will ever have), and the last message's once there is one. A read that waits
// for End must not wait out its bound on a quiet server.
func TestEndIsAPositionTheFeedReaches(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	events := fx.config()
	events.Writers = []string{"w1"}
	typing := fx.config()
	typing.Stream = schemas.StreamTyping
	feeds := map[string]*Feed{"events": fx.run(events), "typing": fx.run(typing)}
	ctx := context.Background()
	for name, f := range feeds {
		if end, err := f.End(ctx); err != nil || end != 0 {
			t.Errorf("%s: End of an empty stream %d, %v; want 0", name, end, err)
		}
	}

	seq := fx.publish("w1", "!r:hs", "@a:hs")
	fx.notice("w1", seq)
	ack, err := fx.js.Publish(ctx, fx.topo.UserStreamSubject(schemas.StreamTyping, "!r:hs"), []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]uint64{"events": seq, "typing": ack.Sequence} {
		f := feeds[name]
		end, err := f.End(ctx)
		if err != nil || end != want {
			t.Fatalf("%s: End %d, %v; want %d", name, end, err, want)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		f.WaitPosition(wctx, end)
		cancel()
		if f.Position() < end {
			t.Errorf("%s: the feed stays at %d, before End %d", name, f.Position(), end)
		}
	}
}
