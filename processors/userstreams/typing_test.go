package userstreams

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ganglionhq/ganglion/processors/syncfeed"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// typingView follows the typing stream as a sync process does: through a sync feed
// that hands it every record.
type typingView struct {
	mu    sync.Mutex
	rooms map[string][]string
	seqs  []uint64
}

func (fx *fixture) followTyping() *typingView {
	fx.t.Helper()
	v := &typingView{rooms: map[string][]string{}}
	feed, err := syncfeed.New(context.Background(), syncfeed.Config{JS: fx.env.JS, NC: fx.env.NC, Topology: fx.env.Topology,
		DB: fx.db, Stream: schemas.StreamTyping, Observe: func(seq uint64, _ nats.Header, data []byte) {
			r, err := schemas.DecodeTyping(data)
			if err != nil {
				fx.t.Errorf("typing record %d: %v", seq, err)
				return
			}
			v.mu.Lock()
			defer v.mu.Unlock()
			v.rooms[r.Room] = r.Users
			v.seqs = append(v.seqs, seq)
		}})
	if err != nil {
		fx.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = feed.Run(ctx) }()
	fx.t.Cleanup(func() { cancel(); <-done })
	return v
}

// records is how many records the view has seen.
func (v *typingView) records() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.seqs)
}

// waitTypers waits until the view shows exactly want typing in room.
func (fx *fixture) waitTypers(v *typingView, room string, want ...string) {
	fx.t.Helper()
	eventually(fx.t, fmt.Sprintf("%s typers %v", room, want), func() bool {
		v.mu.Lock()
		defer v.mu.Unlock()
		got, ok := v.rooms[room]
		return ok && slices.Equal(got, want) || len(want) == 0 && ok && len(got) == 0
	})
}

func typing(on bool, timeout time.Duration) TypingSet {
	return TypingSet{Typing: on, TimeoutMS: timeout.Milliseconds()}
}

// TestTypingStartStopExpire: a start or a stop appends the room's whole list, a start
// of someone already typing only moves their expiry, and a typer whose timeout passes
// is dropped with a record of their own.
func TestTypingStartStopExpire(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, map[string][]string{schemas.StreamTyping: {"master"}})
	st := &Typing{}
	fx.runWriter("master", st)
	v := fx.followTyping()
	const room, alice, bob = "!room:t", "@alice:t", "@bob:t"
	set := func(user string, body TypingSet) uint64 {
		return fx.write(schemas.StreamTyping, OpTypingSet, room, user, body).Seq
	}

	if set(alice, typing(true, time.Minute)) == 0 {
		t.Fatal("a start appended nothing")
	}
	fx.waitTypers(v, room, alice)
	first := set(bob, typing(true, time.Minute))
	fx.waitTypers(v, room, alice, bob)
	if seq := set(alice, typing(true, time.Minute)); seq != 0 {
		t.Errorf("a start of someone typing appended record %d", seq)
	}
	set(alice, typing(false, 0))
	fx.waitTypers(v, room, bob)
	if seq := set(alice, typing(false, 0)); seq != 0 {
		t.Errorf("a stop of someone not typing appended record %d", seq)
	}
	records := v.records()

	// Bob's start again shortens his timeout: he is dropped when it passes.
	set(bob, typing(true, 200*time.Millisecond))
	start := time.Now()
	fx.waitTypers(v, room)
	if took := time.Since(start); took < 150*time.Millisecond || took > 5*time.Second {
		t.Errorf("bob's 200 ms typing expired after %v", took)
	}
	if n := v.records(); n != records+1 {
		t.Errorf("%d records after the expiry, want %d", n, records+1)
	}

	// A write handled again (a gateway resending it) is answered with its first record.
	again := fx.writeID("resent", schemas.StreamTyping, OpTypingSet, room, alice, typing(true, time.Minute)).Seq
	if resent := fx.writeID("resent", schemas.StreamTyping, OpTypingSet, room, alice, typing(true, time.Minute)).Seq; resent != again || again <= first {
		t.Errorf("a resent start was answered %d, first %d (bob's start %d)", resent, again, first)
	}

	// Synapse's replication row: the room's whole list.
	row, err := schemas.EncodeJSON(st.Row(streams.RawMessage{Data: st.record(room).Data}))
	if err != nil || string(row) != `["!room:t",["@alice:t"]]` {
		t.Errorf("row %s, %v", row, err)
	}
}

