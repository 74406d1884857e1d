// Package userstreams writes the per-user streams of Synapse's worker mode (typing,
// to_device, account_data, receipts, presence, push_rules, device_lists). One Writer,
// written once, does what every stream needs: it consumes the writes gateways forward
// to it, asks the stream what they mean, appends the stream's records to its log,
// projects them into Postgres with its position in one transaction, answers, announces
// the position on Redis, and only then acknowledges. Each stream only says what a write
// means and how a record is stored: one file per stream.
package userstreams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// Stream is one per-user stream's own logic.
type Stream interface {
	// Name is the stream's replication name (schemas.Stream*).
	Name() string
	// Prepare decides the writes of a batch, in order, one Outcome each. Everything
	// this writer appended before the batch is in Postgres; a write must also see the
	// effect of those before it in the batch. An error fails the whole batch (a
	// transient one makes it wait, see persist.Transient).
	Prepare(ctx context.Context, batch []*schemas.StreamWrite) ([]Outcome, error)
	// Project stores appended records in tx. The writer calls it after each append,
	// recovery for what a crash left unprojected, and replay to rebuild the tables; it
	// must be idempotent and must never move a value back to an older position.
	Project(ctx context.Context, tx pgx.Tx, recs []streams.RawMessage) error
	// Row is the Synapse replication row of an appended record, or nil for none.
	Row(rec streams.RawMessage) any
}

// Starter is a Stream with work of its own besides the writes (timers that expire what
// it holds). The writer calls Start once its recovery is done, before it takes the first
// write, and again after a failure (so a Start that fails must leave nothing running);
// Start returns once the stream is ready, and the stream appends through w.AppendFunc
// until ctx ends.
type Starter interface {
	Start(ctx context.Context, w *Writer) error
}

// Pipelined is a Stream whose writes are answered once their records are in the log,
// their projection following on its own goroutine (streams.Behind), so the writer's
// next batch does not wait for Postgres. Only a stream that clients read back through
// /sync alone (which shows projected positions only) can be one, and its Prepare must
// not need its own unprojected records from Postgres: it keeps what it needs of them in
// memory, and the writer waits for every projection before a batch holding a write
// that Flushes names.
type Pipelined interface {
	Stream
	// Pipeline is called once, before any write, with the most writes that can be
	// answered and not projected yet.
	Pipeline(unprojected int)
	// Flushes reports whether the Prepare of w needs every earlier record projected.
	Flushes(w *schemas.StreamWrite) bool
	// Settled is called when every record appended is projected after a failure
	// between a Prepare and its append: what the stream keeps in memory of records
	// that may never have reached the log goes, and Postgres tells the rest.
	Settled()
}

// Queuer is a Stream whose projection is statements whose results it does not read:
// the writer sends them with its position in one round trip (an implicit
// transaction) instead of four. QueueProject queues what Project executes.
type Queuer interface {
	Stream
	QueueProject(b *pgx.Batch, recs []streams.RawMessage) error
}

// Record is a message to append to the stream's log.
type Record struct {
	// Key names the record's subject (Topology.UserStreamSubject); in a stream that
	// keeps one message per subject it is the key whose value the record replaces.
	Key []string
	// Data is the record itself, in the stream's own versioned schema.
	Data []byte
	// Wake says whom the record concerns: user IDs, room IDs, or streams.WakeEveryone.
	Wake []string
}

// Outcome is what one write comes to.
type Outcome struct {
	Records []Record
	// Answer goes back to the gateway; Error refuses the write, Body carries the
	// stream's own answer. Its Seq is set by the writer to the position of the last
	// record, or 0 when there is none.
	Answer *schemas.IntentResult
}

// ReplicationSink receives Synapse replication rows and positions (the Redis emitter).
// It must never block.
type ReplicationSink interface {
	Rows(stream string, token int64, rows []any)
	Position(stream string, token int64)
}

