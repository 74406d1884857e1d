package streams

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// BatchHandler handles one batch of messages and returns one error (or nil) per
// message, in the same order. Returning a nil slice means every message
// succeeded. Delivery is at least once, so handlers must be idempotent: a
// message is redelivered when its ack is lost, when the process dies, or when a
// batch panicked and its messages are retried one by one.
type BatchHandler func(ctx context.Context, msgs []jetstream.Msg) []error

// PerMessage adapts a handler of single messages to a BatchHandler. Messages
// are handled in order; one failing does not stop the others.
func PerMessage(h func(ctx context.Context, m jetstream.Msg) error) BatchHandler {
	return func(ctx context.Context, msgs []jetstream.Msg) []error {
		errs := make([]error, len(msgs))
		for i, m := range msgs {
			errs[i] = h(ctx, m)
		}
		return errs
	}
}

type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// Permanent marks err as not worth retrying: the message is dead-lettered at
// once instead of being redelivered. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err (or an error it wraps) was marked Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

type unavailableError struct{ err error }

func (u unavailableError) Error() string { return u.err.Error() }
func (u unavailableError) Unwrap() error { return u.err }

// Unavailable marks err as the passing failure of something the handler depends on (the
// database or the bus restarting, a deadline), not of the message: the runner keeps the
// message in progress and hands it to the handler again after a backoff, without
// counting a delivery, so an outage never dead-letters anything. Unavailable(nil) is nil.
func Unavailable(err error) error {
	if err == nil {
		return nil
	}
	return unavailableError{err}
}

// BusUnavailable reports whether err is NATS out of reach (disconnected, reconnecting,
// timing out, no responders, JetStream temporarily without a leader) rather than a
// fault of what was sent: trying again later succeeds.
func BusUnavailable(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503
	}
	for _, e := range []error{nats.ErrTimeout, nats.ErrConnectionClosed, nats.ErrDisconnected,
		nats.ErrConnectionReconnecting, nats.ErrNoResponders, nats.ErrNoServers, context.DeadlineExceeded,
		jetstream.ErrNoStreamResponse, jetstream.ErrNoHeartbeat, jetstream.ErrAsyncPublishTimeout,
		jetstream.ErrTooManyStalledMsgs} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// IsUnavailable reports whether err (or an error it wraps) was marked Unavailable.
func IsUnavailable(err error) bool {
	var u unavailableError
	return errors.As(err, &u)
}

// ErrHandlerPanic is wrapped into the error of every message whose handler panicked.
var ErrHandlerPanic = errors.New("handler panicked")

// Headers set on dead-lettered copies. The body and the application headers of
// the original are kept as they were, so a dead letter can be inspected and
// republished to its original subject as is.
const (
	HeaderDLQStream     = "Ganglion-Dlq-Stream"     // stream the message came from
	HeaderDLQSubject    = "Ganglion-Dlq-Subject"    // its original subject
	HeaderDLQSequence   = "Ganglion-Dlq-Sequence"   // its stream sequence
	HeaderDLQConsumer   = "Ganglion-Dlq-Consumer"   // the consumer that gave up on it
	HeaderDLQDeliveries = "Ganglion-Dlq-Deliveries" // how many times it was delivered
	HeaderDLQError      = "Ganglion-Dlq-Error"      // the last error, on one line
)

// Defaults used for zero fields of Runner.
const (
	DefaultMaxBatch   = 100
	DefaultMaxWait    = 30 * time.Second
	DefaultMaxDeliver = 5
)

// maxErrorHeader bounds the error text carried in a dead letter's header.
const maxErrorHeader = 1024

// DefaultBackoff is the delay before redelivering a message that failed on its
// delivery-th attempt: 1s, 2s, 4s, ... capped at one minute.
func DefaultBackoff(delivery int) time.Duration {
	if delivery < 1 {
		delivery = 1
	}
	if delivery > 7 {
		return time.Minute
	}
	return min(time.Second<<(delivery-1), time.Minute)
}

