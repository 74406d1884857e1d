// Package replication publishes our stream positions and rows on Redis in
// Synapse's worker replication format, so Synapse workers and operators'
// tooling can follow Ganglion's writers. Redis is for compatibility only: the
// emitter never blocks its callers and drops what it cannot send, and because
// receivers catch up from the database whenever a POSITION shows them a gap,
// dropping rows loses nothing as long as the latest position is announced
// again once Redis is back.
package replication

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

const (
	// queueSize bounds the row batches waiting for Redis. At a few thousand
	// events per second it absorbs a hiccup of a second or so; beyond that
	// dropping and re-announcing is cheaper than buffering.
	queueSize = 4096
	// maxItemsPerTx bounds one MULTI/EXEC so a large backlog is sent in chunks.
	maxItemsPerTx = 256
	// publishTimeout bounds one transaction on a slow or vanished Redis.
	publishTimeout = 5 * time.Second
	// subscribeTimeout bounds the wait for the SUBSCRIBE confirmation.
	subscribeTimeout = 10 * time.Second
	// idleProbe is how long the subscriber waits for traffic before it pings,
	// and then for the pong before it declares the connection dead (Synapse
	// pings its Redis connections every 30 s).
	idleProbe = 30 * time.Second
	// Reconnect backoff: Synapse's subscriber retries forever with a 5 s cap.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// item is one unit of the publish queue. Its commands are formatted by the
// publisher goroutine, so callers only pay for a channel send.
type item struct {
	stream   string
	prev     int64 // last position announced for stream before this item
	token    int64
	rows     []any // RDATA rows at token, each marshalling to Synapse's row; none for a bare POSITION
	position bool  // announce POSITION prev token
	// resync is set on the first item after rows of the stream were dropped: a
	// POSITION prev prev goes first, so receivers see the gap and read the
	// missing rows from the database instead of skipping them.
	resync bool
}

// Stats counts what the emitter did.
type Stats struct {
	Published   uint64 // commands published
	DroppedRows uint64 // RDATA rows dropped because Redis was down or the queue full
}

// Emitter publishes one instance's replication traffic on one channel.
type Emitter struct {
	client   *redis.Client
	channel  string
	instance string
	log      *zap.Logger
	queue    chan item

	// wake asks the publisher to announce positions; replicate asks it to send
	// REPLICATE first (set on a new subscription).
	wake      chan struct{}
	replicate atomic.Bool
	// subscribed is true while a subscription is confirmed; positions are
	// announced only then, like Synapse which does so after SUBSCRIBE.
	subscribed atomic.Bool

	mu sync.Mutex
	// last is the position of each stream written, including rows dropped:
	// the prev of the next POSITION and the value re-announced.
	last map[string]int64
	// dirty marks streams whose rows were dropped since the last announcement.
	dirty map[string]bool
	// ready means positions were announced on the current subscription and
	// nothing failed since; until then Events drops instead of queueing,
	// since receivers ignore RDATA before a POSITION anyway.
	ready bool

	published, droppedRows atomic.Uint64
}

// New returns an emitter publishing on channel (the server_name, exactly) as
// instance, which must be unique among the deployment's Synapse and Ganglion
// processes, since receivers drop traffic carrying their own instance name. log
// is the process's logger, which names the instance already.
func New(client *redis.Client, channel, instance string, log *zap.Logger) *Emitter {
	if log == nil {
		log = zap.NewNop()
	}
	return &Emitter{
		client:   client,
		channel:  channel,
		instance: instance,
		log:      log.With(zap.String("redis_channel", channel)),
		queue:    make(chan item, queueSize),
		wake:     make(chan struct{}, 1),
		last:     map[string]int64{},
		dirty:    map[string]bool{},
	}
}

// Stats returns the counters so far.
func (e *Emitter) Stats() Stats {
	return Stats{Published: e.published.Load(), DroppedRows: e.droppedRows.Load()}
}

// Events queues the events-stream rows of one token (all written by this
// instance and already committed, since receivers read the events from the
// database): every row but the last carries "batch". It never blocks.
func (e *Emitter) Events(token int64, rows []schemas.EventRow) {
	if len(rows) == 0 {
		e.Position(schemas.StreamEvents, token)
		return
	}
	out := make([]any, len(rows))
	for i, r := range rows {
		out[i] = r
	}
	e.enqueue(item{stream: schemas.StreamEvents, token: token, rows: out})
}

// Rows queues the rows of one token of any stream written by this instance, each a
// value marshalling to that stream's Synapse row (schemas.TypingRow, ...); every row
// but the last carries "batch". It never blocks.
func (e *Emitter) Rows(stream string, token int64, rows []any) {
	if len(rows) == 0 {
		e.Position(stream, token)
		return
	}
	e.enqueue(item{stream: stream, token: token, rows: slices.Clone(rows)})
}

// Position announces that this instance wrote no rows of stream after its
// previous position up to token (POSITION prev token). A stream's first
// Position, before any rows, also declares it as written by this instance,
// so it is announced on every (re)connection and REPLICATE. It never blocks.
func (e *Emitter) Position(stream string, token int64) {
	e.enqueue(item{stream: stream, token: token, position: true})
}

func (e *Emitter) enqueue(it item) {
	e.mu.Lock()
	defer e.mu.Unlock()
	prev, known := e.last[it.stream]
	if !known {
		prev = it.token
	}
	it.prev = prev
	// Tokens only move forward; a late call must not make the next POSITION
	// claim a range it already covered.
	e.last[it.stream] = max(prev, it.token)
	if e.ready {
		it.resync = e.dirty[it.stream] && !it.position
		select {
		case e.queue <- it:
			delete(e.dirty, it.stream)
			return
		default:
		}
	}
	e.dirty[it.stream] = true
	e.droppedRows.Add(uint64(len(it.rows)))
}

// Run keeps a subscription to the channel and publishes queued traffic until
// ctx ends, reconnecting forever. On every new subscription it publishes
// REPLICATE and the position of every stream written; it answers every
// REPLICATE seen (its own included, as Synapse does) the same way.
func (e *Emitter) Run(ctx context.Context) {
	if _, err := schemas.FormatPosition(schemas.StreamEvents, e.instance, 0, 0); err != nil || e.channel == "" {
		e.log.Error("replication emitter disabled: bad channel or instance name", zap.Error(err))
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { e.publishLoop(ctx) })
	backoff := minBackoff
	for ctx.Err() == nil {
		healthy := e.session(ctx)
		if healthy {
			backoff = minBackoff
		}
		if streams.Sleep(ctx, backoff) != nil {
			break
		}
		backoff = min(backoff*2, maxBackoff)
	}
	wg.Wait()
}

// session runs one subscription until it fails; it reports whether the
// subscription had been confirmed.
func (e *Emitter) session(ctx context.Context) bool {
	ps := e.client.Subscribe(ctx, e.channel)
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer func() {
		stop()
		_ = ps.Close()
		e.subscribed.Store(false)
		e.mu.Lock()
		e.ready = false
		e.mu.Unlock()
	}()
	// Positions published before the subscription is confirmed could race
	// the REPLICATE answers they are meant to follow (Synapse PR #7427).
	msg, err := ps.ReceiveTimeout(ctx, subscribeTimeout)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn("redis subscribe failed", zap.Error(err))
		}
		return false
	}
	if sub, ok := msg.(*redis.Subscription); !ok || sub.Kind != "subscribe" {
		e.log.Warn("unexpected reply to SUBSCRIBE", zap.Any("reply", msg))
		return false
	}
	e.subscribed.Store(true)
	e.replicate.Store(true)
	e.poke()
	e.log.Info("redis replication subscribed")

	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, idleProbe)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !pinged {
				// Quiet channel: make sure the connection is still alive.
				if err := ps.Ping(ctx); err == nil {
					pinged = true
					continue
				}
			}
			if ctx.Err() == nil {
				e.log.Warn("redis subscription lost", zap.Error(err))
			}
			return true
		}
		pinged = false
		m, ok := msg.(*redis.Message)
		if !ok {
			continue
		}
		if name, _, err := schemas.ParseCommand(m.Payload); err == nil && name == schemas.CmdReplicate {
			e.poke()
		}
	}
}