// Config wires a Writer. Replication, Waiters, MaxBatch and DBTimeout are optional.
type Config struct {
	// Name is this process's instance name, one of stream_writers.<stream>.
	Name     string
	Stream   Stream
	Topology streams.Topology
	JS       jetstream.JetStream
	NC       *nats.Conn
	DB       *persist.DB
	// Waiters answers gateways of this process without a network hop.
	Waiters     *streams.Waiters
	Replication ReplicationSink
	Log         *zap.Logger
	// MaxBatch bounds the writes handled at once (default 256).
	MaxBatch int
	// DBTimeout bounds each database call (default 10 s).
	DBTimeout time.Duration
}

// Writer is the one writer of a stream's shard in this process.
type Writer struct {
	cfg  Config
	name string
	spec streams.UserStream
	log  *zap.Logger
	// Metrics counts what the writer's consumer did.
	Metrics streams.Metrics
	// position is the last projected sequence, as a metric.
	position prometheus.Gauge

	// mu serialises appends: the handler's and those a stream makes on its own
	// (expiries), so every Prepare sees every earlier record projected.
	mu sync.Mutex
	// unprojected is set when records may be in the log without being in Postgres
	// (an append whose outcome is unknown, a projection that failed for good); the
	// next batch first projects them from the log.
	unprojected bool
	// projected is the position of this writer's last committed projection: the
	// stored position never goes below it unless Postgres lost commits.
	projected uint64
	// behind projects the appends of a Pipelined stream after their answers (nil for
	// other streams). Whoever holds mu and reads what projections write (projected,
	// stored positions) first waits for it (flush).
	behind *streams.Behind[[]streams.RawMessage]
}

// maxQueuedProjections bounds the batches of a Pipelined stream appended and waiting
// for their projection.
const maxQueuedProjections = 8

// verifyEvery is how often an idle writer checks that Postgres still holds its
// projection (see persist.ErrLostCommits); a busy one checks at every commit.
const verifyEvery = time.Second

