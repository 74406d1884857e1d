// Package syncfeed follows the EVENTS log for one process and tracks its visible
// position: the largest log sequence up to which every message is projected into
// Postgres. /sync answers up to that position and nothing beyond, and long-polls wait
// here for it to pass their token.
//
// The rule (DESIGN.md invariant 5). Every log message is appended by one writer and
// projected by that same writer shortly after; a writer's stream_positions row and its
// "<ns>.projected" notices say that every message it appended with sequence <= N is in
// Postgres. Writers project independently, so message 7 of writer A can be in Postgres
// while message 5 of writer B is not yet. The visible position therefore advances to the
// largest sequence S such that every message with sequence <= S is projected by its
// writer: one slow writer holds the position back, and a sync token never moves past an
// event that would become readable later. This is Synapse's "minimum over writers"
// rule applied to the log's single global order, and tighter than it: an idle writer
// does not hold anyone back, because only messages actually in the log are waited for.
//
// Notices make the position move within a millisecond of a projection. Polling backs
// them up while a message stays pending: stream_positions covers lost notices and
// restarts, and looking the message itself up in events covers a message projected by
// another writer than its appender, which no position will ever cover.
package syncfeed

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// wakeupSeconds is the sync wake-up latency, by stream: from a message's append to the
// log to its becoming visible, which wakes the long polls it concerns. It includes the
// wait for the writer's projection into Postgres.
var wakeupSeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "ganglion_sync_wakeup_seconds",
	Help:    "From a message's append to the log to the waking of the /sync long polls it concerns.",
	Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
}, []string{"stream"})

// Defaults of the tunables in Config.
const (
	DefaultPollInterval = 250 * time.Millisecond
	DefaultMaxPending   = 1 << 16
	DefaultRecent       = 4096
)

// stuckReport is how long a message may wait for its projection before the feed logs
// which writer holds the position back, and how often it repeats that.
const stuckReport = 10 * time.Second

// Config is what a feed needs. JS, NC and DB are required.
type Config struct {
	JS       jetstream.JetStream
	NC       *nats.Conn
	Topology streams.Topology
	DB       *persist.DB
	Log      *zap.Logger
	// Stream is the per-user stream the feed follows (schemas.Stream*); empty means the
	// EVENTS log.
	Stream string
	// Observe, when set, is handed every visible message with its body, in order
	// (the typing stream keeps its state in memory this way). Without it the feed
	// reads headers only.
	Observe func(seq uint64, h nats.Header, data []byte)
	// Writers is stream_writers.events. A configured writer without a stream_positions
	// row has projected nothing yet, so the feed starts at the beginning of the log
	// rather than skip its first messages. Writers that are not configured are known
	// only from their rows.
	Writers []string
	// PollInterval is how often stream_positions is read while a message waits for its
	// projection (lost notice, restart). Zero means DefaultPollInterval.
	PollInterval time.Duration
	// MaxPending bounds the messages held while they wait for projections; reading the
	// log pauses while it is full. Zero means DefaultMaxPending.
	MaxPending int
	// Recent is how many visible messages are remembered, so Wait can tell from memory
	// whether a token slightly behind the position has anything new for its caller.
	// Zero means DefaultRecent.
	Recent int
}

// entry is what the feed keeps of one log message: its routing headers, never its body.
type entry struct {
	seq    uint64
	writer string
	// keys say whom the message concerns: room IDs (its room's members), user IDs,
	// or streams.WakeEveryone.
	keys []string
	// found is set when polling found the message itself in Postgres.
	found bool
	// appended is when the log stored the message.
	appended time.Time
	// header and data are kept only for an Observe callback.
	header nats.Header
	data   []byte
}

// checkBatch bounds how many pending messages one poll looks up in Postgres.
const checkBatch = 256

// waiter is one blocked Wait or Notify call.
type waiter struct {
	since uint64
	keys  []string
	// ch receives one signal when the waiter is woken; several feeds may share it.
	ch    chan<- struct{}
	woken bool
}

