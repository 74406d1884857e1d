package streams_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
	"github.com/ganglionhq/ganglion/streams/natstest"
)

// appendLog publishes n one-event log messages, round robin over rooms and writers,
// and returns the sequences per room and per writer.
func appendLog(t *testing.T, env *natstest.Env, n int, rooms, writers []string) (byRoom, byWriter map[string][]uint64) {
	t.Helper()
	byRoom, byWriter = map[string][]uint64{}, map[string][]uint64{}
	ctx := context.Background()
	for i := range n {
		room, writer := rooms[i%len(rooms)], writers[i%len(writers)]
		msg := nats.NewMsg(env.Topology.EventSubject(room))
		msg.Header.Set(streams.HeaderWriter, writer)
		msg.Data = fmt.Appendf(nil, `{"v":1,"room_id":%q,"room_version":"11","writer":%q,"events":[{"event_id":"$%d","json":{}}]}`, room, writer, i)
		ack, err := env.JS.PublishMsg(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		byRoom[room] = append(byRoom[room], ack.Sequence)
		byWriter[writer] = append(byWriter[writer], ack.Sequence)
	}
	return byRoom, byWriter
}

func readSeqs(t *testing.T, env *natstest.Env, r streams.LogRange) []uint64 {
	t.Helper()
	var seqs []uint64
	_, err := streams.ReadLog(context.Background(), env.JS, env.Topology, r, func(msgs []schemas.LogMessage) error {
		for _, m := range msgs {
			if m.Batch == nil || len(m.Batch.Events) != 1 {
				return fmt.Errorf("message %d read without its body", m.Seq)
			}
			seqs = append(seqs, m.Seq)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return seqs
}

func sameSeqs(t *testing.T, what string, got, want []uint64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: read %d messages, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: message %d is seq %d, want %d", what, i, got[i], want[i])
		}
	}
}

// TestReadLogReadsToTheEnd reads with fetches that come back empty, as from a busy
// server: an empty fetch must not end the read before the log's end.
func TestReadLogReadsToTheEnd(t *testing.T) {
	env := natstest.Start(t)
	rooms, writers := []string{"!a:t", "!b:t", "!c:t"}, []string{"w1", "w2"}
	byRoom, byWriter := appendLog(t, env, 1500, rooms, writers)
	defer streams.SimulateSlowServer()()
	var all []uint64
	for i := range 1500 {
		all = append(all, uint64(i+1))
	}
	sameSeqs(t, "whole log", readSeqs(t, env, streams.LogRange{Chunk: 100}), all)
	sameSeqs(t, "from 1000", readSeqs(t, env, streams.LogRange{From: 1000}), all[999:])
	sameSeqs(t, "room !b:t", readSeqs(t, env, streams.LogRange{Room: "!b:t"}), byRoom["!b:t"])
	sameSeqs(t, "writer w2", readSeqs(t, env, streams.LogRange{Writer: "w2"}), byWriter["w2"])
	sameSeqs(t, "unknown room", readSeqs(t, env, streams.LogRange{Room: "!none:t"}), nil)
	info, err := env.Topology.EventsInfo(context.Background(), env.JS)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Consumers != 0 {
		t.Errorf("%d consumers left behind by the reads", info.State.Consumers)
	}
}

// TestReadLogEndsAtDeletedMessages: messages deleted before the end (an operator's
// purge) do not keep the read waiting for them.
func TestReadLogEndsAtDeletedMessages(t *testing.T) {
	env := natstest.Start(t)
	appendLog(t, env, 10, []string{"!a:t"}, []string{"w1"})
	stream, err := env.JS.Stream(context.Background(), env.Topology.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{9, 5, 6} {
		if err := stream.DeleteMsg(context.Background(), seq); err != nil {
			t.Fatal(err)
		}
	}
	sameSeqs(t, "with a gap", readSeqs(t, env, streams.LogRange{}), []uint64{1, 2, 3, 4, 7, 8, 10})
	sameSeqs(t, "writer", readSeqs(t, env, streams.LogRange{Writer: "w1", From: 5}), []uint64{7, 8, 10})
}

// TestReadLogOutlivesItsConsumer: the consumer of a read stops answering (its stream's
// leader moved with a lost NATS node) while the stream holds more; the read goes on
// from a new consumer rather than wait on the lost one for ever longer.
func TestReadLogOutlivesItsConsumer(t *testing.T) {
	env := natstest.Start(t)
	appendLog(t, env, 100, []string{"!a:t"}, []string{"w1"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := env.JS.Stream(ctx, env.Topology.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	empty, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{env.Topology.EventSubject("!none:t")}})
	if err != nil {
		t.Fatal(err)
	}
	defer streams.SimulateLostConsumer(empty)()
	var seqs []uint64
	_, err = streams.ReadLog(ctx, env.JS, env.Topology, streams.LogRange{Chunk: 10}, func(msgs []schemas.LogMessage) error {
		for _, m := range msgs {
			seqs = append(seqs, m.Seq)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var all []uint64
	for i := range 100 {
		all = append(all, uint64(i+1))
	}
	sameSeqs(t, "read past the lost consumer", seqs, all)
}
