package streams

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// OpenDownstream opens name, a durable consumer of the whole EVENTS log for a role
// downstream of it (a pusher, an appservice sender), creating it when it does not
// exist: after stored when the role knows how far it got (the consumer was lost),
// otherwise at the log's end, since a new role serves what happens from then on.
// floor is the position the consumer has everything up to: its acknowledged floor, or
// where it was made to start less one.
func (t Topology) OpenDownstream(ctx context.Context, js jetstream.JetStream, name string, stored uint64, known bool, maxAckPending int) (cons jetstream.Consumer, floor uint64, err error) {
	cons, err = js.Consumer(ctx, t.EventsStream(), name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		info, ierr := t.EventsInfo(ctx, js)
		if ierr != nil {
			return nil, 0, ierr
		}
		start := info.State.LastSeq + 1
		if known {
			start = stored + 1
		}
		floor = start - 1
		cons, err = js.CreateConsumer(ctx, t.EventsStream(), t.DownstreamConfig(name, start, maxAckPending))
	}
	if err != nil {
		return nil, 0, fmt.Errorf("streams: consumer %s: %w", name, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("streams: consumer %s: %w", name, err)
	}
	return cons, max(floor, info.AckFloor.Stream), nil
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