// New returns a Writer for cfg.Stream.
func New(cfg Config) (*Writer, error) {
	name := cfg.Stream.Name()
	spec, ok := streams.UserStreams[name]
	if !ok {
		return nil, fmt.Errorf("userstreams: unknown stream %q", name)
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 256
	}
	if cfg.DBTimeout <= 0 {
		cfg.DBTimeout = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	w := &Writer{cfg: cfg, name: name, spec: spec, log: cfg.Log.Named("writer").With(zap.String("stream", name)),
		position: streams.WriterPosition(name, cfg.Name)}
	if p, ok := cfg.Stream.(Pipelined); ok && !spec.Memory {
		w.behind = streams.NewBehind[[]streams.RawMessage](maxQueuedProjections)
		// Queued and being projected, plus the batch being appended.
		p.Pipeline((2*w.behind.Depth() + 1) * cfg.MaxBatch)
	}
	return w, nil
}

// Run projects what a crash left unprojected, then consumes writes until ctx ends.
func (w *Writer) Run(ctx context.Context) error {
	anyError := func(error) bool { return true }
	_ = streams.Retry(ctx, w.log, "recovery", anyError, func(ctx context.Context) error {
		err := w.recover(ctx)
		if st, ok := w.cfg.Stream.(Starter); ok && err == nil {
			err = st.Start(ctx, w)
		}
		return err
	})
	t := w.cfg.Topology
	consumer := t.UserStreamConsumer(w.name, w.cfg.Name)
	var cons jetstream.Consumer
	err := streams.Retry(ctx, w.log, "making the intents consumer", streams.BusUnavailable, func(ctx context.Context) (err error) {
		cons, err = w.cfg.JS.CreateOrUpdateConsumer(ctx, t.IntentsStream(), jetstream.ConsumerConfig{
			Durable:       consumer,
			Description:   w.name + " writer " + w.cfg.Name,
			FilterSubject: t.UserStreamIntentSubject(w.name, w.cfg.Name),
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       streams.WriterAckWait,
			MaxDeliver:    -1,
			MaxAckPending: 4 * w.cfg.MaxBatch,
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("%s writer: consumer: %w", w.name, err)
	}
	if ctx.Err() != nil {
		return nil // stopped while starting
	}
	var wg sync.WaitGroup
	if w.cfg.Replication != nil {
		wg.Go(func() { w.announce(ctx) })
	}
	if !w.spec.Memory {
		wg.Go(func() { w.verify(ctx) })
	}
	if w.behind != nil {
		wg.Go(func() { w.behind.Run(ctx, w.projectQueued) })
	}
	runner := &streams.Runner{
		Name:              consumer,
		Consumer:          cons,
		JS:                w.cfg.JS,
		DeadLetterSubject: t.DeadLetterSubject(consumer),
		MaxBatch:          w.cfg.MaxBatch,
		MaxDeliver:        5,
		Log:               w.log,
		Metrics:           &w.Metrics,
	}
	if w.cfg.Waiters != nil {
		local, stop := w.cfg.Waiters.Intake(t.UserStreamIntentSubject(w.name, w.cfg.Name), 4*w.cfg.MaxBatch)
		defer stop()
		runner.Local = local
	}
	err = runner.Run(ctx, w.handle)
	wg.Wait()
	return err
}

// job is one write of a batch and where to answer it.
type job struct {
	write   *schemas.StreamWrite
	replyTo string
	answer  *schemas.IntentResult
}

func (w *Writer) handle(ctx context.Context, msgs []jetstream.Msg) []error {
	errs := make([]error, len(msgs))
	var jobs []*job
	var idx []int
	for i, m := range msgs {
		wr, err := schemas.DecodeStreamWrite(m.Data())
		if err == nil && wr.Stream != w.name {
			err = fmt.Errorf("write for stream %q on the %s writer", wr.Stream, w.name)
		}
		if err != nil {
			errs[i] = streams.Permanent(err)
			continue
		}
		jobs = append(jobs, &job{write: wr, replyTo: m.Headers().Get(streams.ReplyHeader)})
		idx = append(idx, i)
	}
	if len(jobs) == 0 {
		return errs
	}
	if err := w.apply(ctx, jobs); err != nil {
		if persist.Transient(err) || streams.BusUnavailable(err) {
			err = streams.Unavailable(err)
		}
		for _, i := range idx {
			errs[i] = err
		}
		return errs
	}
	for _, j := range jobs {
		if err := streams.Reply(w.cfg.NC, w.cfg.Waiters, j.replyTo, j.write.ID, j.answer); err != nil {
			w.log.Warn("reply not sent", zap.String("write", j.write.ID), zap.Error(err))
		}
	}
	return errs
}

// apply prepares, appends and projects a batch, and fills in every job's answer.
func (w *Writer) apply(ctx context.Context, jobs []*job) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.catchUpLocked(ctx); err != nil {
		return err
	}
	batch := make([]*schemas.StreamWrite, len(jobs))
	for i, j := range jobs {
		batch[i] = j.write
	}
	if p, ok := w.cfg.Stream.(Pipelined); ok && w.behind != nil && slices.ContainsFunc(batch, p.Flushes) {
		w.flush(ctx)
	}
	// The stream may hold the batch as done once Prepare began: until its records are
	// in the log, any failure, a panic included, makes the next batch settle first.
	appended := false
	defer func() {
		if !appended {
			w.unprojected = true
		}
	}()
	dctx, cancel := context.WithTimeout(ctx, w.cfg.DBTimeout)
	outcomes, err := w.cfg.Stream.Prepare(dctx, batch)
	cancel()
	if err != nil {
		return err
	}
	if len(outcomes) != len(jobs) {
		return fmt.Errorf("%s stream answered %d of %d writes", w.name, len(outcomes), len(jobs))
	}
	var recs []Record
	var ids []string
	for i, o := range outcomes {
		for k, r := range o.Records {
			recs = append(recs, r)
			ids = append(ids, jobs[i].write.ID+"/"+strconv.Itoa(k))
		}
	}
	seqs, err := w.appendLocked(ctx, recs, ids)
	if err != nil {
		return err
	}
	appended = true
	n := 0
	for i, o := range outcomes {
		ans := o.Answer
		if ans == nil {
			ans = &schemas.IntentResult{}
		}
		// A write that appended nothing leaves its device nothing to wait for in
		// its next /sync (read-your-writes), so it answers no position.
		if len(o.Records) > 0 {
			ans.Seq = seqs[n+len(o.Records)-1]
		}
		n += len(o.Records)
		jobs[i].answer = ans
	}
	return nil
}

// Append appends records a stream makes on its own (an expiry, a timeout), projects
// them and announces them like those of writes, and returns their positions.
func (w *Writer) Append(ctx context.Context, recs []Record) ([]uint64, error) {
	return w.AppendFunc(ctx, func() []Record { return recs })
}

// AppendFunc is Append for records made from the stream's own state: build runs under
// the writer's lock, so no write's records come between the state build reads and the
// place of its records in the log.
func (w *Writer) AppendFunc(ctx context.Context, build func() []Record) ([]uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.catchUpLocked(ctx); err != nil {
		return nil, err
	}
	w.flush(ctx)
	recs := build()
	ids := make([]string, len(recs))
	for i := range recs {
		ids[i] = nats.NewInbox()[len(nats.InboxPrefix):]
	}
	return w.appendLocked(ctx, recs, ids)
}

// appendLocked publishes recs (deduplicated by ids, so a batch handled again after a
// failure appends nothing twice), projects them, and announces them.
func (w *Writer) appendLocked(ctx context.Context, recs []Record, ids []string) ([]uint64, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	futures := make([]jetstream.PubAckFuture, len(recs))
	t := w.cfg.Topology
	for i, r := range recs {
		msg := nats.NewMsg(t.UserStreamSubject(w.name, r.Key...))
		msg.Data = r.Data
		msg.Header.Set(streams.HeaderWriter, w.cfg.Name)
		msg.Header.Set(streams.HeaderKeys, strings.Join(r.Wake, " "))
		msg.Header.Set(jetstream.MsgIDHeader, ids[i])
		f, err := w.cfg.JS.PublishMsgAsync(msg)
		if err != nil {
			w.unprojected = true
			return nil, fmt.Errorf("append to %s: %w", w.name, err)
		}
		futures[i] = f
	}
	appended := make([]streams.RawMessage, len(recs))
	timeout := time.After(15 * time.Second)
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			m := f.Msg()
			appended[i] = streams.RawMessage{Seq: ack.Sequence, Writer: w.cfg.Name, Header: m.Header, Data: m.Data}
		case err := <-f.Err():
			w.unprojected = true
			return nil, fmt.Errorf("append to %s: %w", w.name, err)
		case <-timeout:
			w.unprojected = true
			return nil, fmt.Errorf("append to %s: %w", w.name, context.DeadlineExceeded)
		case <-ctx.Done():
			w.unprojected = true
			return nil, ctx.Err()
		}
	}
	seqs := make([]uint64, len(appended))
	for i, a := range appended {
		seqs[i] = a.Seq
	}
	if w.behind != nil {
		if err := w.behind.Queue(ctx, appended); err != nil {
			w.unprojected = true
			return nil, err
		}
		return seqs, nil
	}
	if err := w.project(ctx, appended); err != nil {
		w.unprojected = true
		return nil, err
	}
	w.announceRows(appended)
	return seqs, nil
}

// flush waits for the projections of a Pipelined stream's answered writes.
func (w *Writer) flush(ctx context.Context) {
	if w.behind != nil {
		w.behind.Flush(ctx)
	}
}

// projectQueued projects the appends of a Pipelined stream's answered writes, retrying
// until it succeeds or ctx ends (they are safe in the log; recovery projects what a
// stop cut short). A loss of earlier commits is projected again from the log first.
func (w *Writer) projectQueued(ctx context.Context, queued [][]streams.RawMessage) {
	recs := slices.Concat(queued...)
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		err := w.project(ctx, recs)
		if errors.Is(err, persist.ErrLostCommits) {
			w.log.Warn("Postgres lost projected records; projecting them again from the log", zap.Error(err))
			if err = w.projectFromLog(ctx); err == nil {
				continue
			}
		}
		if err == nil {
			w.announceRows(recs)
			return
		}
		if ctx.Err() != nil {
			return
		}
		w.log.Warn("projection failed; retrying", zap.Error(err), zap.Duration("backoff", backoff))
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
	}
}

