package streams

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ganglionhq/ganglion/schemas"
)

// ReadLog reads the EVENTS log in order, from sequence from up to the last sequence it
// holds when ReadLog is called, and hands the messages to fn in chunks of at most
// chunk. Messages whose writer keep refuses are skipped without being decoded. It is
// how a writer recovers and how projections are rebuilt from the log.
func ReadLog(ctx context.Context, js jetstream.JetStream, topo Topology, from uint64, chunk int,
	keep func(writer string) bool, fn func([]schemas.LogMessage) error) error {
	stream, err := js.Stream(ctx, topo.EventsStream())
	if err != nil {
		return err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return err
	}
	last := info.State.LastSeq
	from = max(from, info.State.FirstSeq)
	if last < from || last == 0 {
		return nil
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   from,
	})
	if err != nil {
		return err
	}
	for seq := from - 1; seq < last; {
		// Waiting for a full chunk would only delay the last one: everything up to
		// last is stored, so a short wait per fetch is enough.
		msgs, err := cons.Fetch(min(chunk, int(last-seq)), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return err
		}
		var out []schemas.LogMessage
		received := 0
		for m := range msgs.Messages() {
			received++
			meta, err := m.Metadata()
			if err != nil {
				return err
			}
			seq = meta.Sequence.Stream
			writer := m.Headers().Get(HeaderWriter)
			if seq > last || !keep(writer) {
				continue
			}
			b, err := schemas.DecodeLogBatch(m.Data())
			if err != nil {
				return fmt.Errorf("log message %d: %w", seq, err)
			}
			out = append(out, schemas.LogMessage{Seq: seq, Writer: writer, Batch: b})
		}
		if err := msgs.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return err
		}
		if received == 0 {
			// Nothing more within the wait: the rest up to last was deleted.
			return nil
		}
		if len(out) > 0 {
			if err := fn(out); err != nil {
				return err
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}
