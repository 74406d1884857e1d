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

// publishAttemptTimeout bounds one publish of an intent. A publish lost while NATS
// restarts (sent to a server that went away, or to one whose JetStream is not up yet)
// would otherwise hold the request until intentTimeout; past this it is sent again.
const publishAttemptTimeout = 2 * time.Second

// republishPause is the wait between failed publishes of an intent, cut short when the
// connection comes back.
const republishPause = 200 * time.Millisecond

// ErrIntentTooLarge is returned for an intent larger than a NATS message may be.
var ErrIntentTooLarge = errors.New("intent: larger than the bus carries")

// ErrIntentTimeout is returned when no persister answered within intentTimeout.
var ErrIntentTimeout = errors.New("intent: no answer from the event writer in time")

// Waiters matches persister answers to the requests waiting for them. One value is
// shared by the gateway and the persister of a process, so an answer the process can
// give itself skips the network hop.
type Waiters struct {
	mu      sync.Mutex
	pending map[string][]chan *schemas.IntentResult
	// inbox is the reply subject of this process's IntentClient, once it has one.
	inbox string
	// intakes are the writers of this process, by intent subject (Intake).
	intakes map[string]chan jetstream.Msg
}

func (w *Waiters) setInbox(inbox string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.inbox = inbox
}

func (w *Waiters) ownInbox() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.inbox
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

// Shards is the list of event writers rooms are sharded over (ShardMap, StaticShards).
type Shards interface{ Writers() []string }

// IntentClient publishes intents to the shard subject of their room and waits for the
// answer. It implements the gateway's IntentSubmitter.
type IntentClient struct {
	Topology Topology
	JS       jetstream.JetStream
	NC       *nats.Conn
	// Shards gives the event writers in sharding order: the live ShardMap, or
	// StaticShards.
	Shards Shards
	// StreamWriters are the writers of each per-user stream, in configuration order.
	StreamWriters map[string][]string
	Waiters       *Waiters
	Log           *zap.Logger

	once  sync.Once
	inbox string
	err   error

	mu sync.Mutex
	// reconnected is closed, and replaced, whenever the connection comes back.
	reconnected chan struct{}
}

// start subscribes once to this process's reply inbox, and follows reconnections.
func (c *IntentClient) start() error {
	c.once.Do(func() {
		c.inbox = c.NC.NewRespInbox()
		c.Waiters.setInbox(c.inbox)
		c.reconnected = make(chan struct{})
		back := c.NC.StatusChanged(nats.CONNECTED)
		go func() {
			for range back {
				c.mu.Lock()
				close(c.reconnected)
				c.reconnected = make(chan struct{})
				c.mu.Unlock()
			}
		}()
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

// nextReconnect returns a channel closed when the connection next comes back.
func (c *IntentClient) nextReconnect() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reconnected
}

// Submit publishes in to the writer of its room and waits for the answer.
func (c *IntentClient) Submit(ctx context.Context, in *schemas.Intent) (*schemas.IntentResult, error) {
	data, err := schemas.Marshal(in)
	if err != nil {
		return nil, err
	}
	owner := ShardOwner(in.RoomID, c.Shards.Writers())
	intentsSent.WithLabelValues(schemas.StreamEvents, owner).Inc()
	return c.send(ctx, c.Topology.IntentSubject(owner), in.ID, data)
}

// Write publishes w to the writer of its key among StreamWriters[w.Stream] and waits
// for the answer: a per-user stream is written the way a room is.
func (c *IntentClient) Write(ctx context.Context, w *schemas.StreamWrite) (*schemas.IntentResult, error) {
	writers := c.StreamWriters[w.Stream]
	if len(writers) == 0 {
		return nil, fmt.Errorf("intent: no writer configured for stream %q", w.Stream)
	}
	data, err := schemas.Marshal(w)
	if err != nil {
		return nil, err
	}
	owner := ShardOwner(w.Key, writers)
	intentsSent.WithLabelValues(w.Stream, owner).Inc()
	return c.send(ctx, c.Topology.UserStreamIntentSubject(w.Stream, owner), w.ID, data)
}

// send publishes data to subject and waits for the answer to intent id. A publish that
// fails is sent again, and so is a published intent when the connection comes back
// before its answer (which may have been lost with the connection), until
// intentTimeout: writers handle an intent id once and answer every copy.
func (c *IntentClient) send(ctx context.Context, subject, id string, data []byte) (*schemas.IntentResult, error) {
	if err := c.start(); err != nil {
		return nil, fmt.Errorf("intent reply inbox: %w", err)
	}
	ch, cancel := c.Waiters.Register(id)
	defer cancel()
	ctx, stop := context.WithTimeout(ctx, intentTimeout)
	defer stop()

	timedOut := func(err error) error {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return ErrIntentTimeout
		}
		return err
	}
	if c.Waiters.handOver(subject, &localMsg{subject: subject, data: data,
		header: nats.Header{ReplyHeader: []string{c.inbox}}, publish: c.publish}) {
		select {
		case res := <-ch:
			return res, nil
		case <-ctx.Done():
			return nil, timedOut(ctx.Err())
		}
	}
	for {
		reconnected := c.nextReconnect()
		if err := c.publish(ctx, subject, data); err != nil {
			if errors.Is(err, nats.ErrMaxPayload) {
				// Headers included, larger than a NATS message may be: no resend fits.
				return nil, fmt.Errorf("%w: %d bytes", ErrIntentTooLarge, len(data))
			}
			if ctx.Err() != nil {
				return nil, timedOut(fmt.Errorf("publish intent: %w", err))
			}
			c.Log.Debug("intent publish failed; sending again", zap.String("intent_id", id), zap.Error(err))
			select {
			case <-time.After(republishPause):
			case <-reconnected:
			case <-ctx.Done():
				return nil, timedOut(ctx.Err())
			}
			continue
		}
		select {
		case res := <-ch:
			return res, nil
		case <-reconnected:
			c.Log.Debug("NATS reconnected while waiting for an answer; sending the intent again", zap.String("intent_id", id))
		case <-ctx.Done():
			return nil, timedOut(ctx.Err())
		}
	}
}

// publish sends one copy of an intent and waits, at most publishAttemptTimeout, for
// JetStream to store it.
func (c *IntentClient) publish(ctx context.Context, subject string, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, publishAttemptTimeout)
	defer cancel()
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(ReplyHeader, c.inbox)
	// No JetStream message id: a deduplicated retry would never reach the persister,
	// so nobody would answer it. The persister deduplicates by intent id instead, and
	// answers every copy.
	_, err := c.JS.PublishMsg(ctx, msg)
	return err
}

// Reply answers an intent: in process to whoever waits here, and over core NATS to the
// subject the copy named when that is another process's inbox (a client retrying
// through another gateway may wait there for the same intent id).
func Reply(nc *nats.Conn, w *Waiters, replyTo, id string, res *schemas.IntentResult) error {
	own := ""
	if w != nil {
		w.Deliver(id, res)
		own = w.ownInbox()
	}
	if replyTo == "" || replyTo == own {
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