// project stores appended records and this writer's position in one transaction, then
// tells the sync feeds.
func (w *Writer) project(ctx context.Context, recs []streams.RawMessage) error {
	var top uint64
	for _, r := range recs {
		top = max(top, r.Seq)
	}
	if !w.spec.Memory {
		dctx, cancel := context.WithTimeout(ctx, w.cfg.DBTimeout)
		// The log holds every record before it is projected, and the position commits
		// with the rows: a commit lost in a crash of Postgres is found
		// (persist.ErrLostCommits) and projected again from the log. So the transaction
		// need not wait for its WAL flush, set as it begins (one round trip).
		moved := true
		var err error
		if q, ok := w.cfg.Stream.(Queuer); ok {
			// One round trip, an implicit transaction.
			b := &pgx.Batch{}
			b.Queue(`SET LOCAL synchronous_commit = off`)
			if err = q.QueueProject(b, recs); err == nil {
				persist.QueueAdvanceUnlessLost(b, w.name, w.cfg.Name, top, w.projected, &moved)
				err = w.cfg.DB.Pool.SendBatch(dctx, b).Close()
			}
		} else {
			err = pgx.BeginTxFunc(dctx, w.cfg.DB.Pool, pgx.TxOptions{BeginQuery: `BEGIN; SET LOCAL synchronous_commit = off`}, func(tx pgx.Tx) error {
				if err := w.cfg.Stream.Project(dctx, tx, recs); err != nil {
					return err
				}
				b := &pgx.Batch{}
				persist.QueueAdvanceUnlessLost(b, w.name, w.cfg.Name, top, w.projected, &moved)
				return tx.SendBatch(dctx, b).Close()
			})
		}
		cancel()
		if err == nil && !moved {
			err = fmt.Errorf("%w (projected up to %d)", persist.ErrLostCommits, w.projected)
		}
		if err != nil {
			return fmt.Errorf("project %s: %w", w.name, err)
		}
		w.projected = max(w.projected, top)
	}
	w.position.Set(float64(top))
	notice, _ := json.Marshal(schemas.Projected{Writer: w.cfg.Name, Seq: top})
	if err := w.cfg.NC.Publish(w.cfg.Topology.UserStreamProjectedSubject(w.name), notice); err != nil {
		w.log.Warn("projected notice not sent", zap.Error(err))
	}
	return nil
}