// Feed is the sync feed of one process. Create it with New, then call Run.
type Feed struct {
	cfg Config
	log *zap.Logger
	// wakeup observes each message's time from its append to its waking of long polls.
	wakeup prometheus.Observer

	// kick wakes the poller when a message starts waiting; space wakes the log reader
	// when pending drops below MaxPending.
	kick  chan struct{}
	space chan struct{}

	mu sync.Mutex
	// pos is the visible position; next is the sequence the log reader resumes at.
	pos, next uint64
	// projected is, per writer, the sequence up to which its messages are in Postgres.
	projected map[string]uint64
	// pending are the messages after pos, in log order, not all projected yet.
	pending []entry
	// recent holds the last visible messages, a ring starting at recentHead. Every
	// visible message with sequence > recentFloor is in it. latest indexes it: the
	// sequence of the newest remembered message concerning each key, so a /sync asks
	// about its keys in one map lookup each rather than by scanning the ring.
	recent      []entry
	recentHead  int
	recentFloor uint64
	latest      map[string]uint64
	byKey       map[string]map[*waiter]struct{}
	// waiters holds every waiter, for messages that concern everyone.
	waiters map[*waiter]struct{}
	// visible mirrors pos for WaitPosition.
	visible streams.Position
}

// streamPositionsName is the stream_positions name of what the feed follows.
func (c *Config) streamPositionsName() string {
	if c.Stream == "" {
		return persist.EventsStream
	}
	return c.Stream
}

// memory reports whether the stream followed is never projected into Postgres: its
// messages are visible as soon as they are read.
func (c *Config) memory() bool {
	return c.Stream != "" && streams.UserStreams[c.Stream].Memory
}

// New reads how far every writer has projected and sets the visible position there, so
// Position is meaningful before Run has read anything.
func New(ctx context.Context, d Config) (*Feed, error) {
	if d.JS == nil || d.NC == nil || d.DB == nil {
		return nil, errors.New("syncfeed: JS, NC and DB are required")
	}
	if d.Log == nil {
		d.Log = zap.NewNop()
	}
	if d.PollInterval <= 0 {
		d.PollInterval = DefaultPollInterval
	}
	if d.MaxPending <= 0 {
		d.MaxPending = DefaultMaxPending
	}
	if d.Recent <= 0 {
		d.Recent = DefaultRecent
	}
	if d.Stream != "" {
		if _, ok := streams.UserStreams[d.Stream]; !ok {
			return nil, fmt.Errorf("syncfeed: unknown stream %q", d.Stream)
		}
	}
	var positions map[string]uint64
	var start uint64
	if d.memory() {
		// Who is typing now is whatever the stream holds: read all of it.
		positions = map[string]uint64{}
	} else {
		var err error
		positions, err = d.DB.StreamPositions(ctx, d.streamPositionsName())
		if err != nil {
			return nil, fmt.Errorf("syncfeed: read stream positions: %w", err)
		}
		start = startPosition(positions, d.Writers)
	}
	f := &Feed{
		cfg:         d,
		log:         d.Log.Named("syncfeed"),
		kick:        make(chan struct{}, 1),
		space:       make(chan struct{}, 1),
		pos:         start,
		next:        start + 1,
		projected:   positions,
		recent:      make([]entry, 0, d.Recent),
		recentFloor: start,
		latest:      map[string]uint64{},
		byKey:       map[string]map[*waiter]struct{}{},
		waiters:     map[*waiter]struct{}{},
		wakeup:      wakeupSeconds.WithLabelValues(cmp.Or(d.Stream, schemas.StreamEvents)),
	}
	f.visible.Set(start)
	if d.Stream != "" {
		f.log = f.log.With(zap.String("stream", d.Stream))
	}
	f.log.Info("sync feed starts", zap.Uint64("position", start), zap.Int("writers", len(positions)))
	return f, nil
}

