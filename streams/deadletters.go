package streams

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DeadLetter is a message a consumer gave up on, as its dead-letter stream keeps it.
type DeadLetter struct {
	// Seq is its sequence in the dead-letter stream.
	Seq uint64
	// Where it came from, how often it was tried and why it last failed.
	Stream, Subject, Consumer, Deliveries, Error string
	Msg                                          *jetstream.RawStreamMsg
}

// DeadLetters returns up to limit dead letters of stream, oldest first.
func DeadLetters(ctx context.Context, js jetstream.JetStream, stream string, limit int) ([]DeadLetter, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []DeadLetter
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && len(out) < limit && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // already redelivered
		}
		if err != nil {
			return nil, err
		}
		out = append(out, DeadLetter{
			Seq: seq, Stream: m.Header.Get(HeaderDLQStream), Subject: m.Header.Get(HeaderDLQSubject),
			Consumer: m.Header.Get(HeaderDLQConsumer), Deliveries: m.Header.Get(HeaderDLQDeliveries),
			Error: m.Header.Get(HeaderDLQError), Msg: m,
		})
	}
	return out, nil
}

// Redeliver publishes dead letter seq of stream again to its original subject, with
// its original body and application headers, and then removes it from the dead-letter
// stream: the operator's retry once the cause is fixed.
func Redeliver(ctx context.Context, js jetstream.JetStream, stream string, seq uint64) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	m, err := s.GetMsg(ctx, seq)
	if err != nil {
		return fmt.Errorf("dead letter %d: %w", seq, err)
	}
	subject := m.Header.Get(HeaderDLQSubject)
	if subject == "" {
		return fmt.Errorf("dead letter %d: no %s header", seq, HeaderDLQSubject)
	}
	h := nats.Header{}
	for k, v := range m.Header {
		if strings.HasPrefix(k, "Ganglion-Dlq-") || strings.HasPrefix(strings.ToLower(k), "nats-") {
			continue
		}
		h[k] = v
	}
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: h, Data: m.Data}); err != nil {
		return fmt.Errorf("dead letter %d: republish to %s: %w", seq, subject, err)
	}
	return s.DeleteMsg(ctx, seq)
}