// Metrics counts what a Runner did. The zero value is ready; share one
// between runners to aggregate them.
type Metrics struct {
	processed, failed, retried, deadLettered, panics, batches, waits atomic.Uint64
}

// MetricsSnapshot is a point-in-time copy of Metrics.
type MetricsSnapshot struct {
	Processed    uint64 // messages handled successfully and acked
	Failed       uint64 // messages whose handler returned an error or panicked
	Retried      uint64 // failed messages handed back for a delayed redelivery
	DeadLettered uint64 // failed messages copied to the dead-letter subject and terminated
	Panics       uint64 // handler calls that panicked
	Batches      uint64 // handler calls
	Waits        uint64 // messages handed back to the handler in place: a dependency was unavailable
}

// Snapshot returns the current counter values.
func (m *Metrics) Snapshot() MetricsSnapshot {
	return MetricsSnapshot{
		Processed:    m.processed.Load(),
		Failed:       m.failed.Load(),
		Retried:      m.retried.Load(),
		DeadLettered: m.deadLettered.Load(),
		Panics:       m.panics.Load(),
		Batches:      m.batches.Load(),
		Waits:        m.waits.Load(),
	}
}

// Runner drives one JetStream pull consumer: it fetches batches, calls the
// handler, acks successes, redelivers failures with backoff, and moves messages
// that keep failing to a dead-letter subject so they never block the consumer.
//
// The consumer should use explicit acks, a MaxAckPending (the runner buffers that
// many), and MaxDeliver -1 (or at least Runner.MaxDeliver): the Runner
// dead-letters on the last delivery it is allowed, and when the consumer's own
// MaxDeliver is lower it uses that instead, because past it JetStream would stop
// delivering the message without anyone keeping a copy.
type Runner struct {
	// Name identifies the runner in logs; empty means the consumer's name.
	Name     string
	Consumer jetstream.Consumer
	// JS publishes dead letters; it is required when DeadLetterSubject is set.
	JS jetstream.JetStream
	// DeadLetterSubject receives copies of messages given up on, e.g.
	// Topology.DeadLetterSubject(name); a stream must capture it. Empty means no
	// copy is kept: the message is terminated and only the log line remains.
	DeadLetterSubject string
	// MaxBatch bounds the messages per handler call (default DefaultMaxBatch).
	MaxBatch int
	// MaxWait is how long an outstanding pull request lives on the server before the
	// client renews it (default DefaultMaxWait, nats.go's own default); heartbeats
	// are derived from it, so a short one makes a busy machine report missed
	// heartbeats.
	MaxWait time.Duration
	// MaxDeliver is the delivery at which a still failing message is
	// dead-lettered (default DefaultMaxDeliver).
	MaxDeliver int
	// Backoff gives the redelivery delay after a failed delivery (default DefaultBackoff).
	Backoff func(delivery int) time.Duration
	// Log defaults to a no-op logger.
	Log *zap.Logger
	// Metrics defaults to counters nobody reads.
	Metrics *Metrics
	// Local, when set, brings messages handed over in this process (Waiters.Intake)
	// beside those of the consumer, into the same batches.
	Local <-chan jetstream.Msg
	// Control, when set, lets an operator rewind the consumer while it runs (ganglion
	// consumer rewind): the runner answers RewindRequests for its consumer on
	// RewindSubject, and between batches makes the consumer again from the asked
	// sequence. Only for consumers that a role makes again at every start from its
	// own stored position (Topology.OpenDownstream): any other consumer would be
	// made with its usual start policy at the next start, refused for a rewound one.
	Control       *nats.Conn
	RewindSubject string
	// SideEffects says what processing messages again does beyond Ganglion's own
	// tables ("" for nothing): a rewind asks the operator to confirm it.
	SideEffects string
}

// runner is Runner with defaults applied, so Run never mutates its receiver.
type runner struct {
	Runner
	log  *zap.Logger
	m    *Metrics
	prom consumerMetrics
	// progressEvery is how often messages received and not yet settled are reported
	// in progress, well within the consumer's AckWait.
	progressEvery time.Duration
	// received are the messages received and not settled yet (being handled, waiting
	// in place, or buffered behind those), with when each was last reported.
	mu       sync.Mutex
	received map[jetstream.Msg]time.Time
}