// startPosition is the minimum over writers of their projected position: every message
// at or below it is in Postgres whoever wrote it. A configured writer without a row
// counts as 0.
func startPosition(positions map[string]uint64, writers []string) uint64 {
	if len(positions) == 0 {
		return 0
	}
	for _, w := range writers {
		if _, ok := positions[w]; !ok {
			return 0
		}
	}
	first := true
	var lo uint64
	for _, p := range positions {
		if first || p < lo {
			lo, first = p, false
		}
	}
	return lo
}

// Received is the sequence of the last log message this feed has read, visible or
// not: what the log held, as this process heard of it.
func (f *Feed) Received() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.next - 1
}

// Position is the visible position: every log message up to it is in Postgres.
func (f *Feed) Position() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pos
}

// Wait returns as soon as the visible position passes since with a message of one of
// rooms or one naming userID in its members header (a membership change of the user),
// or when ctx ends. It returns the visible position at that moment. When since is
// further behind than the feed remembers, it returns at once: the caller has to look in
// Postgres anyway.
func (f *Feed) Wait(ctx context.Context, since uint64, userID string, rooms []string) uint64 {
	keys := rooms
	if userID != "" {
		keys = append(slices.Clip(rooms), userID)
	}
	ch := make(chan struct{}, 1)
	stop := f.Notify(since, keys, ch)
	defer stop()
	select {
	case <-ch:
	case <-ctx.Done():
	}
	return f.Position()
}

// WaitPosition returns once the visible position reaches seq, whatever the messages
// concern, or when ctx ends.
func (f *Feed) WaitPosition(ctx context.Context, seq uint64) {
	_ = f.visible.Wait(ctx, seq)
}

// Notify sends one signal on ch (without blocking: give it room for one) as soon as the
// visible position passes since with a message concerning one of keys (user and room
// IDs), or at once when that already happened or since is further behind than the
// feed remembers. stop forgets the request; several feeds may signal the same ch, so a
// long-poll waits on every stream at once.
func (f *Feed) Notify(since uint64, keys []string, ch chan<- struct{}) (stop func()) {
	w := &waiter{since: since, keys: keys, ch: ch}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pos > since && (since < f.recentFloor || f.recentHasLocked(since, keys)) {
		signal(ch)
		return func() {}
	}
	f.addWaiterLocked(w)
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.removeLocked(w)
	}
}

// NewSince reports, from memory, whether a visible message after since concerns one of
// keys; unknown when since is older than the feed remembers. A /sync with nothing new
// for its user is answered without asking Postgres.
func (f *Feed) NewSince(since uint64, keys []string) (changed, known bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if since >= f.pos {
		return false, true
	}
	if since < f.recentFloor {
		return true, false
	}
	return f.recentHasLocked(since, keys), true
}

// ChangedKeys returns which of keys a remembered visible message after since concerns
// (every one, for a message to everyone), in one pass; known is false when since is
// older than the feed remembers.
func (f *Feed) ChangedKeys(since uint64, keys []string) (changed map[string]bool, known bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if since >= f.pos {
		return nil, true
	}
	if since < f.recentFloor {
		return nil, false
	}
	return f.concernedLocked(since, keys, false), true
}

