package streams

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamStatus is what an operator sees of one JetStream stream of the deployment.
type StreamStatus struct {
	Name              string
	Messages, Bytes   uint64
	FirstSeq, LastSeq uint64
	Replicas          int
	Leader            string
	Consumers         []ConsumerStatus
}

// ConsumerStatus is what an operator sees of one durable consumer. Lag is how many of
// the stream's messages lie after its acknowledgement floor (the messages it has not
// finished, whatever its filter: an upper bound).
type ConsumerStatus struct {
	Name                    string
	Pending                 uint64
	AckPending, Redelivered int
	AckFloor, Lag           uint64
}

// Status reads every stream of the topology's namespace and its durable consumers, by
// name.
func Status(ctx context.Context, js jetstream.JetStream, topo Topology) ([]StreamStatus, error) {
	prefix := topo.streamName("")
	var out []StreamStatus
	names := js.StreamNames(ctx)
	for name := range names.Name() {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		stream, err := js.Stream(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("streams: status of %s: %w", name, err)
		}
		info, err := stream.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("streams: status of %s: %w", name, err)
		}
		st := StreamStatus{Name: name, Messages: info.State.Msgs, Bytes: info.State.Bytes, FirstSeq: info.State.FirstSeq,
			LastSeq: info.State.LastSeq, Replicas: info.Config.Replicas}
		if info.Cluster != nil {
			st.Leader = info.Cluster.Leader
		}
		consumers := stream.ListConsumers(ctx)
		for c := range consumers.Info() {
			if c.Config.Durable == "" {
				continue // an ordered consumer of a sync feed: a reader, with no position to keep
			}
			cs := ConsumerStatus{Name: c.Name, Pending: c.NumPending, AckPending: c.NumAckPending, Redelivered: c.NumRedelivered,
				AckFloor: c.AckFloor.Stream}
			if st.LastSeq > cs.AckFloor {
				cs.Lag = st.LastSeq - cs.AckFloor
			}
			st.Consumers = append(st.Consumers, cs)
		}
		if err := consumers.Err(); err != nil {
			return nil, fmt.Errorf("streams: consumers of %s: %w", name, err)
		}
		slices.SortFunc(st.Consumers, func(a, b ConsumerStatus) int { return strings.Compare(a.Name, b.Name) })
		out = append(out, st)
	}
	if err := names.Err(); err != nil {
		return nil, fmt.Errorf("streams: stream names: %w", err)
	}
	slices.SortFunc(out, func(a, b StreamStatus) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