// DefaultAckWait is JetStream's AckWait when a consumer sets none.
const DefaultAckWait = 30 * time.Second

// WriterAckWait is the AckWait of the writers' intent consumers, whose clients wait
// for the answers: a writer killed while it held intents has them redelivered, to its
// next run, this long after they were delivered (with JetStream's default, its
// clients waited 30 s, past their own timeouts). The runner reports the intents it
// holds in progress every third of it, so a slow batch is never redelivered.
const WriterAckWait = 5 * time.Second

// maxUnavailableBackoff caps the wait between attempts while a dependency is down.
const maxUnavailableBackoff = 5 * time.Second

// Run consumes until ctx is cancelled, then returns nil. It returns an error
// for a misconfigured Runner and when the consumer no longer exists, which no
// amount of retrying fixes; other fetch errors (a NATS reconnect, a leader
// change) are logged and retried with backoff.
//
// Acks are fire-and-forget (Ack, not AckSync): if one is lost, the message is
// redelivered after AckWait, which at-least-once handlers tolerate, and waiting
// for a round trip per message would cost more than the rare duplicate.
func (r *Runner) Run(ctx context.Context, h BatchHandler) error {
	if r.Consumer == nil {
		return errors.New("streams: Runner without a Consumer")
	}
	if h == nil {
		return errors.New("streams: Runner without a handler")
	}
	if r.DeadLetterSubject != "" && r.JS == nil {
		return fmt.Errorf("streams: Runner %q has a dead-letter subject but no JetStream to publish with", r.Name)
	}
	rr := &runner{Runner: *r, log: r.Log, m: r.Metrics, progressEvery: DefaultAckWait / 3,
		received: map[jetstream.Msg]time.Time{}}
	info := r.Consumer.CachedInfo()
	if info != nil && info.Config.AckWait > 0 {
		rr.progressEvery = info.Config.AckWait / 3
	}
	if rr.Name == "" && info != nil {
		rr.Name = info.Name
	}
	if rr.MaxBatch <= 0 {
		rr.MaxBatch = DefaultMaxBatch
	}
	if rr.MaxWait <= 0 {
		rr.MaxWait = DefaultMaxWait
	}
	if rr.MaxDeliver <= 0 {
		rr.MaxDeliver = DefaultMaxDeliver
	}
	if info != nil && info.Config.MaxDeliver > 0 && info.Config.MaxDeliver < rr.MaxDeliver {
		rr.MaxDeliver = info.Config.MaxDeliver
	}
	if rr.Backoff == nil {
		rr.Backoff = DefaultBackoff
	}
	if rr.log == nil {
		rr.log = zap.NewNop()
	}
	rr.log = rr.log.With(zap.String("runner", rr.Name))
	rr.prom = newConsumerMetrics(rr.Name)
	if rr.m == nil {
		rr.m = new(Metrics)
	}
	if rr.DeadLetterSubject == "" {
		rr.log.Warn("no dead-letter subject: messages given up on are terminated and only logged")
	}
	return rr.loop(ctx, h)
}

func (r *runner) loop(ctx context.Context, h BatchHandler) error {
	rewinds, unsubscribe, err := r.serveRewinds(ctx)
	if err != nil {
		return err
	}
	defer unsubscribe()
	// However long a batch takes (a slow database, a dependency waited for in place),
	// JetStream must not redeliver it, or what is buffered behind it, behind the
	// runner's back.
	var progress sync.WaitGroup
	progressDone := make(chan struct{})
	progress.Go(func() { r.reportProgress(progressDone) })
	defer func() { close(progressDone); progress.Wait() }()
	for {
		req, err := r.session(ctx, h, rewinds)
		if req == nil {
			return err
		}
		pending, err := r.rewindTo(ctx, req.seq)
		if err != nil {
			req.reply(RewindReply{Error: err.Error()})
			if _, ierr := r.Consumer.Info(ctx); ierr != nil {
				return fmt.Errorf("streams: runner %q: rewind: %w", r.Name, err)
			}
			r.log.Error("rewind failed; the consumer goes on where it was", zap.Error(err))
			continue
		}
		r.logRewind(req.seq, pending)
		req.reply(RewindReply{SideEffects: r.SideEffects, Pending: pending})
	}
}