// poke asks the publisher to announce positions; requests coalesce.
func (e *Emitter) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *Emitter) publishLoop(ctx context.Context) {
	var retry *time.Timer
	var retryC <-chan time.Time
	backoff := minBackoff
	for {
		var ok bool
		announce := false
		select {
		case <-ctx.Done():
			return
		case it := <-e.queue:
			ok = e.publishItems(ctx, e.takeQueued([]item{it}))
		case <-e.wake:
			announce = true
		case <-retryC:
			retryC = nil
			announce = true
		}
		if !announce && ok && len(e.queue) == 0 {
			// Rows dropped while Redis was up (a full queue) are covered
			// once the backlog is through.
			e.mu.Lock()
			announce = len(e.dirty) > 0
			e.mu.Unlock()
		}
		if !announce || !e.subscribed.Load() {
			continue
		}
		if e.announce(ctx) {
			backoff = minBackoff
			continue
		}
		// Publishing failed while subscribed: try again by ourselves, as
		// no new subscription will come to wake us.
		if retry == nil {
			retry = time.NewTimer(backoff)
		} else {
			retry.Reset(backoff)
		}
		retryC = retry.C
		backoff = min(backoff*2, maxBackoff)
	}
}

// announce publishes (REPLICATE and) POSITION last last for every stream
// written, then lets Events queue again.
func (e *Emitter) announce(ctx context.Context) bool {
	// Publish what is already queued first: those rows precede the positions
	// about to be announced, and after them receivers would ignore them.
	for len(e.queue) > 0 {
		if !e.publishItems(ctx, e.takeQueued(nil)) {
			return false
		}
	}
	var cmds []string
	if e.replicate.Swap(false) {
		cmds = append(cmds, schemas.ReplicateCommand)
	}
	e.mu.Lock()
	streams := make([]string, 0, len(e.last))
	for s := range e.last {
		streams = append(streams, s)
	}
	slices.Sort(streams)
	for _, s := range streams {
		if line, err := schemas.FormatPosition(s, e.instance, e.last[s], e.last[s]); err == nil {
			cmds = append(cmds, line)
		}
	}
	clear(e.dirty)
	e.ready = true
	e.mu.Unlock()
	if !e.publish(ctx, cmds) {
		e.replicate.Store(len(cmds) > 0 && cmds[0] == schemas.ReplicateCommand)
		e.failed(nil)
		return false
	}
	return true
}

