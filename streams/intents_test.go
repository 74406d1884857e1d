package streams_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest"

	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
	"github.com/ganglionhq/ganglion/streams/natstest"
)

// Two gateways (two processes) wait for the same intent id, one of them in the writer's
// process: the writer answers the copy naming the other gateway's inbox there too.
func TestReplyReachesLocalAndRemoteWaiters(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	writerProcess := &streams.Waiters{} // the writer's process, where a gateway waits too
	local, stopLocal := writerProcess.Register("intent-1")
	defer stopLocal()
	other := &streams.IntentClient{Topology: env.Topology, JS: env.JS, NC: env.NC, Shards: streams.StaticShards{"master"},
		Waiters: &streams.Waiters{}, Log: zaptest.NewLogger(t)}
	answered := make(chan error, 1)
	go func() {
		short, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := other.Submit(short, &schemas.Intent{ID: "intent-1", RoomID: "!r:x"})
		answered <- err
	}()

	// Play the writer: take the copy the other gateway published, answer it.
	cons, err := env.JS.CreateConsumer(ctx, env.Topology.IntentsStream(), jetstream.ConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var replyTo string
	for m := range msgs.Messages() {
		replyTo = m.Headers().Get(streams.ReplyHeader)
	}
	if replyTo == "" {
		t.Fatal("no intent published")
	}
	res := &schemas.IntentResult{EventIDs: []string{"$e"}}
	if err := streams.Reply(env.NC, writerProcess, replyTo, "intent-1", res); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-local:
		if got != res {
			t.Fatalf("local waiter got %+v", got)
		}
	case <-ctx.Done():
		t.Fatal("the local waiter got no answer")
	}
	if err := <-answered; err != nil {
		t.Fatalf("the other gateway got no answer: %v", err)
	}
}

// TestSubmitRefusesAnIntentTheBusCannotCarry: an intent over NATS's max_payload is
// refused at once as too large, not resent until the answer's deadline.
func TestSubmitRefusesAnIntentTheBusCannotCarry(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	ic := &streams.IntentClient{Topology: env.Topology, JS: env.JS, NC: env.NC, Shards: streams.StaticShards{"w1"},
		Waiters: &streams.Waiters{}, Log: zaptest.NewLogger(t)}
	content := []byte(`{"body":"` + strings.Repeat("<", int(env.NC.MaxPayload())) + `"}`)
	_, err := ic.Submit(context.Background(), &schemas.Intent{V: schemas.IntentVersion, Kind: schemas.KindClientEvent,
		ID: "big", RoomID: "!r:t", Sender: "@a:t", Event: &schemas.ProtoEvent{Type: "m.room.message", Content: content}})
	if !errors.Is(err, streams.ErrIntentTooLarge) {
		t.Fatalf("Submit: %v, want ErrIntentTooLarge", err)
	}
}