// session consumes r.Consumer until ctx ends, the consumer is gone, or a rewind is
// asked for, which it returns after stopping the consumption.
func (r *runner) session(ctx context.Context, h BatchHandler, rewinds <-chan rewind) (*rewind, error) {
	// Consume keeps pull requests outstanding, so messages arrive without a round
	// trip per batch; the loop takes whatever has arrived, up to MaxBatch, as one
	// batch. Latency stays low when idle and batches grow under load.
	// The callback must never block: a message queued behind a blocked callback in
	// the client could not be tracked (below). The server never has more than
	// MaxAckPending unacknowledged messages out, so a buffer that large always has room.
	size := 2 * r.MaxBatch
	if info := r.Consumer.CachedInfo(); info != nil && info.Config.MaxAckPending > size {
		size = info.Config.MaxAckPending
	}
	buffered := make(chan jetstream.Msg, size)
	gone := make(chan error, 1)
	var stopped atomic.Bool
	cc, err := r.Consumer.Consume(func(m jetstream.Msg) {
		if stopped.Load() {
			return // a rewind replaces the consumer: what it still delivers is moot
		}
		r.track(m)
		select {
		case buffered <- m:
		case <-ctx.Done():
			_ = m.Nak()
		}
	},
		jetstream.PullMaxMessages(2*r.MaxBatch),
		jetstream.PullExpiry(r.MaxWait),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if r.consumerGone(ctx, err) {
				select {
				case gone <- err:
				default:
				}
				return
			}
			r.log.Warn("consume error; the client retries", zap.Error(err))
		}))
	if err != nil {
		return nil, fmt.Errorf("streams: runner %q: consume: %w", r.Name, err)
	}
	defer cc.Stop()
	for {
		var msgs []jetstream.Msg
		select {
		case <-ctx.Done():
			// Hand back what arrived as Run was stopping rather than let it wait
			// out AckWait.
			for {
				select {
				case m := <-buffered:
					_ = m.Nak()
				case m := <-r.Local:
					_ = m.Nak()
				default:
					return nil, nil
				}
			}
		case err := <-gone:
			return nil, fmt.Errorf("streams: runner %q: consumer gone: %w", r.Name, err)
		case req := <-rewinds:
			stopped.Store(true)
			cc.Stop()
			for {
				select {
				case m := <-buffered:
					r.untrack(m)
				default:
					return &req, nil
				}
			}
		case m := <-buffered:
			msgs = append(msgs, m)
		case m := <-r.Local:
			r.track(m)
			msgs = append(msgs, m)
		}
	fill:
		for len(msgs) < r.MaxBatch {
			select {
			case m := <-buffered:
				msgs = append(msgs, m)
			case m := <-r.Local:
				r.track(m)
				msgs = append(msgs, m)
			default:
				break fill
			}
		}
		r.handle(ctx, h, msgs)
	}
}

// consumerGone tells a deleted consumer from a passing failure.
func (r *runner) consumerGone(ctx context.Context, err error) bool {
	if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
		return true
	}
	if !errors.Is(err, jetstream.ErrNoHeartbeat) && !errors.Is(err, nats.ErrNoResponders) {
		return false
	}
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, ierr := r.Consumer.Info(ictx)
	return errors.Is(ierr, jetstream.ErrConsumerNotFound)
}

