package userstreams

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// OpTypingSet says whether the user is typing in the room (the write's key): TypingSet.
const OpTypingSet = "set"

// TypingSet is the body of OpTypingSet; TimeoutMS only matters when Typing.
type TypingSet struct {
	Typing    bool  `json:"typing"`
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
}

// Synapse's typing timeouts: the default when a client gives none, and the cap.
const (
	TypingDefaultTimeout = 30 * time.Second
	TypingMaxTimeout     = 120 * time.Second
)

// typingRetried bounds the write IDs Typing remembers (see Typing.handled).
const typingRetried = 4096

// restoredTimeout is how long a typer that a previous writer left in the stream stays:
// their own timeout is unknown, so they get the default (a test shortens it).
var restoredTimeout = TypingDefaultTimeout

// Typing is the typing stream: who types in each room, kept in the writer's memory with
// an expiry each, and appended as the room's whole list (Synapse's row) on every change:
// a start, a stop, an expiry. The stream itself is in memory; a typing notice matters
// for seconds. One writer, as in Synapse. The gateway has checked that the user is in
// the room.
type Typing struct {
	mu sync.Mutex
	// rooms holds, per room, each typer's expiry.
	rooms map[string]map[string]time.Time
	// dirty are rooms whose list changed without reaching the stream (an expiry whose
	// append failed): the next expiry round appends them again.
	dirty map[string]bool
	// handled remembers the last write IDs, oldest first. A write seen again was handled
	// before and its append may have failed (the writer retries the batch), so its
	// room's list is appended again even when nothing changes; the stream deduplicates
	// it when the first append did land.
	handled    map[string]struct{}
	handledIDs []string
	// wake tells the expiry loop that an earlier expiry may have come.
	wake chan struct{}
}

func (*Typing) Name() string { return schemas.StreamTyping }

func (t *Typing) init() {
	if t.rooms == nil {
		t.rooms, t.dirty, t.handled = map[string]map[string]time.Time{}, map[string]bool{}, map[string]struct{}{}
		t.wake = make(chan struct{}, 1)
	}
}

func (t *Typing) Prepare(_ context.Context, batch []*schemas.StreamWrite) ([]Outcome, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.init()
	now := time.Now()
	out := make([]Outcome, len(batch))
	earlier := false
	for i, w := range batch {
		var body TypingSet
		if w.Op != OpTypingSet {
			out[i] = Refuse(http.StatusBadRequest, "M_UNRECOGNIZED", "unknown typing operation %q", w.Op)
			continue
		}
		if err := json.Unmarshal(w.Body, &body); err != nil || !strings.HasPrefix(w.Key, "!") {
			out[i] = Refuse(http.StatusBadRequest, "M_BAD_JSON", "typing needs a room and a typing flag")
			continue
		}
		typers := t.rooms[w.Key]
		_, was := typers[w.User]
		if body.Typing {
			if typers == nil {
				typers = map[string]time.Time{}
				t.rooms[w.Key] = typers
			}
			timeout := min(max(time.Duration(body.TimeoutMS)*time.Millisecond, 0), TypingMaxTimeout)
			typers[w.User] = now.Add(timeout)
			earlier = true
		} else {
			delete(typers, w.User)
		}
		_, retried := t.handled[w.ID]
		t.remember(w.ID)
		// Starting again only moves the expiry: nobody needs to hear of it.
		if was != body.Typing || retried {
			out[i].Records = []Record{t.record(w.Key)}
		}
	}
	if earlier {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
	return out, nil
}

func (t *Typing) remember(id string) {
	if _, ok := t.handled[id]; ok {
		return
	}
	if len(t.handledIDs) >= typingRetried {
		delete(t.handled, t.handledIDs[0])
		t.handledIDs = t.handledIDs[1:]
	}
	t.handled[id] = struct{}{}
	t.handledIDs = append(t.handledIDs, id)
}

// record is the room's whole list of typers, sorted so equal lists are equal records.
func (t *Typing) record(room string) Record {
	users := make([]string, 0, len(t.rooms[room]))
	for u := range t.rooms[room] {
		users = append(users, u)
	}
	slices.Sort(users)
	if len(users) == 0 {
		delete(t.rooms, room)
	}
	data, _ := schemas.Marshal(schemas.TypingRecord{V: schemas.TypingVersion, Room: room, Users: users})
	return Record{Key: []string{room}, Data: data, Wake: []string{room}}
}

// Start restores the typers a previous writer left in the stream, then expires typers
// until ctx ends. A restored typer's timeout is unknown: it gets the default one, so
// nobody stays typing forever because the writer restarted.
func (t *Typing) Start(ctx context.Context, w *Writer) error {
	t.mu.Lock()
	t.init()
	t.mu.Unlock()
	topo := w.cfg.Topology
	last := map[string][]string{}
	_, err := streams.ReadStream(ctx, w.cfg.JS, topo.UserStreamName(t.Name()), topo.UserStreamWildcard(t.Name()), false,
		streams.LogRange{}, func(msgs []streams.RawMessage) error {
			for _, m := range msgs {
				if r, err := schemas.DecodeTyping(m.Data); err == nil {
					last[r.Room] = r.Users
				}
			}
			return nil
		})
	if err != nil {
		return err
	}
	until := time.Now().Add(restoredTimeout)
	restored := 0
	t.mu.Lock()
	for room, users := range last {
		for _, u := range users {
			if t.rooms[room] == nil {
				t.rooms[room] = map[string]time.Time{}
			}
			if _, ok := t.rooms[room][u]; !ok {
				t.rooms[room][u] = until
				restored++
			}
		}
	}
	t.mu.Unlock()
	if restored > 0 {
		w.log.Info("restored typers from the stream", zap.Int("typers", restored))
	}
	run, err := t.followLeaves(ctx, w, 0)
	if err != nil {
		return err
	}
	go t.expireLoop(ctx, w)
	go func() {
		var read uint64
		for {
			if run != nil {
				read, err = run(ctx)
			}
			if ctx.Err() != nil {
				return
			}
			w.log.Warn("typing writer's reader of the events log stopped; restarting", zap.Uint64("after", read), zap.Error(err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			run, err = t.followLeaves(ctx, w, read)
		}
	}()
	return nil
}

// followLeaves stops the typing of a user who leaves a room, or is kicked or banned
// from it, as Synapse does, rather than leave them typing until their timeout. It
// follows the EVENTS log from its end, headers only, and reads a message itself only
// when it changes the membership of someone typing in its room. The reader is created
// before it returns, so nothing appended after Start is missed. It reads from after
// the sequence after, or from the log's end when after is 0; run reads until ctx ends
// or the reader fails, and returns the last sequence it read, to go on from.
func (t *Typing) followLeaves(ctx context.Context, w *Writer, after uint64) (run func(context.Context) (uint64, error), err error) {
	topo := w.cfg.Topology
	stream, err := w.cfg.JS.Stream(ctx, topo.EventsStream())
	if err != nil {
		return nil, err
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{topo.EventsWildcard()},
		HeadersOnly:    true,
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	}
	if after > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, after+1
	}
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, err
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) (uint64, error) {
		defer it.Stop()
		read := after
		for {
			msg, err := it.Next(jetstream.NextContext(ctx))
			if err != nil {
				return read, err
			}
			meta, err := msg.Metadata()
			if err != nil {
				return read, err
			}
			room := msg.Headers().Get(streams.HeaderRoom)
			typing := t.typingAmong(room, strings.Fields(msg.Headers().Get(streams.HeaderMembers)))
			if len(typing) == 0 {
				read = meta.Sequence.Stream
				continue
			}
			raw, err := stream.GetMsg(ctx, meta.Sequence.Stream)
			if err != nil {
				return read, err
			}
			read = meta.Sequence.Stream
			batch, err := schemas.DecodeLogBatch(raw.Data)
			if err != nil {
				w.log.Warn("undecodable events log message", zap.Uint64("seq", meta.Sequence.Stream), zap.Error(err))
				continue
			}
			t.stopLeavers(room, typing, batch)
		}
	}, nil
}

// typingAmong returns those of users who type in room.
func (t *Typing) typingAmong(room string, users []string) map[string]bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out map[string]bool
	for _, u := range users {
		if _, ok := t.rooms[room][u]; ok {
			if out == nil {
				out = map[string]bool{}
			}
			out[u] = true
		}
	}
	return out
}

