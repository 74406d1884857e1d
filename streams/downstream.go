package streams

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// OpenDownstream makes name, a durable consumer of the whole EVENTS log for a role
// downstream of it (a pusher, an appservice sender), start at the log's sequence start,
// or with 0 after the log's last message (a new role serves what happens from then on),
// and returns it with the sequence it starts at. The consumer is made again at every
// start, from the position the role stored with its work: an existing one would deliver
// what an earlier run left unacknowledged only after newer messages (once its ack wait
// ran out), and these roles take the log in order.
func (t Topology) OpenDownstream(ctx context.Context, js jetstream.JetStream, name string, start uint64, maxAckPending int) (jetstream.Consumer, uint64, error) {
	if err := js.DeleteConsumer(ctx, t.EventsStream(), name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, 0, fmt.Errorf("streams: consumer %s: %w", name, err)
	}
	if start == 0 {
		info, err := t.EventsInfo(ctx, js)
		if err != nil {
			return nil, 0, err
		}
		start = info.State.LastSeq + 1
	}
	cons, err := js.CreateConsumer(ctx, t.EventsStream(), t.DownstreamConfig(name, start, maxAckPending))
	if err != nil {
		return nil, 0, fmt.Errorf("streams: consumer %s: %w", name, err)
	}
	return cons, start, nil
}

// DownstreamConfig is the configuration of name, a durable consumer of the whole EVENTS
// log from start, for a role downstream of it that settles every message explicitly
// through a Runner (which decides when to give up on one).
func (t Topology) DownstreamConfig(name string, start uint64, maxAckPending int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       name,
		FilterSubject: t.EventsWildcard(),
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   start,
		AckPolicy:     jetstream.AckExplicitPolicy,
		MaxDeliver:    -1,
		MaxAckPending: maxAckPending,
	}
}