func (r *runner) handle(ctx context.Context, h BatchHandler, msgs []jetstream.Msg) {
	errs := r.callIsolated(ctx, h, msgs)
	for attempt := 0; ; attempt++ {
		var waiting []jetstream.Msg
		var last error
		for i, m := range msgs {
			if IsUnavailable(errs[i]) && ctx.Err() == nil {
				waiting, last = append(waiting, m), errs[i]
				continue
			}
			r.settle(ctx, m, errs[i])
		}
		if len(waiting) == 0 {
			return
		}
		backoff := min(100*time.Millisecond<<min(attempt, 6), maxUnavailableBackoff)
		r.m.waits.Add(uint64(len(waiting)))
		r.log.Warn("a dependency is unavailable; handling again in place", zap.Int("messages", len(waiting)),
			zap.Duration("backoff", backoff), zap.Error(last))
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		msgs = waiting
		errs = r.callIsolated(ctx, h, msgs)
	}
}

// callIsolated runs the handler on msgs and returns one error per message. A panic
// blames the whole batch, so each message is then run alone: only the culprit is
// retried and, in the end, dead-lettered; the others would otherwise share its fate.
func (r *runner) callIsolated(ctx context.Context, h BatchHandler, msgs []jetstream.Msg) []error {
	errs := r.call(ctx, h, msgs)
	if errs != nil {
		return errs
	}
	errs = make([]error, len(msgs))
	if len(msgs) == 1 {
		errs[0] = ErrHandlerPanic
		return errs
	}
	for i, m := range msgs {
		one := r.call(ctx, h, []jetstream.Msg{m})
		if one == nil {
			errs[i] = ErrHandlerPanic
		} else {
			errs[i] = one[0]
		}
	}
	return errs
}

// track notes a received message until it is settled.
func (r *runner) track(m jetstream.Msg) {
	r.mu.Lock()
	r.received[m] = time.Now()
	r.mu.Unlock()
}

// untrack forgets a received message that will not be settled.
func (r *runner) untrack(m jetstream.Msg) {
	r.mu.Lock()
	delete(r.received, m)
	r.mu.Unlock()
}

// reportProgress tells JetStream, until done is closed, that every message received
// more than progressEvery ago and not yet settled is still in progress.
func (r *runner) reportProgress(done <-chan struct{}) {
	tick := time.NewTicker(r.progressEvery / 2)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case now := <-tick.C:
			var due []jetstream.Msg
			r.mu.Lock()
			for m, at := range r.received {
				if now.Sub(at) >= r.progressEvery {
					due = append(due, m)
					r.received[m] = now
				}
			}
			r.mu.Unlock()
			for _, m := range due {
				_ = m.InProgress()
			}
		}
	}
}

// call runs the handler on msgs and returns exactly one error per message, or
// nil if it panicked.
func (r *runner) call(ctx context.Context, h BatchHandler, msgs []jetstream.Msg) (errs []error) {
	r.m.batches.Add(1)
	r.prom.batch.Observe(float64(len(msgs)))
	defer func() {
		if p := recover(); p != nil {
			r.m.panics.Add(1)
			r.log.Error("handler panicked", zap.Int("batch", len(msgs)),
				zap.Any("panic", p), zap.ByteString("stack", debug.Stack()))
			errs = nil
		}
	}()
	out := h(ctx, msgs)
	if out == nil {
		return make([]error, len(msgs))
	}
	if len(out) != len(msgs) {
		err := fmt.Errorf("streams: handler returned %d results for %d messages", len(out), len(msgs))
		r.log.Error("handler broke its contract", zap.Error(err))
		out = make([]error, len(msgs))
		for i := range out {
			out[i] = err
		}
	}
	return out
}

// settle acks, redelivers or dead-letters one handled message.
func (r *runner) settle(ctx context.Context, m jetstream.Msg, herr error) {
	r.mu.Lock()
	delete(r.received, m)
	r.mu.Unlock()
	if herr == nil {
		r.m.processed.Add(1)
		r.prom.observeProcessed(m)
		if err := m.Ack(); err != nil {
			r.log.Debug("ack failed; the message will be redelivered", zap.Error(err))
		}
		return
	}
	r.m.failed.Add(1)
	meta, metaErr := m.Metadata()
	if ctx.Err() != nil {
		// Shutting down is not the message's fault: hand it back at once
		// without weighing it toward the dead-letter subject.
		_ = m.Nak()
		return
	}
	delivery := 1
	if metaErr == nil {
		delivery = int(min(meta.NumDelivered, uint64(1<<30)))
	}
	if !IsPermanent(herr) && metaErr == nil && delivery < r.MaxDeliver {
		r.m.retried.Add(1)
		r.prom.retried.Inc()
		if err := m.NakWithDelay(r.Backoff(delivery)); err != nil {
			r.log.Debug("nak failed; the message will be redelivered after AckWait", zap.Error(err))
		}
		return
	}
	r.deadLetter(ctx, m, meta, delivery, herr)
}

