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

// LogRange says which messages of the EVENTS log ReadLog reads.
type LogRange struct {
	// From is the first sequence to read (default 1).
	From uint64
	// Room limits the read to one room's subject; empty reads every room.
	Room string
	// Writer limits the read to the messages that writer appended; the others are
	// passed over by their headers, their bodies never fetched.
	Writer string
	// Chunk bounds the messages handed to fn at once (default 256).
	Chunk int
}

// readerOpenTimeout bounds the making of a read's consumer: past it, the read fails
// and its caller tries again later, rather than wait on a disturbed bus.
const readerOpenTimeout = 5 * time.Second

// fetchWait is how long a fetch first waits for messages that are known to be stored,
// once one that did not wait came back empty; each further empty fetch doubles it, up
// to maxFetchWait.
var fetchWait = time.Second

const maxFetchWait = 10 * time.Second

// fetch takes up to n messages of c: what the server has right away, or with wait,
// what comes within it (tests slow it down, or lose the consumer).
var fetch = func(c jetstream.Consumer, n int, wait time.Duration) (jetstream.MessageBatch, error) {
	if wait == 0 {
		return c.FetchNoWait(n)
	}
	return c.Fetch(n, jetstream.FetchMaxWait(wait))
}

// ReadLog reads the EVENTS log in order, from r.From up to the last sequence the range
// holds when ReadLog is called, and hands the messages to fn in chunks. It returns
// that last sequence: every message of the range up to it was read. It reads to the end
// however slowly messages arrive; a fetch that comes back empty only ends the read once
// the stream confirms that nothing of the range is left up to the end (deleted
// messages). It is how a writer recovers and catches a room up, and how projections
// are rebuilt from the log.
func ReadLog(ctx context.Context, js jetstream.JetStream, topo Topology, r LogRange, fn func([]schemas.LogMessage) error) (uint64, error) {
	subject, lastOfSubject := topo.EventsWildcard(), false
	if r.Room != "" {
		subject, lastOfSubject = topo.EventSubject(r.Room), true
	}
	return ReadStream(ctx, js, topo.EventsStream(), subject, lastOfSubject, r, func(raw []RawMessage) error {
		out := make([]schemas.LogMessage, len(raw))
		for i, m := range raw {
			b, err := schemas.DecodeLogBatch(m.Data)
			if err != nil {
				return fmt.Errorf("log message %d: %w", m.Seq, err)
			}
			out[i] = schemas.LogMessage{Seq: m.Seq, Writer: m.Writer, Batch: b}
		}
		return fn(out)
	})
}

// RawMessage is one message of a stream as ReadStream hands it over.
type RawMessage struct {
	Seq    uint64
	Writer string
	Header nats.Header
	Data   []byte
}

// ReadStream is ReadLog for any stream: it reads the messages of stream on subject (a
// wildcard or one subject) from r.From up to the stream's last sequence, or, when
// lastOfSubject, up to the subject's last message, with r's writer filter and chunks.
// r.Room is not used.
func ReadStream(ctx context.Context, js jetstream.JetStream, streamName, subject string, lastOfSubject bool, r LogRange, fn func([]RawMessage) error) (uint64, error) {
	stream, err := js.Stream(ctx, streamName)
	if err != nil {
		return 0, err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	last := info.State.LastSeq
	if lastOfSubject {
		m, err := stream.GetLastMsgForSubject(ctx, subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return last, nil
		}
		if err != nil {
			return 0, err
		}
		last = m.Sequence
	}
	from := max(r.From, info.State.FirstSeq, 1)
	if last < from {
		return last, nil
	}
	chunk := r.Chunk
	if chunk <= 0 {
		chunk = 256
	}
	// The read is one ephemeral consumer, kept across fetches, not an ordered consumer:
	// that one makes a new server-side consumer at every fetch, and, when the bus is
	// disturbed, retries making it for as long as it takes (a writer's room catch-up
	// stalled 34 s behind it when a NATS node was killed). Here a consumer is made
	// again only when it seems lost, within the caller's time.
	var cons jetstream.Consumer
	// consumerSeq is the consumer's sequence of the last message received: a jump
	// means messages lost on the way, read again from a new consumer.
	var consumerSeq uint64
	// The server would keep an ephemeral consumer after its last use; a writer may
	// catch rooms up often, so each read removes its own.
	drop := func() {
		if cons == nil {
			return
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = stream.DeleteConsumer(dctx, cons.CachedInfo().Name)
		cons = nil
	}
	open := func(start uint64) error {
		drop()
		octx, cancel := context.WithTimeout(ctx, readerOpenTimeout)
		defer cancel()
		c, err := stream.CreateConsumer(octx, jetstream.ConsumerConfig{
			FilterSubjects:    []string{subject},
			DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:       start,
			AckPolicy:         jetstream.AckNonePolicy,
			HeadersOnly:       r.Writer != "",
			InactiveThreshold: time.Minute,
			Replicas:          1,
			MemoryStorage:     true,
		})
		if err != nil {
			return fmt.Errorf("streams: reading %s: %w", streamName, err)
		}
		cons, consumerSeq = c, 0
		return nil
	}
	if err := open(from); err != nil {
		return 0, err
	}
	defer drop()
	// Everything up to last is stored, so a fetch takes what the server has at once;
	// only when that comes back empty while more is stored does the next one wait.
	var wait time.Duration
	for seq := from - 1; seq < last; {
		n := min(chunk, int(min(last-seq, 1<<20)))
		msgs, err := fetch(cons, n, wait)
		if err != nil {
			return 0, err
		}
		var out []RawMessage
		received := 0
		lost := false
		for m := range msgs.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				return 0, err
			}
			if lost = meta.Sequence.Consumer != consumerSeq+1; lost {
				break // what follows comes again from a new consumer
			}
			received++
			consumerSeq = meta.Sequence.Consumer
			seq = meta.Sequence.Stream
			writer := m.Headers().Get(HeaderWriter)
			if seq > last || (r.Writer != "" && writer != r.Writer) {
				continue
			}
			data := m.Data()
			if r.Writer != "" {
				raw, err := stream.GetMsg(ctx, seq)
				if err != nil {
					return 0, fmt.Errorf("log message %d: %w", seq, err)
				}
				data = raw.Data
			}
			out = append(out, RawMessage{Seq: seq, Writer: writer, Header: m.Headers(), Data: data})
		}
		if err := msgs.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
			return 0, err
		}
		if len(out) > 0 {
			if err := fn(out); err != nil {
				return 0, err
			}
		}
		if lost {
			if err := open(seq + 1); err != nil {
				return 0, err
			}
			continue
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if received == 0 {
			// A slow server, or the rest was deleted: only the stream can tell.
			next, err := stream.GetMsg(ctx, seq+1, jetstream.WithGetMsgSubject(subject))
			if errors.Is(err, jetstream.ErrMsgNotFound) || (err == nil && next.Sequence > last) {
				return last, nil
			}
			if err != nil {
				return 0, err
			}
			// More is stored: wait for it, longer each time it does not come. A fetch
			// that waited and still got nothing may be asking a consumer that the
			// stream's leader took with it when it moved (a NATS node lost): read on
			// from a new one.
			if wait > 0 {
				if err := open(seq + 1); err != nil {
					return 0, err
				}
			}
			wait = min(max(2*wait, fetchWait), maxFetchWait)
		} else {
			wait = 0
		}
	}
	return last, nil
}
