package housekeeping

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap/zaptest"

	"github.com/ganglionhq/ganglion/streams"
	"github.com/ganglionhq/ganglion/streams/natstest"
)

// A pass deletes the drained, idle intent consumer of a writer taken out of the live
// list, and keeps a live writer's, one with intents waiting, and one somebody pulls
// from; it counts the dead letters.
func TestPass(t *testing.T) {
	env := natstest.Start(t)
	ctx := context.Background()
	topo := env.Topology
	consumer := func(writer string) jetstream.Consumer {
		t.Helper()
		c, err := env.JS.CreateOrUpdateConsumer(ctx, topo.IntentsStream(), jetstream.ConsumerConfig{
			Durable: topo.PersisterConsumer(writer), FilterSubject: topo.IntentSubject(writer), AckPolicy: jetstream.AckExplicitPolicy,
		})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	consumer("live")
	consumer("retired")
	consumer("waiting")
	pulled := consumer("pulled")
	if _, err := env.JS.Publish(ctx, topo.IntentSubject("waiting"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	// Somebody pulls from "pulled" (a writer started before it was made live).
	cc, err := pulled.Consume(func(jetstream.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	for range 3 {
		if _, err := env.JS.PublishMsg(ctx, &nats.Msg{Subject: topo.DeadLetterSubject("x"), Data: []byte("{}")}); err != nil {
			t.Fatal(err)
		}
	}
	// The pull request reaches the server.
	time.Sleep(200 * time.Millisecond)

	cfg := Config{JS: env.JS, Topology: topo, Shards: streams.StaticShards{"live"}, Log: zaptest.NewLogger(t), IdleFor: time.Nanosecond}
	if err := Pass(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	stream, err := env.JS.Stream(ctx, topo.IntentsStream())
	if err != nil {
		t.Fatal(err)
	}
	for writer, kept := range map[string]bool{"live": true, "retired": false, "waiting": true, "pulled": true} {
		_, err := stream.Consumer(ctx, topo.PersisterConsumer(writer))
		if gone := errors.Is(err, jetstream.ErrConsumerNotFound); gone == kept {
			t.Errorf("consumer of %s: kept %v, want %v (%v)", writer, !gone, kept, err)
		}
	}
	var m dto.Metric
	if err := deadLetters.Write(&m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetGauge().GetValue(); got != 3 {
		t.Errorf("dead letters %v, want 3", got)
	}
}
