// Package persister is the event writer: it owns the shards of rooms that
// stream_writers.events gives it, consumes their intents in order, builds and
// authorises events, appends them to the EVENTS log with per-room optimistic
// concurrency, projects them into Postgres, answers the waiting gateway, and only then
// acknowledges the intents.
package persister

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// ReplicationSink receives the Synapse replication rows of appended events (the Redis
// emitter). It must never block.
type ReplicationSink interface {
	Events(token int64, rows []schemas.EventRow)
	Position(stream string, token int64)
}

// Config wires a persister. Replication, Waiters, MaxBatch, MaxRooms and ProjectionDelay
// are optional.
type Config struct {
	// Name is this writer's instance name, as listed in stream_writers.events.
	Name       string
	ServerName spec.ServerName
	KeyID      gomatrixserverlib.KeyID
	Key        ed25519.PrivateKey
	Topology   streams.Topology
	JS         jetstream.JetStream
	NC         *nats.Conn
	DB         *persist.DB
	// Waiters lets answers to gateways of this process skip the network.
	Waiters *streams.Waiters
	// Shards, when set, is the live list of event writers: an intent for a room this
	// writer no longer owns is handed on to the room's owner instead of handled.
	Shards      streams.Shards
	Replication ReplicationSink
	Log         *zap.Logger
	// MaxBatch bounds the intents handled per loop (default 512).
	MaxBatch int
	// MaxRooms bounds the rooms kept in memory (default 10000); others are loaded from
	// Postgres when their next intent comes.
	MaxRooms int
	// ProjectionDelay holds every projection back, to test a slow writer.
	ProjectionDelay time.Duration
	// DBTimeout bounds every database call (default 10 s): a hung Postgres fails the
	// call, and the loop waits and tries again instead of hanging.
	DBTimeout time.Duration
	// AppendTimeout bounds the wait for an append's acknowledgement (default 5 s); past
	// it the append's outcome is unknown and the room is caught up from the log. An
	// append in flight to a NATS node that dies is never acknowledged: this is how long
	// its rooms wait before the catch-up, which finds a new leader of the log.
	AppendTimeout time.Duration
	// Backoff is the runner's redelivery delay after a failed delivery (default
	// streams.DefaultBackoff); tests shorten it.
	Backoff func(delivery int) time.Duration

	// faults injects failures in tests; nil fields do nothing.
	faults faults
}

// Defaults of Config's bounds.
const (
	DefaultDBTimeout     = 10 * time.Second
	DefaultAppendTimeout = 5 * time.Second
)

// Persister is one event writer.
type Persister struct {
	cfg     Config
	signer  signer
	rooms   map[string]*room
	Metrics streams.Metrics
	// busy is held while a batch of intents is handled, so position announcements
	// never claim a sequence an append of ours is still heading for.
	busy sync.Mutex
	// unresolved are rooms with a failed append (a lost ack, a timeout, a panic, or
	// found behind the log) that no catch-up has settled yet: a message of ours may be
	// in the log but not in Postgres, so the writer's position must not move until
	// they are caught up. Only the loop touches it.
	unresolved map[string]bool
	// maxAppend bounds the events of one log message, below the server's max payload.
	maxAppend int
	// behind projects appended loops after their answers; recent answers retries of
	// intents whose projection is behind (see behind.go); seen tells intents that
	// cannot have a stored result (seen.go).
	behind *streams.Behind[projection]
	recent *streams.Recent[string, persist.IntentResult]
	seen   seen
	// projected is this writer's highest sequence whose projection committed: the
	// stored position is never below it unless Postgres lost commits. Recovery sets it
	// before the projector starts, which then owns it.
	projected uint64
	// position shows projected as a metric.
	position prometheus.Gauge
}

// faults are the test hooks of the failure paths that real runs reach only by bad luck.
type faults struct {
	// ackLost, when it returns true for a room, drops the acknowledgement of that
	// room's append (which the log has stored) as a lost reply would.
	ackLost func(roomID string) bool
	// catchUp fails a catch-up with the error it returns.
	catchUp func(roomID string) error
	// build runs before each intent is built (a panic there is a library panic).
	build func(in *schemas.Intent)
	// maxAppend replaces the append bound, as a bus with a small max_payload would.
	maxAppend int
	// projectedAside runs when a loop projects its appends on nobody's behalf because
	// an earlier append's outcome is still unknown.
	projectedAside func()
	// project fails a projection with the error it returns.
	project func() error
}

// New returns a persister; Run starts it.
func New(cfg Config) *Persister {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 512
	}
	if cfg.MaxRooms <= 0 {
		cfg.MaxRooms = 10000
	}
	if cfg.DBTimeout <= 0 {
		cfg.DBTimeout = DefaultDBTimeout
	}
	if cfg.AppendTimeout <= 0 {
		cfg.AppendTimeout = DefaultAppendTimeout
	}
	maxAppend := maxBatchBytes
	if cfg.NC != nil && cfg.NC.MaxPayload() > 0 {
		maxAppend = min(maxAppend, int(cfg.NC.MaxPayload())*3/4)
	}
	if cfg.faults.maxAppend > 0 {
		maxAppend = cfg.faults.maxAppend
	}
	return &Persister{
		cfg:        cfg,
		signer:     newSigner(cfg.ServerName, cfg.KeyID, cfg.Key),
		rooms:      map[string]*room{},
		unresolved: map[string]bool{},
		maxAppend:  maxAppend,
		behind:     streams.NewBehind[projection](maxQueuedProjections),
		recent:     streams.NewRecent[string, persist.IntentResult]((2*maxQueuedProjections + 1) * cfg.MaxBatch),
		seen:       seen{db: cfg.DB, log: cfg.Log},
		position:   streams.WriterPosition(schemas.StreamEvents, cfg.Name),
	}
}