func (w *Writer) announceRows(recs []streams.RawMessage) {
	if w.cfg.Replication == nil {
		return
	}
	// Every record has its own sequence, so each is its own token.
	for _, r := range recs {
		if row := w.cfg.Stream.Row(r); row != nil {
			w.cfg.Replication.Rows(w.name, int64(r.Seq), []any{row})
		} else {
			w.cfg.Replication.Position(w.name, int64(r.Seq))
		}
	}
}

// catchUpLocked projects the records of this writer that may have reached the log
// without reaching Postgres.
func (w *Writer) catchUpLocked(ctx context.Context) error {
	if !w.unprojected {
		return nil
	}
	w.flush(ctx)
	if err := w.projectFromLog(ctx); err != nil {
		return err
	}
	if p, ok := w.cfg.Stream.(Pipelined); ok {
		p.Settled()
	}
	w.unprojected = false
	return nil
}

// verify checks, every verifyEvery, that Postgres still holds this writer's last
// projection, and projects again from the log what a loss took.
func (w *Writer) verify(ctx context.Context) {
	tick := time.NewTicker(verifyEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		w.mu.Lock()
		err := w.verifyLocked(ctx)
		w.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			w.log.Warn("projection check failed; retrying", zap.Error(err))
		}
	}
}

func (w *Writer) verifyLocked(ctx context.Context) error {
	w.flush(ctx)
	if !w.unprojected {
		dctx, cancel := context.WithTimeout(ctx, w.cfg.DBTimeout)
		positions, err := w.cfg.DB.StreamPositions(dctx, w.name)
		cancel()
		if err != nil {
			return err
		}
		if stored := positions[w.cfg.Name]; stored < w.projected {
			w.log.Warn("Postgres lost projected records; projecting them again from the log",
				zap.Uint64("stored", stored), zap.Uint64("projected", w.projected))
			w.unprojected = true
		}
	}
	return w.catchUpLocked(ctx)
}

