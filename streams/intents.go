package streams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/schemas"
)

// ReplyHeader carries the core NATS subject where the persister answers an intent.
const ReplyHeader = "Ganglion-Reply"

// intentTimeout bounds the wait for a persister's answer.
const intentTimeout = 30 * time.Second

// ErrIntentTimeout is returned when no persister answered within intentTimeout.
var ErrIntentTimeout = errors.New("intent: no answer from the event writer in time")

// Waiters matches persister answers to the requests waiting for them. One value is
// shared by the gateway and the persister of a process, so an answer the process can
// give itself skips the network hop.
type Waiters struct {
	mu      sync.Mutex
	pending map[string][]chan *schemas.IntentResult
}

// Register returns a channel receiving the answer to intent id, and a function that
// stops waiting. Several requests may wait for the same id (client retries).
func (w *Waiters) Register(id string) (<-chan *schemas.IntentResult, func()) {
	ch := make(chan *schemas.IntentResult, 1)
	w.mu.Lock()
	if w.pending == nil {
		w.pending = make(map[string][]chan *schemas.IntentResult)
	}
	w.pending[id] = append(w.pending[id], ch)
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		list := w.pending[id]
		for i, c := range list {
			if c == ch {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(w.pending, id)
		} else {
			w.pending[id] = list
		}
	}
}

// Deliver hands res to everyone waiting for id and reports whether anyone was.
func (w *Waiters) Deliver(id string, res *schemas.IntentResult) bool {
	w.mu.Lock()
	list := w.pending[id]
	delete(w.pending, id)
	w.mu.Unlock()
	for _, ch := range list {
		ch <- res
	}
	return len(list) > 0
}

// IntentClient publishes intents to the shard subject of their room and waits for the
// answer. It implements the gateway's IntentSubmitter.
type IntentClient struct {
	Topology Topology
	JS       jetstream.JetStream
	NC       *nats.Conn
	// Writers is stream_writers.events in configuration order.
	Writers []string
	Waiters *Waiters
	Log     *zap.Logger

	once  sync.Once
	inbox string
	err   error
}

// start subscribes once to this process's reply inbox.
func (c *IntentClient) start() error {
	c.once.Do(func() {
		c.inbox = c.NC.NewRespInbox()
		_, c.err = c.NC.Subscribe(c.inbox, func(m *nats.Msg) {
			var r struct {
				ID     string                `json:"id"`
				Result *schemas.IntentResult `json:"result"`
			}
			if err := json.Unmarshal(m.Data, &r); err != nil || r.Result == nil {
				c.Log.Warn("malformed intent reply", zap.Error(err))
				return
			}
			c.Waiters.Deliver(r.ID, r.Result)
		})
	})
	return c.err
}

// Submit publishes in and waits for the persister's answer.
func (c *IntentClient) Submit(ctx context.Context, in *schemas.Intent) (*schemas.IntentResult, error) {
	if err := c.start(); err != nil {
		return nil, fmt.Errorf("intent reply inbox: %w", err)
	}
	data, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	ch, cancel := c.Waiters.Register(in.ID)
	defer cancel()
	ctx, stop := context.WithTimeout(ctx, intentTimeout)
	defer stop()

	msg := nats.NewMsg(c.Topology.IntentSubject(ShardOwner(in.RoomID, c.Writers)))
	msg.Data = data
	msg.Header.Set(ReplyHeader, c.inbox)
	// No JetStream message id: a deduplicated retry would never reach the persister,
	// so nobody would answer it. The persister deduplicates by intent id instead, and
	// answers every copy.
	if _, err := c.JS.PublishMsg(ctx, msg); err != nil {
		return nil, fmt.Errorf("publish intent: %w", err)
	}
	select {
	case res := <-ch:
		return res, nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, ErrIntentTimeout
		}
		return nil, ctx.Err()
	}
}

// Reply answers an intent: in process when the gateway waits here, else over core NATS
// to the subject the gateway named.
func Reply(nc *nats.Conn, w *Waiters, replyTo, id string, res *schemas.IntentResult) error {
	if w != nil && w.Deliver(id, res) {
		return nil
	}
	if replyTo == "" {
		return nil
	}
	data, err := json.Marshal(struct {
		ID     string                `json:"id"`
		Result *schemas.IntentResult `json:"result"`
	}{id, res})
	if err != nil {
		return err
	}
	return nc.Publish(replyTo, data)
}