func signal(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// recentHasLocked reports whether a remembered visible message after since concerns one
// of keys.
func (f *Feed) recentHasLocked(since uint64, keys []string) bool {
	return len(f.concernedLocked(since, keys, true)) > 0
}

// concernedLocked returns which of keys a remembered visible message after since
// concerns (every one, for a message to everyone); with first it stops at the first
// key found.
func (f *Feed) concernedLocked(since uint64, keys []string, first bool) map[string]bool {
	var changed map[string]bool
	if f.latest[streams.WakeEveryone] > since {
		changed = make(map[string]bool, len(keys))
		for _, k := range keys {
			changed[k] = true
		}
		return changed
	}
	for _, k := range keys {
		if f.latest[k] > since {
			if changed == nil {
				changed = map[string]bool{}
			}
			changed[k] = true
			if first {
				break
			}
		}
	}
	return changed
}

func (f *Feed) addWaiterLocked(w *waiter) {
	f.waiters[w] = struct{}{}
	for _, k := range w.keys {
		set := f.byKey[k]
		if set == nil {
			set = map[*waiter]struct{}{}
			f.byKey[k] = set
		}
		set[w] = struct{}{}
	}
}

// wakeLocked signals w and forgets it; waking twice is harmless.
func (f *Feed) wakeLocked(w *waiter) {
	if w.woken {
		return
	}
	w.woken = true
	signal(w.ch)
	f.removeLocked(w)
}

func (f *Feed) removeLocked(w *waiter) {
	delete(f.waiters, w)
	for _, k := range w.keys {
		if set := f.byKey[k]; set != nil {
			delete(set, w)
			if len(set) == 0 {
				delete(f.byKey, k)
			}
		}
	}
}

// add records a message read from the log.
func (f *Feed) add(e entry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e.seq < f.next {
		return // already seen: the reader restarted behind its position
	}
	f.next = e.seq + 1
	wasIdle := len(f.pending) == 0
	f.pending = append(f.pending, e)
	f.advanceLocked()
	if wasIdle && len(f.pending) > 0 {
		select {
		case f.kick <- struct{}{}:
		default:
		}
	}
}

// setProjected raises the projected positions of writers and advances.
func (f *Feed) setProjected(positions map[string]uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for w, p := range positions {
		if p > f.projected[w] {
			f.projected[w] = p
		}
	}
	f.advanceLocked()
}

// advanceLocked moves the visible position over every leading pending message whose
// writer has projected it, and wakes the waiters those messages concern.
func (f *Feed) advanceLocked() {
	n := 0
	memory := f.cfg.memory()
	for n < len(f.pending) && (memory || f.pending[n].found || f.projected[f.pending[n].writer] >= f.pending[n].seq) {
		n++
	}
	if n == 0 {
		return
	}
	wasFull := len(f.pending) >= f.cfg.MaxPending
	visible := f.pending[:n]
	f.pos = visible[n-1].seq
	f.visible.Set(f.pos)
	now := time.Now()
	for i := range visible {
		e := &visible[i]
		if !e.appended.IsZero() {
			f.wakeup.Observe(now.Sub(e.appended).Seconds())
		}
		if f.cfg.Observe != nil {
			f.cfg.Observe(e.seq, e.header, e.data)
			e.header, e.data = nil, nil
		}
		f.remember(*e)
		for _, k := range e.keys {
			set := f.byKey[k]
			if k == streams.WakeEveryone {
				set = f.waiters
			}
			for w := range set {
				if e.seq > w.since {
					f.wakeLocked(w)
				}
			}
		}
	}
	clear(visible) // drop the strings now, not when the backing array is reallocated
	f.pending = f.pending[n:]
	if len(f.pending) == 0 {
		f.pending = nil
	}
	if wasFull && len(f.pending) < f.cfg.MaxPending {
		select {
		case f.space <- struct{}{}:
		default:
		}
	}
}

// remember appends a visible message to the ring of recent ones and to the index; a
// key whose newest message leaves the ring leaves the index, since every token the ring
// answers for is past that message.
func (f *Feed) remember(e entry) {
	for _, k := range e.keys {
		f.latest[k] = e.seq
	}
	if len(f.recent) < cap(f.recent) {
		f.recent = append(f.recent, e)
		return
	}
	old := &f.recent[f.recentHead]
	for _, k := range old.keys {
		if f.latest[k] == old.seq {
			delete(f.latest, k)
		}
	}
	f.recentFloor = old.seq
	f.recent[f.recentHead] = e
	f.recentHead = (f.recentHead + 1) % len(f.recent)
}

// Run follows the log, listens for projection notices and polls stream_positions while
// something waits for its projection. It returns when ctx ends.
func (f *Feed) Run(ctx context.Context) error {
	subject := f.cfg.Topology.ProjectedSubject()
	if f.cfg.Stream != "" {
		subject = f.cfg.Topology.UserStreamProjectedSubject(f.cfg.Stream)
	}
	sub, err := f.cfg.NC.Subscribe(subject, f.onProjected)
	if err != nil {
		return fmt.Errorf("syncfeed: subscribe to projection notices: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	var wg sync.WaitGroup
	wg.Go(func() { f.pollLoop(ctx) })
	f.followLoop(ctx)
	wg.Wait()
	return nil
}

func (f *Feed) onProjected(m *nats.Msg) {
	var p schemas.Projected
	if err := json.Unmarshal(m.Data, &p); err != nil || p.Writer == "" {
		f.log.Warn("ignoring malformed projection notice", zap.ByteString("data", m.Data))
		return
	}
	f.setProjected(map[string]uint64{p.Writer: p.Seq})
}

// pollLoop looks in Postgres while the oldest pending message stays pending for a whole
// interval: a notice was lost or sent before this feed subscribed, or the message was
// projected by another writer than its appender (a room caught up after its shard
// moved), which no position of its appender will ever cover. It reads stream_positions
// and looks the first pending messages up themselves. It sleeps on kick while nothing
// is pending, so an idle feed costs no queries.
func (f *Feed) pollLoop(ctx context.Context) {
	interval := f.cfg.PollInterval
	timer := time.NewTimer(interval)
	defer timer.Stop()
	var (
		lastHead   uint64
		stuckSince time.Time
		reported   time.Time
	)
	for {
		head, writer, ok := f.head()
		if !ok {
			lastHead, stuckSince = 0, time.Time{}
			select {
			case <-ctx.Done():
				return
			case <-f.kick:
				continue
			}
		}
		if head != lastHead {
			lastHead, stuckSince = head, time.Now()
		} else {
			if err := f.poll(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				f.log.Warn("poll projections", zap.Error(err))
			}
			if held := time.Since(stuckSince); held >= stuckReport && time.Since(reported) >= stuckReport {
				reported = time.Now()
				f.log.Warn("sync position held back by a writer that has not projected its message",
					zap.String("writer", writer), zap.Uint64("seq", head), zap.Duration("for", held))
			}
		}
		timer.Reset(interval)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
	}
}

// poll reads the writers' positions, then looks up the pending messages they do not
// cover.
func (f *Feed) poll(ctx context.Context) error {
	positions, err := f.cfg.DB.StreamPositions(ctx, f.cfg.streamPositionsName())
	if err != nil {
		return err
	}
	f.setProjected(positions)
	if f.cfg.Stream != "" {
		// A per-user stream's records are projected by their own writer only.
		return nil
	}
	f.mu.Lock()
	var seqs []uint64
	for i := 0; i < len(f.pending) && len(seqs) < checkBatch; i++ {
		if e := &f.pending[i]; !e.found && f.projected[e.writer] < e.seq {
			seqs = append(seqs, e.seq)
		}
	}
	f.mu.Unlock()
	if len(seqs) == 0 {
		return nil
	}
	found, err := f.cfg.DB.ProjectedSeqs(ctx, seqs)
	if err != nil {
		return err
	}
	f.markFound(found)
	return nil
}

// markFound records pending messages found in Postgres and advances.
func (f *Feed) markFound(seqs []uint64) {
	if len(seqs) == 0 {
		return
	}
	set := make(map[uint64]struct{}, len(seqs))
	for _, s := range seqs {
		set[s] = struct{}{}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.pending {
		if _, ok := set[f.pending[i].seq]; ok {
			f.pending[i].found = true
		}
	}
	f.advanceLocked()
}

// head returns the oldest pending message.
func (f *Feed) head() (seq uint64, writer string, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pending) == 0 {
		return 0, "", false
	}
	return f.pending[0].seq, f.pending[0].writer, true
}

// followLoop reads the log until ctx ends, recreating the reader after failures.
func (f *Feed) followLoop(ctx context.Context) {
	for {
		err := f.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		f.log.Warn("events log reader stopped; restarting", zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// followed names the stream the feed follows, and the subjects it reads of it.
func (f *Feed) followed() (stream, subject string) {
	t := f.cfg.Topology
	if f.cfg.Stream != "" {
		return t.UserStreamName(f.cfg.Stream), t.UserStreamWildcard(f.cfg.Stream)
	}
	return t.EventsStream(), t.EventsWildcard()
}

// End is the sequence of the last message of the stream the feed follows, as the
// server holds it now (one request to it), or 0 when it holds none: the last
// sequence of an empty stream, or of one whose messages all expired (typing's), is
// no message the feed can read, so it is nothing to wait for.
func (f *Feed) End(ctx context.Context) (uint64, error) {
	name, _ := f.followed()
	s, err := f.cfg.JS.Stream(ctx, name)
	if err != nil {
		return 0, err
	}
	if st := s.CachedInfo().State; st.Msgs > 0 {
		return st.LastSeq, nil
	}
	return 0, nil
}

// follow reads the log from where the feed stands with an ordered consumer that gets
// headers only: the feed routes by headers and never needs the events themselves.
func (f *Feed) follow(ctx context.Context) error {
	f.mu.Lock()
	start := f.next
	f.mu.Unlock()
	streamName, subject := f.followed()
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		HeadersOnly:    f.cfg.Observe == nil,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	if start > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start
	}
	cons, err := f.cfg.JS.OrderedConsumer(ctx, streamName, cfg)
	if err != nil {
		return err
	}
	it, err := cons.Messages()
	if err != nil {
		return err
	}
	defer it.Stop()
	for {
		if err := f.waitForSpace(ctx); err != nil {
			return err
		}
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return err
		}
		meta, err := msg.Metadata()
		if err != nil {
			return err
		}
		e := f.entryOf(meta.Sequence.Stream, msg.Headers())
		e.appended = meta.Timestamp
		if f.cfg.Observe != nil {
			e.header, e.data = msg.Headers(), msg.Data()
		}
		f.add(e)
	}
}

// entryOf reads a message's routing headers. A message without a writer cannot be
// matched to any projection; holding the position for it forever would stop sync for
// everyone, so it counts as projected and the anomaly is logged.
func (f *Feed) entryOf(seq uint64, h nats.Header) entry {
	e := entry{seq: seq, writer: h.Get(streams.HeaderWriter)}
	if f.cfg.Stream != "" {
		e.keys = strings.Fields(h.Get(streams.HeaderKeys))
	} else {
		room := h.Get(streams.HeaderRoom)
		if room != "" {
			e.keys = append(e.keys, room)
		}
		if members := strings.Fields(h.Get(streams.HeaderMembers)); len(members) > 0 {
			e.keys = append(e.keys, members...)
			if room != "" {
				e.keys = append(e.keys, streams.MembershipKey(room))
			}
		}
	}
	if e.writer == "" && !f.cfg.memory() {
		f.log.Error("log message without a writer header; not waiting for its projection",
			zap.Uint64("seq", seq), zap.Strings("keys", e.keys))
		f.mu.Lock()
		f.projected[""] = seq
		f.mu.Unlock()
	}
	return e
}

// waitForSpace blocks while pending is full, so a writer that stops projecting bounds
// the memory of the feed instead of growing it.
func (f *Feed) waitForSpace(ctx context.Context) error {
	for {
		f.mu.Lock()
		full := len(f.pending) >= f.cfg.MaxPending
		f.mu.Unlock()
		if !full {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-f.space:
		}
	}
}
