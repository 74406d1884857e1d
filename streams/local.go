package streams

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A writer in the same process as the gateway takes intents from memory: the
// intent's append to the INTENTS stream, its delivery and its ack cost as much CPU as
// the writer's own append, and the writer's append to the log is what makes a write
// durable (a client that got no answer retries with the same transaction id, and
// writers handle an intent id once). An intent the local writer cannot take (none
// here, its intake full, a failure to retry) goes through the INTENTS stream as
// before. ARCHITECTURE.md, "Intents handed over in process".

// Intake registers the writer of the intents sent to subject in this process: they
// arrive on the returned channel, which holds at most size of them, until the
// returned function is called; it hands back through the INTENTS stream what is left.
func (w *Waiters) Intake(subject string, size int) (<-chan jetstream.Msg, func()) {
	ch := make(chan jetstream.Msg, size)
	w.mu.Lock()
	if w.intakes == nil {
		w.intakes = map[string]chan jetstream.Msg{}
	}
	w.intakes[subject] = ch
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		if w.intakes[subject] == ch {
			delete(w.intakes, subject)
		}
		w.mu.Unlock()
		// Nothing is sent on ch any more (handOver holds the lock while it sends).
		for {
			select {
			case m := <-ch:
				_ = m.Nak()
			default:
				return
			}
		}
	}
}

// handOver gives m to the writer of subject in this process; false when there is
// none, or its intake is full.
func (w *Waiters) handOver(subject string, m jetstream.Msg) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := w.intakes[subject]
	if ch == nil {
		return false
	}
	select {
	case ch <- m:
		return true
	default:
		return false
	}
}

// localMsg is an intent handed over in process. Settling it costs nothing, except
// handing it back (Nak), which publishes it to the INTENTS stream: from there it
// is redelivered, and dead-lettered in the end, as any intent.
type localMsg struct {
	subject string
	data    []byte
	header  nats.Header
	// publish appends the intent to the INTENTS stream.
	publish func(ctx context.Context, subject string, data []byte) error
}

func (m *localMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{NumDelivered: 1, Stream: "(in process)", Timestamp: time.Now()}, nil
}
func (m *localMsg) Data() []byte                    { return m.data }
func (m *localMsg) Headers() nats.Header            { return m.header }
func (m *localMsg) Subject() string                 { return m.subject }
func (m *localMsg) Reply() string                   { return "" }
func (m *localMsg) Ack() error                      { return nil }
func (m *localMsg) DoubleAck(context.Context) error { return nil }
func (m *localMsg) InProgress() error               { return nil }
func (m *localMsg) Term() error                     { return nil }
func (m *localMsg) TermWithReason(string) error     { return nil }
func (m *localMsg) Nak() error                      { return m.NakWithDelay(0) }
func (m *localMsg) NakWithDelay(delay time.Duration) error {
	time.AfterFunc(delay, func() {
		ctx, cancel := context.WithTimeout(context.Background(), publishAttemptTimeout)
		defer cancel()
		_ = m.publish(ctx, m.subject, m.data) // the waiting client sends again when this is lost
	})
	return nil
}
