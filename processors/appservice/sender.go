package appservice

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/tidwall/gjson"
	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/appservices"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// Transactions, as Synapse sends them: at most 100 events each, and a service that does
// not answer 200 is tried again after 1, 2, 4 ... seconds, at most maxBackoff apart.
const (
	maxTxnEvents = 100
	firstBackoff = time.Second
	maxBackoff   = 30 * time.Second
)

// Projection is waited for before a batch's rooms are read from Postgres (the sync feed
// of the events log).
type Projection interface {
	WaitPosition(ctx context.Context, seq uint64)
}

// Config is what the sender needs.
type Config struct {
	Services   *Services
	Topology   streams.Topology
	JS         jetstream.JetStream
	DB         *persist.DB
	Projection Projection
	// Client reaches the services (bounded timeouts, ip_range_blacklist).
	Client *http.Client
	// Ephemeral queues the ephemeral events of the services that asked for them; nil
	// sends none.
	Ephemeral *Ephemeral
	// Control, when set, takes operators' rewinds of the services' consumers.
	Control *nats.Conn
	Log     *zap.Logger
	// Sleep waits between attempts; nil is a timer.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Sender delivers the events log to the application services with a url: one durable
// consumer and one runner per service, so a service that is down or slow holds up only
// itself, and its consumer keeps its place while it is.
type Sender struct {
	cfg   Config
	store appservices.Store
}

// NewSender returns a sender; Run starts it.
func NewSender(cfg Config) *Sender {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Sleep == nil {
		cfg.Sleep = streams.Sleep
	}
	cfg.Log = cfg.Log.Named("appservice")
	return &Sender{cfg: cfg, store: appservices.Store{Pool: cfg.DB.Pool}}
}

var unsafeConsumerChars = regexp.MustCompile(`[^A-Za-z0-9_-]`)

// ConsumerName is the durable consumer of a service: its id with what NATS does not
// take in a name replaced, and a hash of the id that keeps two such ids apart.
func ConsumerName(serviceID string) string {
	h := uint32(2166136261)
	for i := range len(serviceID) {
		h = (h ^ uint32(serviceID[i])) * 16777619
	}
	return "appservice_" + unsafeConsumerChars.ReplaceAllString(serviceID, "_") + "_" + strconv.FormatUint(uint64(h), 36)
}

// Run delivers to every service with a url until ctx ends.
func (s *Sender) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(s.cfg.Services.All()))
	for _, svc := range s.cfg.Services.All() {
		if svc.URL == "" {
			continue
		}
		wg.Go(func() {
			if err := s.runService(ctx, svc); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func (s *Sender) runService(ctx context.Context, svc *Service) error {
	st, known, err := s.store.Load(ctx, svc.ID)
	if err != nil {
		return err
	}
	t := s.cfg.Topology
	if !known {
		// A new service gets what happens from now on.
		info, err := t.EventsInfo(ctx, s.cfg.JS)
		if err != nil {
			return fmt.Errorf("appservice %s: %w", svc.ID, err)
		}
		st.Delivered = persist.Pos{Seq: info.State.LastSeq, Idx: wholeMessage}
		if err := s.store.Save(ctx, svc.ID, st); err != nil {
			return err
		}
	}
	// The consumer starts where Postgres says; the last message delivered from is read
	// again, for the events of it not delivered yet.
	name := ConsumerName(svc.ID)
	start := max(st.Delivered.Seq, 1)
	if st.Delivered.Idx == wholeMessage {
		start = st.Delivered.Seq + 1
	}
	cons, _, err := t.OpenDownstream(ctx, s.cfg.JS, name, start, 4*maxTxnEvents)
	if err != nil {
		return fmt.Errorf("appservice %s: %w", svc.ID, err)
	}
	w := &serviceSender{s: s, svc: svc, st: st, saved: time.Now(), log: s.cfg.Log.With(zap.String("service", svc.ID))}
	w.log.Info("appservice sender started", zap.Uint64("from", start), zap.Uint64("last_txn_id", st.LastTxnID))
	runner := &streams.Runner{
		Name:              name,
		Consumer:          cons,
		JS:                s.cfg.JS,
		DeadLetterSubject: s.cfg.Topology.DeadLetterSubject(name),
		MaxBatch:          maxTxnEvents,
		MaxDeliver:        5,
		Log:               w.log,
		Control:           s.cfg.Control,
		RewindSubject:     t.RewindSubject(),
		SideEffects:       "transactions of these events to the application service " + svc.ID,
	}
	if q := s.cfg.Ephemeral.queue(svc.ID); q != nil {
		ctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { w.sendEphemeral(ctx, q) })
		defer wg.Wait()
		defer cancel()
	}
	return runner.Run(ctx, w.handle)
}

// serviceSender is the runner's handler for one service; the runner calls it for one
// batch at a time.
type serviceSender struct {
	s   *Sender
	svc *Service
	// mu is held while a transaction is made and sent (the runner's batches and the
	// ephemeral events take turns) and guards st and saved.
	mu sync.Mutex
	// rooms is what the sender knows of rooms' interest to the service.
	rooms roomInterests
	// st is the service's state; its Delivered moves past messages with nothing for
	// the service before it is saved (saved is when it last was).
	st    appservices.State
	saved time.Time
	log   *zap.Logger
}

// wholeMessage is the event index of a position that covers its message whole.
const wholeMessage = 1 << 30

// positionSave is how often a position moved only by messages with nothing for the
// service is saved: a restart reads those again, and finds nothing again.
const positionSave = time.Second

// loggedEvent is an event of the log, with its position.
type loggedEvent struct {
	pos     persist.Pos
	roomID  string
	sender  string
	eventID string
	// member is the state_key of a membership event.
	member string
	// pdu is the event as the log holds it.
	pdu json.RawMessage
}

// handle sends the service the events of the batch it is interested in, in
// transactions of at most maxTxnEvents, each resent until the service answers 200. A
// transaction left unanswered by a stop is sent first, with its ID and body.
func (w *serviceSender) handle(ctx context.Context, msgs []jetstream.Msg) []error {
	fail := func(err error) []error {
		errs := make([]error, len(msgs))
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.sendPending(ctx); err != nil {
		return fail(err)
	}
	var events []loggedEvent
	errs := make([]error, len(msgs))
	var last uint64
	for i, m := range msgs {
		meta, err := m.Metadata()
		if err != nil {
			errs[i] = streams.Permanent(err)
			continue
		}
		seq := meta.Sequence.Stream
		last = max(last, seq)
		if seq < w.st.Delivered.Seq {
			continue
		}
		batch, err := schemas.DecodeLogBatch(m.Data())
		if err != nil {
			errs[i] = streams.Permanent(err)
			continue
		}
		for idx, le := range batch.Events {
			pos := persist.Pos{Seq: seq, Idx: idx}
			if !w.st.Delivered.Less(pos) {
				continue
			}
			f := gjson.GetManyBytes(le.JSON, "type", "sender", "state_key", "content.membership")
			ev := loggedEvent{pos: pos, roomID: batch.RoomID, sender: f[1].String(), eventID: le.EventID, pdu: le.JSON}
			if f[0].String() == "m.room.member" && f[2].Type == gjson.String {
				ev.member = f[2].String()
				if w.svc.OwnsUser(ev.member) {
					w.rooms.member(ev.roomID, ev.member, f[3].String() == "join")
				}
			}
			events = append(events, ev)
		}
	}
	interested, err := w.interesting(ctx, events, last)
	if err != nil {
		return fail(streams.Unavailable(err))
	}
	for len(interested) > 0 {
		n := min(len(interested), maxTxnEvents)
		if err := w.send(ctx, interested[:n], nil); err != nil {
			return fail(err)
		}
		interested = interested[n:]
	}
	if end := (persist.Pos{Seq: last, Idx: wholeMessage}); w.st.Delivered.Less(end) {
		w.st.Delivered = end
		if time.Since(w.saved) > positionSave {
			if err := w.s.store.Save(ctx, w.svc.ID, w.st); err != nil {
				return fail(streams.Unavailable(err))
			}
			w.saved = time.Now()
		}
	}
	return errs
}

// interesting keeps the events the service is interested in: sent by or about one of
// its users, or in a room of interest (interestingRooms), as of the log projected up
// to the batch's end.
func (w *serviceSender) interesting(ctx context.Context, events []loggedEvent, last uint64) ([]loggedEvent, error) {
	if len(events) == 0 {
		return nil, nil
	}
	var list []string
	for _, ev := range events {
		list = append(list, ev.roomID)
	}
	rooms, err := w.interestingRooms(ctx, list, last)
	if err != nil {
		return nil, err
	}
	var out []loggedEvent
	for _, ev := range events {
		if rooms[ev.roomID] || w.svc.OwnsUser(ev.sender) || (ev.member != "" && w.svc.OwnsUser(ev.member)) {
			out = append(out, ev)
		}
	}
	return out, nil
}

// interestingRooms tells which of rooms the service is interested in: a room of its
// rooms namespace, or a room with an alias of its aliases namespace, or one of its
// users is joined to. What is not known of a room yet is read from Postgres once the
// log is projected up to after (0: as it is), and remembered (roomInterests).
func (w *serviceSender) interestingRooms(ctx context.Context, list []string, after uint64) (map[string]bool, error) {
	svc := w.svc
	rooms := map[string]bool{}
	var unknown, aliasesDue []string
	now := time.Now()
	for _, room := range list {
		if _, seen := rooms[room]; seen {
			continue
		}
		rooms[room] = svc.OwnsRoom(room)
		if rooms[room] {
			continue
		}
		interested, known, aliasesStale := w.rooms.of(room, now)
		switch {
		case !known:
			unknown = append(unknown, room)
		case interested:
			rooms[room] = true
		case aliasesStale && svc.hasAliases():
			aliasesDue = append(aliasesDue, room)
		}
	}
	if len(unknown) == 0 && len(aliasesDue) == 0 {
		return rooms, nil
	}
	if after > 0 {
		w.s.cfg.Projection.WaitPosition(ctx, after)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	if len(unknown) > 0 {
		members, err := w.s.cfg.DB.JoinedMembers(ctx, unknown)
		if err != nil {
			return nil, err
		}
		for _, room := range unknown {
			var own []string
			for _, u := range members[room] {
				if svc.OwnsUser(u) {
					own = append(own, u)
				}
			}
			w.rooms.learn(room, own)
			rooms[room] = len(own) > 0
		}
	}
	if !svc.hasAliases() {
		return rooms, nil
	}
	aliasesDue = append(aliasesDue, unknown...)
	aliases, err := w.s.cfg.DB.AliasesOfRooms(ctx, aliasesDue)
	if err != nil {
		return nil, err
	}
	for _, room := range aliasesDue {
		aliased := slices.ContainsFunc(aliases[room], svc.OwnsAlias)
		w.rooms.setAliased(room, aliased, now)
		rooms[room] = rooms[room] || aliased
	}
	return rooms, nil
}

// aliasRecheck is how long a room's aliases are taken as read: they change through the
// accounts stream, which the sender does not follow, so a new alias of the service's
// namespace makes the room interesting within this time.
const aliasRecheck = 10 * time.Second

// maxRoomInterests bounds the rooms remembered; past it they are all read again.
const maxRoomInterests = 100_000

// roomInterests remembers, per room, which of the service's users are joined (kept up
// to date by the membership events the sender reads in the log) and whether the room
// has an alias of the service's namespace (read again after aliasRecheck).
type roomInterests struct {
	mu    sync.Mutex
	rooms map[string]*roomInterest
}

type roomInterest struct {
	members map[string]bool
	aliased bool
	aliasAt time.Time
}

// of returns what is known of room: whether the service is interested in it, whether
// anything is known, and whether its aliases are due to be read again.
func (r *roomInterests) of(room string, now time.Time) (interested, known, aliasesStale bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ri := r.rooms[room]
	if ri == nil {
		return false, false, false
	}
	stale := now.Sub(ri.aliasAt) > aliasRecheck
	return len(ri.members) > 0 || (ri.aliased && !stale), true, stale
}

// learn remembers the service's users joined to room, as read from Postgres.
func (r *roomInterests) learn(room string, members []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rooms == nil || len(r.rooms) >= maxRoomInterests {
		r.rooms = map[string]*roomInterest{}
	}
	ri := &roomInterest{members: map[string]bool{}}
	for _, m := range members {
		ri.members[m] = true
	}
	r.rooms[room] = ri
}

// member applies a membership event of one of the service's users to a room already
// known.
func (r *roomInterests) member(room, user string, joined bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ri := r.rooms[room]
	if ri == nil {
		return
	}
	if joined {
		ri.members[user] = true
	} else {
		delete(ri.members, user)
	}
}

func (r *roomInterests) setAliased(room string, aliased bool, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ri := r.rooms[room]; ri != nil {
		ri.aliased, ri.aliasAt = aliased, at
	}
}

// txnBody is PUT /_matrix/app/v1/transactions/{txnId}'s body; ephemeral events go
// under MSC2409's key, as Synapse sends them.
type txnBody struct {
	Events    []json.RawMessage `json:"events"`
	Ephemeral []json.RawMessage `json:"de.sorunome.msc2409.ephemeral,omitempty"`
}

// send makes the events and ephemeral events the next transaction, stored as pending
// before it goes out so a restart resends it as it was, and sends it.
func (w *serviceSender) send(ctx context.Context, events []loggedEvent, ephemeral []json.RawMessage) error {
	body := txnBody{Events: make([]json.RawMessage, len(events)), Ephemeral: ephemeral}
	for i, ev := range events {
		body.Events[i] = schemas.ClientEvent(ev.pdu, ev.eventID, "", "")
	}
	raw, err := schemas.Marshal(body)
	if err != nil {
		return err
	}
	next := w.st
	next.LastTxnID++
	last := next.Delivered
	if len(events) > 0 {
		last = events[len(events)-1].pos
	}
	next.Pending = &appservices.Txn{ID: next.LastTxnID, Body: raw, Last: last}
	if err := w.s.store.Save(ctx, w.svc.ID, next); err != nil {
		return streams.Unavailable(err)
	}
	w.st = next
	return w.sendPending(ctx)
}

// sendPending sends the pending transaction until the service answers 200, then
// records it delivered. Only ctx's end, or Postgres failing, stops it.
func (w *serviceSender) sendPending(ctx context.Context) error {
	p := w.st.Pending
	if p == nil {
		return nil
	}
	path := "/_matrix/app/v1/transactions/" + strconv.FormatUint(p.ID, 10)
	backoff := firstBackoff
	for {
		_, err := call(ctx, w.s.cfg.Client, w.svc, http.MethodPut, path, p.Body)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return streams.Unavailable(ctx.Err())
		}
		w.log.Info("application service did not take a transaction; trying again", zap.Uint64("txn_id", p.ID),
			zap.Error(err), zap.Duration("backoff", backoff))
		if err := w.s.cfg.Sleep(ctx, backoff); err != nil {
			return streams.Unavailable(err)
		}
		backoff = min(2*backoff, maxBackoff)
	}
	next := w.st
	next.Delivered, next.Pending = p.Last, nil
	if err := w.s.store.Save(ctx, w.svc.ID, next); err != nil {
		return streams.Unavailable(err)
	}
	w.st, w.saved = next, time.Now()
	return nil
}
