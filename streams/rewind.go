package streams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// RewindSubject carries rewind requests (RewindRequest) over core NATS to the processes
// running durable consumers: the Runner of the named consumer answers.
func (t Topology) RewindSubject() string { return t.ns() + ".control.rewind" }

// RewindRequest asks the Runner of Consumer to process its stream again from Seq.
type RewindRequest struct {
	Consumer string `json:"consumer"`
	Seq      uint64 `json:"seq"`
	// DryRun asks only what a rewind would do again (RewindReply.SideEffects).
	DryRun bool `json:"dry_run,omitempty"`
}

// RewindReply answers a RewindRequest.
type RewindReply struct {
	// SideEffects says what processing messages again does outside Ganglion's own
	// tables (push notifications sent, transactions to application services); empty
	// when it only rebuilds what it wrote.
	SideEffects string `json:"side_effects,omitempty"`
	// Pending is how many messages the consumer has to process after a rewind.
	Pending uint64 `json:"pending,omitempty"`
	Error   string `json:"error,omitempty"`
}

// rewind is a request the runner's loop carries out between batches.
type rewind struct {
	seq   uint64
	reply func(RewindReply)
}

// serveRewinds subscribes to the rewind subject and hands the requests for this
// runner's consumer to its loop; dry runs are answered at once.
func (r *runner) serveRewinds(ctx context.Context) (<-chan rewind, func(), error) {
	if r.Control == nil {
		return nil, func() {}, nil
	}
	ch := make(chan rewind)
	sub, err := r.Control.Subscribe(r.RewindSubject, func(m *nats.Msg) {
		var req RewindRequest
		if err := json.Unmarshal(m.Data, &req); err != nil || req.Consumer != r.Name {
			return
		}
		reply := func(rep RewindReply) {
			data, _ := json.Marshal(rep)
			_ = m.Respond(data)
		}
		if req.DryRun {
			reply(RewindReply{SideEffects: r.SideEffects})
			return
		}
		if req.Seq == 0 {
			reply(RewindReply{Error: "seq must be at least 1"})
			return
		}
		select {
		case ch <- rewind{seq: req.Seq, reply: reply}:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return nil, nil, fmt.Errorf("streams: runner %q: rewind subscription: %w", r.Name, err)
	}
	return ch, func() { _ = sub.Unsubscribe() }, nil
}

// rewindTo makes the runner's consumer again, delivering from seq, with the rest of its
// configuration: JetStream cannot move a durable consumer's start, so the consumer is
// deleted and created anew under the same name.
func (r *runner) rewindTo(ctx context.Context, seq uint64) (uint64, error) {
	info := r.Consumer.CachedInfo()
	if info == nil {
		return 0, errors.New("the consumer's configuration is unknown")
	}
	cfg := info.Config
	cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
	cfg.OptStartSeq = seq
	cfg.OptStartTime = nil
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.JS.DeleteConsumer(dctx, info.Stream, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, err
	}
	cons, err := r.JS.CreateConsumer(dctx, info.Stream, cfg)
	if err != nil {
		return 0, err
	}
	r.Consumer = cons
	return cons.CachedInfo().NumPending, nil
}

// RequestRewind sends req to the process running its consumer and returns the answer;
// ErrNoRewindResponder when no running process has that consumer.
func RequestRewind(ctx context.Context, nc *nats.Conn, t Topology, req RewindRequest) (RewindReply, error) {
	data, _ := json.Marshal(req)
	m, err := nc.RequestWithContext(ctx, t.RewindSubject(), data)
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) {
		return RewindReply{}, ErrNoRewindResponder
	}
	if err != nil {
		return RewindReply{}, err
	}
	var rep RewindReply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		return RewindReply{}, fmt.Errorf("rewind reply: %w", err)
	}
	if rep.Error != "" {
		return rep, errors.New(rep.Error)
	}
	return rep, nil
}

// ErrNoRewindResponder is RequestRewind's error when no running process answers for
// the consumer.
var ErrNoRewindResponder = errors.New("no running process answers for this consumer")

// logRewind notes a rewind.
func (r *runner) logRewind(seq, pending uint64) {
	r.log.Warn("consumer rewound: processing its stream again", zap.Uint64("from_seq", seq), zap.Uint64("pending", pending))
}

// RewindPlan finds the consumer called name on the EVENTS log and what a rewind of it
// to seq, or to the first message at or after since when seq is 0, would process again:
// the first sequence and the count of messages from it that the consumer's filter
// takes.
func RewindPlan(ctx context.Context, js jetstream.JetStream, t Topology, name string, seq uint64, since time.Time) (start, count uint64, err error) {
	stream, err := js.Stream(ctx, t.EventsStream())
	if err != nil {
		return 0, 0, err
	}
	cons, err := stream.Consumer(ctx, name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, 0, fmt.Errorf("the events log has no consumer %q (ganglion streams status lists them; only the log's consumers can be rewound)", name)
	}
	if err != nil {
		return 0, 0, err
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: cons.CachedInfo().Config.FilterSubjects,
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: seq, HeadersOnly: true}
	if f := cons.CachedInfo().Config.FilterSubject; f != "" {
		cfg.FilterSubjects = append(cfg.FilterSubjects, f)
	}
	if seq == 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, 0, &since
	}
	first, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return 0, 0, err
	}
	msg, err := first.Next(jetstream.FetchMaxWait(2 * time.Second))
	if errors.Is(err, jetstream.ErrMsgIteratorClosed) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
		return 0, 0, errors.New("the log has no message there for this consumer")
	}
	if err != nil {
		return 0, 0, err
	}
	meta, err := msg.Metadata()
	if err != nil {
		return 0, 0, err
	}
	return meta.Sequence.Stream, meta.NumPending + 1, nil
}
