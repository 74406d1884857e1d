package streams_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
	"github.com/ganglionhq/ganglion/streams/natstest"
)

// TestEnsureConcurrently: processes that start together all ensure the topology; the
// memory stream's first sequence differs between them (it comes from the clock), and
// none of them fails for it.
func TestEnsureConcurrently(t *testing.T) {
	t.Parallel()
	c := natstest.Connect(t)
	for range 5 {
		topo := streams.Topology{Namespace: natstest.Namespace()}
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			wg.Go(func() { errs <- topo.Ensure(context.Background(), c.JS) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("concurrent Ensure: %v", err)
			}
		}
	}
}

// TestMemoryStreamStartsAtTheClock: a memory stream made again after a NATS restart
// lost it starts past every position the lost one gave out.
func TestMemoryStreamStartsAtTheClock(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	ctx := context.Background()
	name := env.Topology.UserStreamName(schemas.StreamTyping)
	ack, err := env.JS.Publish(ctx, env.Topology.UserStreamSubject(schemas.StreamTyping, "!r:h"), []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Sequence < uint64(time.Now().Add(-time.Hour).UnixMicro()) {
		t.Fatalf("the typing stream's first record is at %d: not past the clock", ack.Sequence)
	}
	if err := env.JS.DeleteStream(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := env.Topology.EnsureUserStream(ctx, env.JS, schemas.StreamTyping); err != nil {
		t.Fatal(err)
	}
	again, err := env.JS.Publish(ctx, env.Topology.UserStreamSubject(schemas.StreamTyping, "!r:h"), []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	if again.Sequence <= ack.Sequence {
		t.Errorf("the stream made again counts from %d, behind %d", again.Sequence, ack.Sequence)
	}
}