// takeQueued appends queued items to batch, up to one transaction's worth.
// Only the publisher goroutine receives from the queue, so a non-zero length
// means the receive cannot block.
func (e *Emitter) takeQueued(batch []item) []item {
	for len(batch) < maxItemsPerTx && len(e.queue) > 0 {
		batch = append(batch, <-e.queue)
	}
	return batch
}

// publishItems publishes queued items in one transaction.
func (e *Emitter) publishItems(ctx context.Context, items []item) bool {
	if e.publish(ctx, e.itemCommands(items)) {
		return true
	}
	e.failed(items)
	return false
}

// failed handles a failed publish of items: they and everything queued
// behind them are dropped, and every stream is marked for re-announcement,
// which waits for a confirmed subscription.
func (e *Emitter) failed(items []item) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ready = false
	for s := range e.last {
		e.dirty[s] = true
	}
	for len(e.queue) > 0 {
		items = append(items, <-e.queue)
	}
	rows := 0
	for _, it := range items {
		rows += len(it.rows)
	}
	e.droppedRows.Add(uint64(rows))
}

// itemCommands formats queued items into command lines, in order.
func (e *Emitter) itemCommands(items []item) []string {
	var cmds []string
	for _, it := range items {
		if it.resync {
			if line, err := schemas.FormatPosition(it.stream, e.instance, it.prev, it.prev); err == nil {
				cmds = append(cmds, line)
			}
		}
		for i, row := range it.rows {
			line, err := schemas.FormatRDATA(it.stream, e.instance, it.token, i < len(it.rows)-1, row)
			if err != nil {
				e.log.Error("cannot format replication row", zap.String("stream", it.stream), zap.Error(err))
				continue
			}
			cmds = append(cmds, line)
		}
		if it.position {
			if line, err := schemas.FormatPosition(it.stream, e.instance, it.prev, it.token); err == nil {
				cmds = append(cmds, line)
			}
		}
	}
	return cmds
}

// publish sends cmds in one MULTI/EXEC: on one connection, with no other
// client's command in between, so a batch of RDATA rows reaches every
// receiver contiguously (they buffer batches per stream, not per instance).
func (e *Emitter) publish(ctx context.Context, cmds []string) bool {
	if len(cmds) == 0 {
		return true
	}
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	_, err := e.client.TxPipelined(pctx, func(p redis.Pipeliner) error {
		for _, c := range cmds {
			p.Publish(pctx, e.channel, c)
		}
		return nil
	})
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn("redis publish failed; dropping and re-announcing later",
				zap.Int("commands", len(cmds)), zap.Error(err))
		}
		return false
	}
	e.published.Add(uint64(len(cmds)))
	return true
}