// unavailable reports whether err is Postgres or the bus out of reach for now.
func unavailable(err error) bool { return persist.Transient(err) || streams.BusUnavailable(err) }

// dbCtx bounds one database call by DBTimeout.
func (p *Persister) dbCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, p.cfg.DBTimeout)
}

// Run recovers what an earlier run appended but did not project, then handles intents
// until ctx ends.
func (p *Persister) Run(ctx context.Context) error {
	if err := streams.Retry(ctx, p.cfg.Log, "event writer recovery", unavailable, p.recoverUnprojected); err != nil {
		return fmt.Errorf("persister %s: recovery: %w", p.cfg.Name, err)
	}
	if ctx.Err() != nil {
		return nil
	}
	// Postgres holds every result of this writer now.
	p.seen.build(ctx, nil)
	defer p.seen.wait()
	t := p.cfg.Topology
	var cons jetstream.Consumer
	err := streams.Retry(ctx, p.cfg.Log, "making the intents consumer", streams.BusUnavailable, func(ctx context.Context) (err error) {
		cons, err = p.cfg.JS.CreateOrUpdateConsumer(ctx, t.IntentsStream(), jetstream.ConsumerConfig{
			Durable:       t.PersisterConsumer(p.cfg.Name),
			Description:   "event writer " + p.cfg.Name,
			FilterSubject: t.IntentSubject(p.cfg.Name),
			AckPolicy:     jetstream.AckExplicitPolicy,
			// A crashed writer's intents come back after this; recovery at start projects
			// what it appended, so the redelivered intents find their results.
			AckWait: streams.WriterAckWait,
			// The runner gives up after its own MaxDeliver and dead-letters; the consumer
			// must keep delivering until then, or a last failure would strand the intent.
			MaxDeliver:    -1,
			MaxAckPending: 4 * p.cfg.MaxBatch,
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("persister %s: consumer: %w", p.cfg.Name, err)
	}
	if ctx.Err() != nil {
		return nil
	}
	p.cfg.Log.Info("event writer started", zap.String("writer", p.cfg.Name))
	if p.cfg.Replication != nil {
		// Receivers drop RDATA for a stream until they saw a POSITION for it.
		p.announcePosition(ctx, false)
	}
	var announcer sync.WaitGroup
	announcer.Go(func() { p.announcePositions(ctx) })
	defer announcer.Wait()
	var projector sync.WaitGroup
	projector.Go(func() { p.behind.Run(ctx, p.projectQueued) })
	defer projector.Wait()
	runner := &streams.Runner{
		Name:              "persister_" + p.cfg.Name,
		Consumer:          cons,
		JS:                p.cfg.JS,
		DeadLetterSubject: t.DeadLetterSubject("persister_" + p.cfg.Name),
		MaxBatch:          p.cfg.MaxBatch,
		MaxDeliver:        5,
		Backoff:           p.cfg.Backoff,
		Log:               p.cfg.Log,
		Metrics:           &p.Metrics,
	}
	if p.cfg.Waiters != nil {
		local, stop := p.cfg.Waiters.Intake(t.IntentSubject(p.cfg.Name), 4*p.cfg.MaxBatch)
		defer stop()
		runner.Local = local
	}
	return runner.Run(ctx, p.handle)
}

// job is one intent in flight through a loop.
type job struct {
	msgIndex int
	in       *schemas.Intent
	replyTo  string
	result   *schemas.IntentResult
}

// appendAttempts bounds how often a room is caught up and rebuilt in one loop before
// its intents are left for redelivery.
const appendAttempts = 3

// maxBatchBytes bounds the events of one log message (and at most three quarters of
// the server's max_payload, 1 MiB by default): an intent that does not fit beside the
// room's earlier intents waits for the next append, one that cannot fit alone is
// refused with 413.
const maxBatchBytes = 768 << 10

// handle processes one batch of intents; it returns one error per message (nil = ack).
// A failure of the database or the bus comes back as streams.Unavailable: the runner
// keeps those intents in progress and hands them back, so an outage delays intents and
// never dead-letters them.
func (p *Persister) handle(ctx context.Context, msgs []jetstream.Msg) []error {
	p.busy.Lock()
	defer p.busy.Unlock()
	errs := make([]error, len(msgs))
	var jobs []*job
	for i, m := range msgs {
		in, err := schemas.DecodeIntent(m.Data())
		if err != nil {
			errs[i] = streams.Permanent(err)
			continue
		}
		if in.Kind == schemas.KindRemoteEvent {
			// The remote event path is designed but not built yet: answer, do not retry.
			j := &job{msgIndex: i, in: in, replyTo: m.Headers().Get(streams.ReplyHeader)}
			j.result = resultError(http.StatusNotImplemented, "M_UNRECOGNIZED", "federation is not supported yet")
			p.reply(j)
			continue
		}
		jobs = append(jobs, &job{msgIndex: i, in: in, replyTo: m.Headers().Get(streams.ReplyHeader)})
	}
	jobs = p.handOn(ctx, msgs, jobs, errs)
	defer func() {
		if r := recover(); r != nil {
			// Building may have applied events to cached rooms that were never appended,
			// and an append may have landed unanswered: forget those rooms and catch them
			// up before anything else, then let the runner isolate the culprit.
			for _, j := range jobs {
				delete(p.rooms, j.in.RoomID)
				p.unresolved[j.in.RoomID] = true
			}
			panic(r)
		}
	}()
	jobs, dupes := splitDuplicates(jobs)
	pending := jobs
	err := p.resolve(ctx)
	for attempts := 0; err == nil && len(pending) > 0 && attempts < appendAttempts; {
		var retry, deferred []*job
		retry, deferred, err = p.appendAndProject(ctx, pending)
		if len(retry) > 0 {
			attempts++
		}
		// A room found behind the log may have moved to another writer meanwhile.
		pending = p.handOn(ctx, msgs, append(retry, deferred...), errs)
	}
	var pe *panicError
	switch {
	case errors.As(err, &pe):
		p.cfg.Log.Error("event writer panicked", zap.Any("panic", pe.value), zap.ByteString("stack", pe.stack))
		panic(pe)
	case unavailable(err):
		p.cfg.Log.Warn("database or bus unavailable; the intents wait", zap.Error(err), zap.Int("intents", len(pending)))
		err = streams.Unavailable(err)
	case err != nil:
		p.cfg.Log.Warn("intent batch failed; will be redelivered", zap.Error(err), zap.Int("intents", len(pending)))
	case len(pending) > 0:
		err = errors.New("room kept moving under this writer")
	}
	for _, j := range pending {
		errs[j.msgIndex] = err
	}
	for _, d := range dupes {
		if errs[d.first.msgIndex] != nil || d.first.result == nil {
			errs[d.msgIndex] = errs[d.first.msgIndex]
			continue
		}
		d.result = d.first.result
		p.reply(d.job)
	}
	return errs
}

// handOn publishes the intents of jobs whose room another writer owns now (the live
// shard map changed) to that writer, records the outcome in errs, and returns the jobs
// this writer keeps. The room's log takes appends from one writer at a time anyway (each
// append expects the room's last sequence), so a copy handled here and there cannot
// fork it.
func (p *Persister) handOn(ctx context.Context, msgs []jetstream.Msg, jobs []*job, errs []error) []*job {
	if p.cfg.Shards == nil {
		return jobs
	}
	writers := p.cfg.Shards.Writers()
	kept := jobs[:0]
	for _, j := range jobs {
		owner := streams.ShardOwner(j.in.RoomID, writers)
		if owner == p.cfg.Name {
			kept = append(kept, j)
			continue
		}
		m := msgs[j.msgIndex]
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := p.cfg.JS.PublishMsg(pctx, &nats.Msg{Subject: p.cfg.Topology.IntentSubject(owner), Header: m.Headers(), Data: m.Data()})
		cancel()
		if err != nil {
			errs[j.msgIndex] = streams.Unavailable(fmt.Errorf("hand on to %s: %w", owner, err))
			continue
		}
		handedOn.Inc()
		p.cfg.Log.Debug("intent handed on to the room's writer", zap.String("room_id", j.in.RoomID), zap.String("writer", owner))
	}
	return kept
}

// resolve catches up the rooms whose last append had an unknown outcome; until it
// succeeds, nothing else is appended.
func (p *Persister) resolve(ctx context.Context) error {
	for id := range p.unresolved {
		if err := p.catchUp(ctx, id); err != nil {
			return err
		}
		delete(p.unresolved, id)
	}
	return nil
}

// panicError carries a panic out of a goroutine of the loop, so that the loop's own
// goroutine panics with it and the runner isolates the culprit.
type panicError struct {
	value any
	stack []byte
}

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.value) }

// recovered turns a panic of the calling goroutine into *err.
func recovered(err *error) {
	if r := recover(); r != nil {
		*err = &panicError{value: r, stack: debug.Stack()}
	}
}

// dupe is a second copy of an intent in one batch (a client retry that arrived while
// the first was queued); it gets the first copy's answer.
type dupe struct {
	*job
	first *job
}

func splitDuplicates(jobs []*job) ([]*job, []dupe) {
	firsts := map[string]*job{}
	var unique []*job
	var dupes []dupe
	for _, j := range jobs {
		if f, ok := firsts[j.in.ID]; ok {
			dupes = append(dupes, dupe{job: j, first: f})
			continue
		}
		firsts[j.in.ID] = j
		unique = append(unique, j)
	}
	return unique, dupes
}

// answerKnown answers intents handled before (a redelivery, or a client retry after
// the deduplication window) from their stored results and returns the others.
func (p *Persister) answerKnown(ctx context.Context, jobs []*job) ([]*job, error) {
	if len(jobs) == 0 {
		return nil, nil
	}
	known, err := p.lookupKnown(ctx, jobs, false)()
	if err != nil {
		return jobs, err
	}
	return p.answerFrom(known, jobs), nil
}

// answerFrom answers the jobs whose intent has a stored result and returns the others.
func (p *Persister) answerFrom(known map[string]persist.IntentResult, jobs []*job) []*job {
	var rest []*job
	for _, j := range jobs {
		if r, ok := known[j.in.ID]; ok {
			j.result = &schemas.IntentResult{EventIDs: r.EventIDs, Seq: r.Seq}
			p.reply(j)
			continue
		}
		rest = append(rest, j)
	}
	return rest
}

// roomAppend is one room's share of a loop.
type roomAppend struct {
	room  *room
	jobs  []*job
	undo  *undo
	batch *schemas.LogBatch
	pdus  []gomatrixserverlib.PDU
	// deferred are the intents left for the next append: the batch was full.
	deferred []*job
	future   jetstream.PubAckFuture
	seq      uint64
	behind   bool
}

// appendAndProject builds the events of every pending intent, appends one log message
// per room, projects what was appended in one transaction, answers, and returns the
// intents of rooms that turned out to be behind the log (to build again).
func (p *Persister) appendAndProject(ctx context.Context, jobs []*job) (retry, deferred []*job, err error) {
	// Which intents were handled before is asked of Postgres while the events are
	// built; the rare known one is taken out of its room's batch afterwards.
	known := p.lookupKnown(ctx, jobs, true)
	appends, err := p.prepareRooms(ctx, jobs)
	if err == nil {
		start := time.Now()
		err = p.buildAll(ctx, appends, start)
		buildSeconds.Observe(time.Since(start).Seconds())
	}
	results, kerr := known()
	if err == nil {
		err = kerr
	}
	if err != nil {
		p.rollbackAll(appends)
		return jobs, nil, err
	}
	if len(results) > 0 {
		if err := p.dropKnown(ctx, appends, results); err != nil {
			p.rollbackAll(appends)
			return jobs, nil, err
		}
	}
	for _, ra := range appends {
		if ra.room != nil && ra.room.lastEventID == "" {
			// Its create was refused: the room does not exist.
			delete(p.rooms, ra.room.id)
		}
	}
	for _, ra := range appends {
		deferred = append(deferred, ra.deferred...)
	}
	var published []*roomAppend
	publishedAt := time.Now()
	for _, ra := range appends {
		if ra.batch != nil {
			ra.future = p.publish(ra)
			published = append(published, ra)
		}
	}
	var done []persist.BatchAt
	var failed error
	// One deadline for the loop's appends: lost acks of many rooms cost one wait.
	deadline := time.Now().Add(p.cfg.AppendTimeout)
	var behind []*roomAppend
	for _, ra := range published {
		if err := p.await(ctx, ra, deadline); err != nil {
			p.rollback(ra)
			// Behind the log, or an outcome we do not know (a lost ack, a reconnect):
			// either way the room's log messages are projected from the log before the
			// intents are built again; the retry then finds an intent that did land.
			// Until that catch-up succeeds, the room may hold a message of ours that
			// Postgres lacks.
			if !ra.behind {
				p.cfg.Log.Warn("append outcome unknown; catching the room up", zap.String("room_id", ra.room.id), zap.Error(err))
			}
			p.unresolved[ra.room.id] = true
			behind = append(behind, ra)
			retry = append(retry, ra.jobs...)
			continue
		}
		ra.room.lastSeq = ra.seq
		appendSeconds.Observe(time.Since(publishedAt).Seconds())
		appendedEvents.Add(float64(len(ra.batch.Events)))
		if ra.batch.Purged {
			// The room is gone: an intent for it finds neither it nor its events.
			delete(p.rooms, ra.room.id)
		}
		done = append(done, persist.BatchAt{Seq: ra.seq, Batch: ra.batch, PDUs: ra.pdus})
		for _, j := range ra.jobs {
			if j.result.Error == nil {
				j.result.Seq = ra.seq
			}
		}
	}
	for _, ra := range behind {
		if err := p.catchUp(ctx, ra.room.id); err != nil {
			failed = err
			continue
		}
		delete(p.unresolved, ra.room.id)
	}
	// No position may pass an append whose outcome is unknown (invariant 5): while one
	// is unresolved, what this loop appended is projected on nobody's behalf, and sync
	// feeds find it in Postgres instead of through the position.
	writer := p.cfg.Name
	if len(p.unresolved) > 0 {
		writer = ""
		if p.cfg.faults.projectedAside != nil && len(done) > 0 {
			p.cfg.faults.projectedAside()
		}
	}
	retrying := make(map[*job]bool, len(retry))
	for _, j := range retry {
		retrying[j] = true
	}
	// Answered at the append; the projection follows behind (behind.go). It is queued
	// first, so whoever holds an answer can wait for its projection (flushProjections).
	if err := p.projectBehind(ctx, writer, done); err != nil {
		// Stopping: what was appended stays in the log for the next start.
		return retry, deferred, err
	}
	for _, ra := range appends {
		for _, j := range ra.jobs {
			if j.result == nil || retrying[j] {
				continue
			}
			if j.result.Error == nil && j.result.Seq > 0 {
				p.recent.Add(j.in.ID, persist.IntentResult{RoomID: j.in.RoomID, Seq: j.result.Seq, EventIDs: j.result.EventIDs})
			}
			p.reply(j)
		}
	}
	if p.seen.full() {
		p.seen.build(ctx, p.recent.Keys())
	}
	if failed != nil {
		return retry, deferred, failed
	}
	if len(retry) > 0 {
		retry, err = p.answerKnown(ctx, retry)
	}
	return retry, deferred, err
}

// lookupKnown starts looking up stored results of jobs; the returned function waits.
// With trustSeen, an intent for a room whose every handled intent the filter of stored
// ids holds (room.seenAll), and that the filter has never seen, is new without asking
// Postgres. Retries after a room turned out behind ask without trustSeen.
func (p *Persister) lookupKnown(ctx context.Context, jobs []*job, trustSeen bool) func() (map[string]persist.IntentResult, error) {
	var ids []string
	for _, j := range jobs {
		if _, ok := p.recent.Get(j.in.ID); ok {
			continue
		}
		if r := p.rooms[j.in.RoomID]; trustSeen && r != nil && r.seenAll && !p.seen.maybe(j.in.ID) {
			continue
		}
		ids = append(ids, j.in.ID)
	}
	type answer struct {
		known map[string]persist.IntentResult
		err   error
	}
	ch := make(chan answer, 1)
	if len(ids) == 0 {
		ch <- answer{known: map[string]persist.IntentResult{}} // all new, or in recent
	} else {
		go func() {
			var a answer
			defer func() { ch <- a }()
			defer recovered(&a.err)
			dctx, cancel := p.dbCtx(ctx)
			defer cancel()
			a.known, a.err = p.cfg.DB.IntentResults(dctx, ids)
		}()
	}
	return func() (map[string]persist.IntentResult, error) {
		a := <-ch
		if a.err != nil {
			return nil, a.err
		}
		// Those appended lately may not be in Postgres yet.
		for _, j := range jobs {
			if r, ok := p.recent.Get(j.in.ID); ok {
				a.known[j.in.ID] = r
			}
		}
		return a.known, nil
	}
}

// dropKnown answers the jobs handled before from their stored results and builds their
// rooms' batches again without them.
func (p *Persister) dropKnown(ctx context.Context, appends []*roomAppend, known map[string]persist.IntentResult) error {
	for _, ra := range appends {
		rest := p.answerFrom(known, ra.jobs)
		if len(rest) == len(ra.jobs) {
			continue
		}
		p.rollback(ra)
		deferred := ra.deferred
		ra.jobs, ra.batch, ra.pdus = rest, nil, nil
		if ra.room != nil && len(rest) > 0 {
			if err := p.buildBatch(ctx, ra, time.Now()); err != nil {
				return err
			}
		}
		// What did not fit before still waits for the room's next append.
		ra.deferred = append(ra.deferred, deferred...)
	}
	return nil
}

func groupByRoom(jobs []*job) ([]string, map[string][]*job) {
	var order []string
	by := map[string][]*job{}
	for _, j := range jobs {
		if _, ok := by[j.in.RoomID]; !ok {
			order = append(order, j.in.RoomID)
		}
		by[j.in.RoomID] = append(by[j.in.RoomID], j)
	}
	return order, by
}

// prepareRooms finds (or, for create_room, starts) the room of every job. Intents for
// rooms that do not exist are answered here.
func (p *Persister) prepareRooms(ctx context.Context, jobs []*job) ([]*roomAppend, error) {
	order, byRoom := groupByRoom(jobs)
	appends := make([]*roomAppend, 0, len(order))
	for _, roomID := range order {
		ra := &roomAppend{jobs: byRoom[roomID]}
		for _, j := range ra.jobs {
			j.result = nil
		}
		r, err := p.loadRoom(ctx, roomID)
		if err == nil && r == nil && ra.jobs[0].in.Kind != schemas.KindCreateRoom {
			// Postgres may not have it yet: another writer answered its creation at the
			// append and projects behind it (a writer moved, a stale shard map). The log
			// has it if it exists.
			if err = p.catchUp(ctx, roomID); err == nil {
				r, err = p.loadRoom(ctx, roomID)
			}
		}
		if err != nil {
			return appends, err
		}
		if r == nil {
			// Only a create_room intent may start a room; it comes first by construction
			// of a new room ID, others are for unknown rooms.
			first := ra.jobs[0].in
			var ver gomatrixserverlib.IRoomVersion
			if first.Kind == schemas.KindCreateRoom {
				ver, err = gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(first.CreateRoom.RoomVersion))
			}
			switch {
			case first.Kind != schemas.KindCreateRoom:
				setResults(ra.jobs, resultError(http.StatusNotFound, "M_NOT_FOUND", "unknown room"))
			case err != nil:
				setResults(ra.jobs, resultError(http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION", "unsupported room version"))
			default:
				r = &room{id: roomID, version: ver, state: authState{}, seenAll: true}
				p.remember(r)
			}
		}
		ra.room = r
		appends = append(appends, ra)
	}
	return appends, nil
}

func setResults(jobs []*job, res *schemas.IntentResult) {
	for _, j := range jobs {
		j.result = res
	}
}

// buildAll builds every room's batch, rooms in parallel: they share nothing, and
// signing is most of a persister's CPU.
func (p *Persister) buildAll(ctx context.Context, appends []*roomAppend, now time.Time) error {
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for _, ra := range appends {
		if ra.room == nil {
			continue
		}
		g.Go(func() (err error) {
			defer recovered(&err)
			return p.buildBatch(ctx, ra, now)
		})
	}
	return g.Wait()
}

// buildBatch builds the events of one room's intents on top of its in-memory state.
// Refused intents get their answer; the accepted events form the room's log message.
// An intent whose events alone cannot fit one log message is refused (413); one that
// does not fit beside the intents before it waits for the room's next append.
func (p *Persister) buildBatch(ctx context.Context, ra *roomAppend, now time.Time) error {
	r := ra.room
	ra.undo = r.checkpoint()
	batch := &schemas.LogBatch{V: schemas.LogVersion, RoomID: r.id, RoomVersion: string(r.version.Version()), Writer: p.cfg.Name}
	var pdus []gomatrixserverlib.PDU
	size := 0
	ra.deferred = nil
	for i, j := range ra.jobs {
		if batch.Purged || j.in.Kind == schemas.KindPurgeRoom {
			if len(batch.Events) > 0 {
				// The purge is appended alone, after the events before it.
				ra.jobs, ra.deferred = ra.jobs[:i], ra.jobs[i:]
				break
			}
			if batch.Purged || r.lastEventID == "" {
				j.result = resultError(http.StatusNotFound, "M_NOT_FOUND", "unknown room")
				continue
			}
			batch.Purged = true
			j.result = &schemas.IntentResult{}
			continue
		}
		mark := r.checkpoint()
		evs, n, err := p.buildIntent(ctx, r, j.in, mark, now)
		if err != nil {
			r.rollback(mark)
			var ref *refusal
			var ex *existing
			switch {
			case errors.As(err, &ref):
				j.result = &schemas.IntentResult{Error: &ref.ResultError}
			case errors.As(err, &ex):
				// The room's last append holds the event or follows it: a read after
				// the answer waits for its projection.
				j.result = &schemas.IntentResult{EventIDs: []string{ex.eventID}, Seq: r.lastSeq}
			default:
				return err
			}
			continue
		}
		if n > p.maxAppend {
			// Alone too large for one log message (a small max_payload): never fits.
			r.rollback(mark)
			j.result = resultError(http.StatusRequestEntityTooLarge, "M_TOO_LARGE",
				fmt.Sprintf("the event exceeds the %d bytes of one log append", p.maxAppend))
			continue
		}
		if size+n > p.maxAppend {
			r.rollback(mark)
			ra.jobs, ra.deferred = ra.jobs[:i], ra.jobs[i:]
			break
		}
		ra.undo.keep(mark)
		size += n
		j.result = &schemas.IntentResult{}
		for _, pdu := range evs {
			j.result.EventIDs = append(j.result.EventIDs, pdu.EventID())
			batch.Events = append(batch.Events, schemas.LoggedEvent{
				EventID: pdu.EventID(), JSON: pdu.JSON(), IntentID: j.in.ID, DeviceID: j.in.DeviceID, TxnID: j.in.TxnID,
			})
			pdus = append(pdus, pdu)
		}
	}
	if len(batch.Events) > 0 || batch.Purged {
		ra.batch, ra.pdus = batch, pdus
	}
	return nil
}

// loggedSize is about what an event of in adds to its log message.
func loggedSize(in *schemas.Intent, pdu gomatrixserverlib.PDU) int {
	const fieldNames = 64 // {"event_id":"","json":,"intent_id":"",...}
	return len(pdu.JSON()) + len(pdu.EventID()) + len(in.ID) + len(in.DeviceID) + len(in.TxnID) + fieldNames
}

// rollback takes back what building a room's batch applied to the room; a room that
// this batch was creating is forgotten.
func (p *Persister) rollback(ra *roomAppend) {
	if ra.room == nil || ra.undo == nil {
		return
	}
	ra.room.rollback(ra.undo)
	ra.undo = nil
	if ra.room.lastEventID == "" {
		delete(p.rooms, ra.room.id)
	}
}

func (p *Persister) rollbackAll(appends []*roomAppend) {
	for _, ra := range appends {
		p.rollback(ra)
	}
}

// buildIntent builds the events of one intent, applying each to the room (recorded in
// mark) so the next is authorised against the state it creates, and returns them with
// their size in the log. A create_room whose events outgrow one log message is refused
// as soon as they do.
func (p *Persister) buildIntent(ctx context.Context, r *room, in *schemas.Intent, mark *undo, now time.Time) ([]gomatrixserverlib.PDU, int, error) {
	if p.cfg.faults.build != nil {
		p.cfg.faults.build(in)
	}
	switch in.Kind {
	case schemas.KindCreateRoom:
		if r.lastEventID != "" {
			return nil, 0, refuse(http.StatusBadRequest, "M_ROOM_IN_USE", "room already exists")
		}
		var out []gomatrixserverlib.PDU
		size := 0
		for i := range in.CreateRoom.Events {
			pdu, err := p.signer.build(r, in.Sender, &in.CreateRoom.Events[i], now)
			if err != nil {
				return nil, 0, err
			}
			if size += loggedSize(in, pdu); size > p.maxAppend {
				return nil, 0, refuse(http.StatusRequestEntityTooLarge, "M_TOO_LARGE",
					"the room's initial events exceed %d bytes", p.maxAppend)
			}
			r.apply(pdu, mark)
			out = append(out, pdu)
		}
		return out, size, nil
	case schemas.KindClientEvent:
		if r.lastEventID == "" {
			return nil, 0, refuse(http.StatusNotFound, "M_NOT_FOUND", "unknown room")
		}
		if in.Event.Type == spec.MRoomRedaction && in.Event.Redacts != "" && !canRedactOthers(r, in.Sender) {
			sender, err := p.senderOf(ctx, r, in.Event.Redacts)
			if err != nil {
				return nil, 0, err
			}
			if sender != "" && sender != in.Sender {
				return nil, 0, refuse(http.StatusForbidden, "M_FORBIDDEN", "you cannot redact other users' events")
			}
		}
		if err := checkState(r, in.Sender, in.Event); err != nil {
			return nil, 0, err
		}
		ev, err := authoriseJoin(r, p.signer.serverName, in.Sender, in.Event)
		if err != nil {
			return nil, 0, err
		}
		pdu, err := p.signer.build(r, in.Sender, ev, now)
		if err != nil {
			return nil, 0, err
		}
		r.apply(pdu, mark)
		return []gomatrixserverlib.PDU{pdu}, loggedSize(in, pdu), nil
	}
	return nil, 0, refuse(http.StatusBadRequest, "M_UNRECOGNIZED", "unknown intent kind")
}

// checkState applies Synapse's rules for a state event against the room's current
// state: a kick of a user who is not in the room (joined, invited or knocking) is
// refused; an event the same sender already set with the same content is not sent
// again, and its intent is answered with that event (*existing).
func checkState(r *room, sender string, ev *schemas.ProtoEvent) error {
	if ev.StateKey == nil {
		return nil
	}
	prev := r.state[gomatrixserverlib.StateKeyTuple{EventType: ev.Type, StateKey: *ev.StateKey}]
	if ev.Kick {
		membership := ""
		if prev != nil {
			membership, _ = prev.Membership()
		}
		if membership != spec.Join && membership != spec.Invite && membership != spec.Knock {
			return refuse(http.StatusForbidden, "M_FORBIDDEN", "The target user is not in the room")
		}
	}
	if prev == nil || string(prev.SenderID()) != sender {
		return nil
	}
	want, err := gomatrixserverlib.CanonicalJSON(ev.Content)
	if err != nil {
		return nil // the build refuses it
	}
	if have, err := gomatrixserverlib.CanonicalJSON(prev.Content()); err == nil && bytes.Equal(have, want) {
		return &existing{eventID: prev.EventID()}
	}
	return nil
}

// existing answers an intent with an event already in the room's current state: the
// same sender set the same content, so nothing new is built (Synapse's deduplication).
type existing struct{ eventID string }

func (e *existing) Error() string { return "the room's current state already holds " + e.eventID }

// senderOf returns the sender of a room's event, "" when the event is unknown (a
// redaction of an unknown event is accepted, as Synapse accepts it): from the room's
// memory for its latest events, else from Postgres once the projections in flight are
// done.
func (p *Persister) senderOf(ctx context.Context, r *room, eventID string) (string, error) {
	if sender, ok := r.senders.get(eventID); ok {
		return sender, nil
	}
	p.flushProjections(ctx)
	dctx, cancel := p.dbCtx(ctx)
	defer cancel()
	ev, err := p.cfg.DB.GetEvent(dctx, eventID)
	switch {
	case errors.Is(err, persist.ErrNotFound):
		return "", nil
	case err != nil:
		return "", err
	case ev.RoomID != r.id:
		return "", nil
	}
	return ev.Sender, nil
}

// publish appends a room's batch to its log subject, expecting the room's last
// sequence there: a second writer of the room fails instead of forking it.
func (p *Persister) publish(ra *roomAppend) jetstream.PubAckFuture {
	data, err := schemas.Marshal(ra.batch)
	if err != nil {
		panic(err) // a LogBatch always marshals
	}
	msg := nats.NewMsg(p.cfg.Topology.EventSubject(ra.room.id))
	msg.Data = data
	msg.Header.Set(streams.HeaderWriter, p.cfg.Name)
	msg.Header.Set(streams.HeaderRoom, ra.room.id)
	var members []string
	h := sha256.New()
	for _, e := range ra.batch.Events {
		h.Write([]byte(e.EventID))
		if bytes.Contains(e.JSON, []byte(`"m.room.member"`)) {
			if k := memberStateKey(e.JSON); k != "" {
				members = append(members, k)
			}
		}
	}
	if len(members) > 0 {
		msg.Header.Set(streams.HeaderMembers, strings.Join(members, " "))
	}
	// Re-publishing the same built batch (after a lost ack) is deduplicated.
	msg.Header.Set(jetstream.MsgIDHeader, base64.RawURLEncoding.EncodeToString(h.Sum(nil)))
	fut, err := p.cfg.JS.PublishMsgAsync(msg, jetstream.WithExpectLastSequencePerSubject(ra.room.lastSeq))
	if err != nil {
		return failedFuture{msg: msg, err: err}
	}
	return fut
}

func memberStateKey(js []byte) string {
	var e struct {
		Type     string `json:"type"`
		StateKey string `json:"state_key"`
	}
	if json.Unmarshal(js, &e) != nil || e.Type != spec.MRoomMember {
		return ""
	}
	return e.StateKey
}

// await waits, until deadline, for a room's append and notes whether the room was
// behind the log. Any other failure leaves the append's outcome unknown. An answer that
// has already arrived counts even past the deadline (an earlier room's wait used it up).
func (p *Persister) await(ctx context.Context, ra *roomAppend, deadline time.Time) error {
	ok, failed := ra.future.Ok(), ra.future.Err()
	if p.cfg.faults.ackLost != nil && p.cfg.faults.ackLost(ra.room.id) {
		ok, failed = nil, nil
	}
	var expired <-chan time.Time
	select {
	case ack := <-ok:
		ra.seq = ack.Sequence
		return nil
	case err := <-failed:
		return p.appendFailed(ra, err)
	default:
		timer := time.NewTimer(time.Until(deadline))
		defer timer.Stop()
		expired = timer.C
	}
	select {
	case ack := <-ok:
		ra.seq = ack.Sequence
		return nil
	case err := <-failed:
		return p.appendFailed(ra, err)
	case <-expired:
		return fmt.Errorf("append to room %s: no acknowledgement within %s", ra.room.id, p.cfg.AppendTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// appendFailed notes whether a failed append found the room behind the log.
func (p *Persister) appendFailed(ra *roomAppend, err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		ra.behind = true
		p.cfg.Log.Warn("room is behind the log; catching up", zap.String("room_id", ra.room.id))
	}
	return err
}

// project writes appended batches to Postgres, retrying while Postgres is unavailable:
// the events are safe in the log, so waiting only delays answers. behind marks the
// projection of answered appends (projectQueued): its own batches commit without
// waiting for the WAL flush, and a loss of earlier such commits is found and projected
// again from the log first (behind.go).
func (p *Persister) project(ctx context.Context, writer string, done []persist.BatchAt, behind bool) error {
	if len(done) == 0 {
		return nil
	}
	if p.cfg.ProjectionDelay > 0 {
		select {
		case <-time.After(p.cfg.ProjectionDelay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	backoff := 50 * time.Millisecond
	for {
		var err error
		if p.cfg.faults.project != nil {
			err = p.cfg.faults.project()
		}
		if err == nil {
			start := time.Now()
			dctx, cancel := p.dbCtx(ctx)
			if behind && writer == p.cfg.Name {
				err = p.cfg.DB.ProjectBehind(dctx, writer, done, p.projected)
			} else {
				err = p.cfg.DB.Project(dctx, writer, done)
			}
			cancel()
			projectSeconds.Observe(time.Since(start).Seconds())
		}
		if errors.Is(err, persist.ErrLostCommits) {
			p.cfg.Log.Warn("Postgres lost projected events; projecting them again from the log", zap.Error(err))
			if _, err = p.projectFromLog(ctx); err == nil {
				continue
			}
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return err
		}
		p.cfg.Log.Warn("projection failed; retrying", zap.Error(err), zap.Duration("backoff", backoff))
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	p.purgeLog(ctx, done)
	// Their intents' results are in Postgres: from now on a retry must ask for them,
	// whoever appended them (this writer behind its answers, or a catch-up).
	for _, b := range done {
		for _, e := range b.Batch.Events {
			if e.IntentID != "" {
				p.seen.add(e.IntentID)
			}
		}
	}
	maxSeq := persist.OwnMaxSeq(writer, done)
	if maxSeq == 0 {
		return nil
	}
	p.projected = max(p.projected, maxSeq)
	p.position.Set(float64(p.projected))
	notice, _ := json.Marshal(schemas.Projected{Writer: p.cfg.Name, Seq: maxSeq})
	if err := p.cfg.NC.Publish(p.cfg.Topology.ProjectedSubject(), notice); err != nil {
		// Sync feeds poll stream_positions when a notice goes missing.
		p.cfg.Log.Warn("projected notice not sent", zap.Error(err))
	}
	return nil
}

func (p *Persister) forgetRooms(appends []*roomAppend) {
	for _, ra := range appends {
		if ra.room != nil {
			delete(p.rooms, ra.room.id)
		}
	}
}

func (p *Persister) reply(j *job) {
	if err := streams.Reply(p.cfg.NC, p.cfg.Waiters, j.replyTo, j.in.ID, j.result); err != nil {
		p.cfg.Log.Warn("reply not sent", zap.String("intent", j.in.ID), zap.Error(err))
	}
}

func resultError(status int, code, msg string) *schemas.IntentResult {
	return &schemas.IntentResult{Error: &schemas.ResultError{Status: status, Code: code, Message: msg}}
}

// failedFuture stands in for an async publish that could not even be queued.
type failedFuture struct {
	msg *nats.Msg
	err error
}

func (f failedFuture) Ok() <-chan *jetstream.PubAck { return nil }
func (f failedFuture) Err() <-chan error {
	ch := make(chan error, 1)
	ch <- f.err
	return ch
}
func (f failedFuture) Msg() *nats.Msg { return f.msg }

// purgeLog removes from the log the messages of each purged room before its purged
// batch, once that batch is projected: the batch stays, so a replay deletes whatever
// of the room it meets. A failure is logged; the room's rows are gone all the same,
// and the next projection of the batch (a catch-up, a restart) purges again.
func (p *Persister) purgeLog(ctx context.Context, done []persist.BatchAt) {
	for _, b := range done {
		if !b.Batch.Purged {
			continue
		}
		stream, err := p.cfg.JS.Stream(ctx, p.cfg.Topology.EventsStream())
		if err == nil {
			err = stream.Purge(ctx, jetstream.WithPurgeSubject(p.cfg.Topology.EventSubject(b.Batch.RoomID)),
				jetstream.WithPurgeSequence(b.Seq))
		}
		if err != nil {
			p.cfg.Log.Warn("purged room's log messages not removed", zap.String("room_id", b.Batch.RoomID), zap.Error(err))
			continue
		}
		p.cfg.Log.Info("room purged from the log", zap.String("room_id", b.Batch.RoomID), zap.Uint64("seq", b.Seq))
	}
}
