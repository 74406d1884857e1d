package streams_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest"

	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
	"github.com/ganglionhq/ganglion/streams/natstest"
)

// TestIntentHandedOverInProcess: with the room's writer in the gateway's process, an
// intent reaches it without the INTENTS stream; one it fails to handle comes back to it
// through the stream, as any retried intent; with no writer here, intents go through
// the stream.
func TestIntentHandedOverInProcess(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	waiters := &streams.Waiters{}
	ic := &streams.IntentClient{Topology: env.Topology, JS: env.JS, NC: env.NC, Shards: streams.StaticShards{"master"},
		Waiters: waiters, Log: zaptest.NewLogger(t)}
	stream, err := env.JS.Stream(ctx, env.Topology.IntentsStream())
	if err != nil {
		t.Fatal(err)
	}
	inStream := func() uint64 {
		t.Helper()
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}

	cons, err := env.JS.CreateOrUpdateConsumer(ctx, env.Topology.IntentsStream(), jetstream.ConsumerConfig{
		Durable: "w", FilterSubject: env.Topology.IntentSubject("master"), AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: -1})
	if err != nil {
		t.Fatal(err)
	}
	local, stopIntake := waiters.Intake(env.Topology.IntentSubject("master"), 8)
	var mu sync.Mutex
	handled := map[string][]string{} // intent id → the stream of each delivery
	runCtx, stopRunner := context.WithCancel(ctx)
	var run sync.WaitGroup
	run.Go(func() {
		r := &streams.Runner{Consumer: cons, Local: local, Backoff: func(int) time.Duration { return 10 * time.Millisecond },
			Log: zaptest.NewLogger(t)}
		_ = r.Run(runCtx, streams.PerMessage(func(_ context.Context, m jetstream.Msg) error {
			var in schemas.Intent
			if err := json.Unmarshal(m.Data(), &in); err != nil {
				return streams.Permanent(err)
			}
			meta, _ := m.Metadata()
			mu.Lock()
			handled[in.ID] = append(handled[in.ID], meta.Stream)
			first := len(handled[in.ID]) == 1
			mu.Unlock()
			if in.ID == "fails-once" && first {
				return errors.New("a passing failure")
			}
			return streams.Reply(env.NC, waiters, m.Headers().Get(streams.ReplyHeader), in.ID, &schemas.IntentResult{EventIDs: []string{"$" + in.ID}})
		}))
	})
	submit := func(id string) {
		t.Helper()
		res, err := ic.Submit(ctx, &schemas.Intent{ID: id, RoomID: "!r:x"})
		if err != nil || len(res.EventIDs) != 1 || res.EventIDs[0] != "$"+id {
			t.Fatalf("intent %s: %+v, %v", id, res, err)
		}
	}

	submit("local")
	if n := inStream(); n != 0 {
		t.Errorf("the INTENTS stream holds %d messages after an intent handed over in process", n)
	}
	submit("fails-once")
	if n := inStream(); n != 1 {
		t.Errorf("the INTENTS stream holds %d messages after a failed hand-over, want 1", n)
	}
	stopRunner()
	run.Wait()
	stopIntake()
	mu.Lock()
	want := map[string][]string{"local": {"(in process)"},
		"fails-once": {"(in process)", env.Topology.IntentsStream()}}
	for id, w := range want {
		if got := handled[id]; len(got) != len(w) || got[0] != w[0] || got[len(got)-1] != w[len(w)-1] {
			t.Errorf("deliveries of %s: %v, want %v", id, got, w)
		}
	}
	mu.Unlock()

	// No writer here any more: the intent waits in the stream for one.
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	if _, err := ic.Submit(short, &schemas.Intent{ID: "remote", RoomID: "!r:x"}); err == nil {
		t.Error("an intent with no writer running was answered")
	}
	if n := inStream(); n != 2 {
		t.Errorf("the INTENTS stream holds %d messages, want 2 (the retried one and the one no writer took)", n)
	}
}