func (w *Writer) recover(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flush(ctx)
	return w.projectFromLog(ctx)
}

// projectFromLog projects this writer's records past its recorded position. Its caller
// holds mu with no projection in flight, or is the projector of a Pipelined stream
// (then the writes under mu touch nothing it does).
func (w *Writer) projectFromLog(ctx context.Context) error {
	t := w.cfg.Topology
	if w.spec.Memory {
		// Nothing to project. A NATS restart loses a memory stream, which makes every
		// append fail: make it again. It starts past every position the lost one gave
		// out (Topology.EnsureUserStream).
		_, err := w.streamInfo(ctx)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			w.log.Warn("memory stream lost; creating it again")
			err = t.EnsureUserStream(ctx, w.cfg.JS, w.name)
		}
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, w.cfg.DBTimeout)
	positions, err := w.cfg.DB.StreamPositions(dctx, w.name)
	cancel()
	if err != nil {
		return err
	}
	w.projected = positions[w.cfg.Name]
	from := w.projected + 1
	recovered := 0
	_, err = streams.ReadStream(ctx, w.cfg.JS, t.UserStreamName(w.name), t.UserStreamWildcard(w.name), false,
		streams.LogRange{From: from, Writer: w.cfg.Name}, func(msgs []streams.RawMessage) error {
			recovered += len(msgs)
			return w.project(ctx, msgs)
		})
	if err != nil {
		return err
	}
	if recovered > 0 {
		w.log.Info("projected records a failure left behind", zap.Int("records", recovered), zap.Uint64("from_seq", from))
	}
	return nil
}

func (w *Writer) streamInfo(ctx context.Context) (*jetstream.StreamInfo, error) {
	s, err := w.cfg.JS.Stream(ctx, w.cfg.Topology.UserStreamName(w.name))
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

// announce tells Redis, once a second, the stream's last sequence as this writer's
// position: receivers take the minimum over a stream's writers, and a writer with
// nothing to write would otherwise pin it (Synapse #15595).
func (w *Writer) announce(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		w.mu.Lock()
		info, err := w.streamInfo(ctx)
		if err == nil {
			w.cfg.Replication.Position(w.name, int64(info.State.LastSeq))
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// maxWakeRooms bounds the rooms a record names as whom it concerns: a user in more rooms
// concerns everyone, which costs each long-poll a look instead of an ever longer header.
const maxWakeRooms = 100

// roomsAndUser are the wake keys of a change of user that everyone sharing one of rooms
// (the user's joined rooms) sees: presence, device lists.
func roomsAndUser(user string, rooms []string) []string {
	if len(rooms) > maxWakeRooms {
		return []string{streams.WakeEveryone}
	}
	return append(slices.Clip(rooms), user)
}

// Refuse is the Outcome of a write refused with a Matrix error.
func Refuse(status int, code, format string, args ...any) Outcome {
	return Outcome{Answer: &schemas.IntentResult{Error: &schemas.ResultError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}}}
}