// TestTypingRestoredAfterWriterRestart: a writer that starts finds the typers a previous
// writer left in the stream and expires them, so nobody stays typing forever.
func TestTypingRestoredAfterWriterRestart(t *testing.T) {
	restoredTimeout = 300 * time.Millisecond
	t.Cleanup(func() { restoredTimeout = TypingDefaultTimeout })
	fx := newFixture(t, map[string][]string{schemas.StreamTyping: {"master"}})
	_, stop := fx.runWriter("master", &Typing{})
	v := fx.followTyping()
	const room, alice = "!room:t", "@alice:t"
	fx.write(schemas.StreamTyping, OpTypingSet, room, alice, typing(true, 2*time.Minute))
	fx.waitTypers(v, room, alice)
	stop()

	fx.runWriter("master", &Typing{})
	fx.waitTypers(v, room)
}

// TestTypingStreamLost: a NATS restart loses the memory stream. The writer makes it
// again past every position the lost one gave out, so followers and sync tokens go on
// without skipping anything.
func TestTypingStreamLost(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, map[string][]string{schemas.StreamTyping: {"master"}})
	fx.runWriter("master", &Typing{})
	v := fx.followTyping()
	const room, alice, bob = "!room:t", "@alice:t", "@bob:t"
	before := fx.write(schemas.StreamTyping, OpTypingSet, room, alice, typing(true, time.Minute)).Seq
	fx.waitTypers(v, room, alice)

	if err := fx.env.JS.DeleteStream(context.Background(), fx.env.Topology.UserStreamName(schemas.StreamTyping)); err != nil {
		t.Fatal(err)
	}
	after := fx.write(schemas.StreamTyping, OpTypingSet, room, bob, typing(true, time.Minute)).Seq
	if after <= before {
		t.Errorf("the stream made again counts from %d, behind %d", after, before)
	}
	fx.waitTypers(v, room, alice, bob)
}

// TestTypingStopsOnLeave: a typer who leaves the room (or is kicked or banned) stops
// typing at once, as in Synapse; a profile change (a join after a join) does not stop
// anyone.
func TestTypingStopsOnLeave(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, map[string][]string{schemas.StreamTyping: {"master"}})
	fx.runWriter("master", &Typing{})
	v := fx.followTyping()
	const room, alice, bob = "!room:t", "@alice:t", "@bob:t"
	fx.write(schemas.StreamTyping, OpTypingSet, room, alice, typing(true, time.Minute))
	fx.write(schemas.StreamTyping, OpTypingSet, room, bob, typing(true, time.Minute))
	fx.waitTypers(v, room, alice, bob)

	member := func(user, membership string) schemas.LoggedEvent {
		raw, _ := json.Marshal(map[string]any{"type": "m.room.member", "state_key": user, "sender": user,
			"content": map[string]any{"membership": membership}})
		return schemas.LoggedEvent{EventID: "$" + user + membership, JSON: raw}
	}
	appendLog := func(evs ...schemas.LoggedEvent) {
		batch, _ := json.Marshal(schemas.LogBatch{V: schemas.LogVersion, RoomID: room, RoomVersion: "11", Writer: "master", Events: evs})
		msg := nats.NewMsg(fx.env.Topology.EventSubject(room))
		msg.Data = batch
		msg.Header.Set(streams.HeaderWriter, "master")
		msg.Header.Set(streams.HeaderRoom, room)
		var members []string
		for _, ev := range evs {
			var e struct {
				StateKey string `json:"state_key"`
			}
			_ = json.Unmarshal(ev.JSON, &e)
			members = append(members, e.StateKey)
		}
		msg.Header.Set(streams.HeaderMembers, strings.Join(members, " "))
		if _, err := fx.env.JS.PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
	}
	appendLog(member(bob, "join"), member(alice, "join"), member(alice, "leave"))
	fx.waitTypers(v, room, bob)
	appendLog(member(bob, "ban"))
	fx.waitTypers(v, room)
}