// stopLeavers drops from room's typers those of typing whose last membership in batch
// is not a join; the expiry loop appends the room's list.
func (t *Typing) stopLeavers(room string, typing map[string]bool, batch *schemas.LogBatch) {
	last := map[string]string{}
	for _, ev := range batch.Events {
		var e struct {
			Type     string  `json:"type"`
			StateKey *string `json:"state_key"`
			Content  struct {
				Membership string `json:"membership"`
			} `json:"content"`
		}
		if json.Unmarshal(ev.JSON, &e) == nil && e.Type == "m.room.member" && e.StateKey != nil && typing[*e.StateKey] {
			last[*e.StateKey] = e.Content.Membership
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for u, m := range last {
		if _, ok := t.rooms[room][u]; ok && m != "join" {
			delete(t.rooms[room], u)
			t.dirty[room] = true
		}
	}
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// expireLoop appends a room's list whenever one of its typers times out.
func (t *Typing) expireLoop(ctx context.Context, w *Writer) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if wait, ok := t.nextExpiry(); ok {
			timer.Reset(wait)
		} else {
			timer.Reset(time.Hour)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.wake:
			continue
		case <-timer.C:
		}
		var rooms []string
		_, err := w.AppendFunc(ctx, func() []Record {
			var recs []Record
			recs, rooms = t.expire(time.Now())
			return recs
		})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.log.Warn("typing expiry not appended; retrying", zap.Strings("rooms", rooms), zap.Error(err))
			t.mu.Lock()
			for _, r := range rooms {
				t.dirty[r] = true
			}
			t.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// nextExpiry is how long until the next typer times out, or a dirty room is due.
func (t *Typing) nextExpiry() (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.dirty) > 0 {
		return 0, true
	}
	var next time.Time
	for _, typers := range t.rooms {
		for _, until := range typers {
			if next.IsZero() || until.Before(next) {
				next = until
			}
		}
	}
	if next.IsZero() {
		return 0, false
	}
	return max(time.Until(next), 0), true
}

// expire drops the typers whose time is up and returns the records of the rooms that
// changed, dirty ones included.
func (t *Typing) expire(now time.Time) ([]Record, []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for room, typers := range t.rooms {
		for u, until := range typers {
			if !until.After(now) {
				delete(typers, u)
				t.dirty[room] = true
			}
		}
	}
	rooms := make([]string, 0, len(t.dirty))
	recs := make([]Record, 0, len(t.dirty))
	for room := range t.dirty {
		rooms = append(rooms, room)
		recs = append(recs, t.record(room))
	}
	clear(t.dirty)
	return recs, rooms
}

// Project stores nothing: the stream lives in memory and so do its readers' views.
func (*Typing) Project(context.Context, pgx.Tx, []streams.RawMessage) error { return nil }

func (*Typing) Row(m streams.RawMessage) any {
	r, err := schemas.DecodeTyping(m.Data)
	if err != nil {
		return nil
	}
	return schemas.TypingRow{Room: r.Room, Users: r.Users}
}