func (r *runner) deadLetter(ctx context.Context, m jetstream.Msg, meta *jetstream.MsgMetadata, delivery int, herr error) {
	fields := []zap.Field{
		zap.String("subject", m.Subject()), zap.Int("deliveries", delivery),
		zap.Bool("permanent", IsPermanent(herr)), zap.Error(herr),
	}
	if meta != nil {
		fields = append(fields, zap.String("stream", meta.Stream),
			zap.Uint64("seq", meta.Sequence.Stream), zap.String("consumer", meta.Consumer))
	}
	if r.DeadLetterSubject != "" {
		if err := r.publishDeadLetter(ctx, m, meta, delivery, herr); err != nil {
			// Terminating without a stored copy would lose the message, so it
			// stays on the consumer and comes back after the backoff.
			r.m.retried.Add(1)
			r.prom.retried.Inc()
			r.log.Error("dead-letter publish failed; redelivering instead",
				append(fields, zap.NamedError("publish_error", err))...)
			_ = m.NakWithDelay(r.Backoff(delivery))
			return
		}
		fields = append(fields, zap.String("dead_letter_subject", r.DeadLetterSubject))
	}
	r.m.deadLettered.Add(1)
	r.prom.deadLettered.Inc()
	if err := m.TermWithReason("dead-lettered"); err != nil {
		// Redelivered later, it fails again and its copy is deduplicated by
		// the message id below.
		r.log.Warn("term failed", zap.Error(err))
	}
	r.log.Error("message dead-lettered", fields...)
}

func (r *runner) publishDeadLetter(ctx context.Context, m jetstream.Msg, meta *jetstream.MsgMetadata, delivery int, herr error) error {
	h := nats.Header{}
	for k, v := range m.Headers() {
		// Nats-* headers are instructions to the stream that stored the
		// original (message id, expected sequences, TTL, ...); replayed on the
		// dead-letter stream they would be obeyed there, or make the publish fail.
		if strings.HasPrefix(strings.ToLower(k), "nats-") {
			continue
		}
		h[k] = append([]string(nil), v...)
	}
	h.Set(HeaderDLQSubject, m.Subject())
	h.Set(HeaderDLQDeliveries, strconv.Itoa(delivery))
	h.Set(HeaderDLQError, oneLine(herr.Error(), maxErrorHeader))
	if meta != nil {
		h.Set(HeaderDLQStream, meta.Stream)
		h.Set(HeaderDLQSequence, strconv.FormatUint(meta.Sequence.Stream, 10))
		h.Set(HeaderDLQConsumer, meta.Consumer)
		// Dead-lettering the same stored message twice (its term got lost)
		// keeps one copy.
		h.Set(jetstream.MsgIDHeader, "dlq:"+meta.Stream+":"+strconv.FormatUint(meta.Sequence.Stream, 10))
	}
	// A dead letter must be stored even while Run is stopping, but not wait
	// forever on an unreachable server.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_, err := r.JS.PublishMsg(pctx, &nats.Msg{Subject: r.DeadLetterSubject, Header: h, Data: m.Data()})
	return err
}

// oneLine makes s safe as a header value: NATS headers end at a line break.
func oneLine(s string, limit int) string {
	s = strings.Map(func(c rune) rune {
		if c == '\r' || c == '\n' {
			return ' '
		}
		return c
	}, s)
	if len(s) > limit {
		s = strings.ToValidUTF8(s[:limit], "")
	}
	return s
}
