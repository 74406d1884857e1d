package pusher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/tidwall/gjson"
	"go.uber.org/zap"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/notifications"
	"github.com/ganglionhq/ganglion/persist/pushers"
	rulesdb "github.com/ganglionhq/ganglion/persist/pushrules"
	"github.com/ganglionhq/ganglion/processors/userstreams"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// Projection waits until the EVENTS log is projected into Postgres up to a sequence
// (the process's events feed).
type Projection interface {
	WaitPosition(ctx context.Context, seq uint64)
}

// RulesFeed tells whether users' push rules changed since a position (the process's
// push_rules feed).
type RulesFeed interface {
	Position() uint64
	NewSince(since uint64, keys []string) (changed, known bool)
}

// Config wires a Pusher. Every field but Log and MaxBatch is required.
type Config struct {
	// Name is this process's instance name, one of Instances.
	Name string
	// Instances are the pusher instances (pusher_instances, or the main process);
	// users are sharded over them with Synapse's function.
	Instances  []string
	ServerName string
	Topology   streams.Topology
	JS         jetstream.JetStream
	// NC announces how far the instance has evaluated (streams.Announce), for the
	// /syncs of other processes.
	NC         *nats.Conn
	DB         *persist.DB
	Projection Projection
	Rules      RulesFeed
	// Outbound reaches push gateways (NewOutboundClient).
	Outbound *http.Client
	// Intents writes to the accounts stream: a pusher whose pushkey its gateway
	// rejected is deleted.
	Intents *streams.IntentClient
	Log     *zap.Logger
	// MaxBatch bounds the log messages handled at once (default 64).
	MaxBatch int
}

// Bounds of what a pusher remembers; past them it starts over, which costs queries.
const (
	maxCachedRooms = 10_000
	maxCachedRules = 100_000
)

// Pusher is one pusher instance: a durable consumer of the EVENTS log that evaluates,
// for each event, the push rules of the room's local members sharded to it, and
// records the events that notify them (persist/notifications) with its position.
type Pusher struct {
	cfg     Config
	log     *zap.Logger
	store   notifications.Store
	eval    *evaluator
	deliver *deliverer
	// Evaluated is the log sequence up to which every message is evaluated and its
	// notifications stored; /sync waits on it before it counts. written is the
	// position last written to Postgres.
	Evaluated streams.Position
	written   atomic.Uint64
}

// evaluator turns log messages into notifications for the local users of one shard.
// Not for concurrent use.
type evaluator struct {
	serverName    string
	shard, shards int
	db            *persist.DB
	rulesDB       rulesdb.Store
	projection    Projection
	rulesFeed     RulesFeed
	rooms         map[string]*roomState
	users         map[string]cachedRules
	actions       map[*pushrules.PushRule]ruleActions
}

func newEvaluator(serverName string, shard, shards int, db *persist.DB, projection Projection, rules RulesFeed) *evaluator {
	return &evaluator{serverName: serverName, shard: shard, shards: shards, db: db, rulesDB: rulesdb.Store{Pool: db.Pool},
		projection: projection, rulesFeed: rules, rooms: map[string]*roomState{}, users: map[string]cachedRules{},
		actions: map[*pushrules.PushRule]ruleActions{}}
}

type cachedRules struct {
	rules *Rules
	// at is the push_rules feed's position before they were read.
	at uint64
}

// New checks cfg and returns a Pusher; Run starts it.
func New(cfg Config) (*Pusher, error) {
	shard := -1
	for i, n := range cfg.Instances {
		if n == cfg.Name {
			shard = i
		}
	}
	if shard < 0 {
		return nil, fmt.Errorf("pusher: %s is not one of the pusher instances %v", cfg.Name, cfg.Instances)
	}
	if cfg.JS == nil || cfg.NC == nil || cfg.DB == nil || cfg.Projection == nil || cfg.Rules == nil || cfg.ServerName == "" ||
		cfg.Outbound == nil || cfg.Intents == nil {
		return nil, errors.New("pusher: JS, DB, Projection, Rules, ServerName, Outbound and Intents are required")
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 64
	}
	p := &Pusher{cfg: cfg, log: cfg.Log.Named("pusher").With(zap.String("pusher", cfg.Name)),
		store: notifications.Store{Pool: cfg.DB.Pool},
		eval:  newEvaluator(cfg.ServerName, shard, len(cfg.Instances), cfg.DB, cfg.Projection, cfg.Rules)}
	p.deliver = &deliverer{db: cfg.DB, projection: cfg.Projection, notes: p.store, pushers: pushers.Store{Pool: cfg.DB.Pool}, client: cfg.Outbound,
		remove: p.removePusher, mine: p.eval.mine, log: p.log, sleep: streams.Sleep, pending: map[string]bool{}, woken: make(chan struct{}, 1)}
	p.deliver.workers = streams.NewWorkers(p.deliver.pass)
	return p, nil
}

// ConsumerName is the durable consumer of a pusher instance.
func ConsumerName(instance string) string { return "pusher_" + instance }

// Run consumes the EVENTS log until ctx ends. A pusher seen for the first time starts
// at the log's end: notifications are for what happens from then on.
func (p *Pusher) Run(ctx context.Context) error {
	t := p.cfg.Topology
	name := ConsumerName(p.cfg.Name)
	stored, err := p.cfg.DB.StreamPositions(ctx, notifications.Stream)
	if err != nil {
		return fmt.Errorf("pusher: %w", err)
	}
	// Batches without notifications write the position at most a second later, so a
	// start may evaluate again what it evaluated before; notifications are stored once
	// per (user, event), so that changes nothing.
	pos, known := stored[p.cfg.Name]
	from := uint64(0)
	if known {
		from = pos + 1
	}
	cons, from, err := t.OpenDownstream(ctx, p.cfg.JS, name, from, 4*p.cfg.MaxBatch)
	if err != nil {
		return fmt.Errorf("pusher: %w", err)
	}
	p.written.Store(pos)
	p.Evaluated.Set(from - 1)
	p.log.Info("pusher started", zap.Uint64("position", p.Evaluated.Get()))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer p.deliver.workers.Wait()
	wg.Go(func() { p.deliver.run(ctx) })
	wg.Go(func() { p.flushPositions(ctx) })
	wg.Go(func() {
		streams.Announce(ctx, p.cfg.NC, t.PositionSubject(notifications.Stream, p.cfg.Name), &p.Evaluated)
	})
	if p.cfg.Name == p.cfg.Instances[0] {
		wg.Go(func() { p.pruneRead(ctx) })
	}
	// What was not delivered before a stop is delivered now.
	if err := p.deliver.wake(ctx, nil); err != nil {
		return fmt.Errorf("pusher: %w", err)
	}
	runner := &streams.Runner{
		Name:              name,
		Consumer:          cons,
		JS:                p.cfg.JS,
		DeadLetterSubject: t.DeadLetterSubject(name),
		MaxBatch:          p.cfg.MaxBatch,
		MaxDeliver:        5,
		Log:               p.log,
		Control:           p.cfg.NC,
		RewindSubject:     t.RewindSubject(),
		SideEffects:       "push notifications for any of these events not notified before",
	}
	return runner.Run(ctx, p.handle)
}

// handle evaluates log messages in order and stores their notifications with the
// position of the last one, in one transaction. A message that fails fails those after
// it too, so they come back in order; what the pusher remembers of rooms is dropped,
// since it may have moved past the failed message.
func (p *Pusher) handle(ctx context.Context, msgs []jetstream.Msg) []error {
	errs := make([]error, len(msgs))
	var out []notifications.Notification
	var last uint64
	failed := len(msgs)
	for i, m := range msgs {
		meta, err := m.Metadata()
		if err != nil {
			errs[i] = streams.Permanent(err)
			continue
		}
		ns, err := p.eval.message(ctx, meta.Sequence.Stream, m.Data())
		if err != nil && !streams.IsPermanent(err) {
			failed = i
			clear(p.eval.rooms)
			for j := i; j < len(msgs); j++ {
				errs[j] = err
			}
			break
		}
		errs[i] = err
		out = append(out, ns...)
		last = meta.Sequence.Stream
	}
	if last == 0 {
		return errs
	}
	if len(out) == 0 {
		// Nothing to store: the position is written by flushPosition, since what it
		// is for is a restart that lost its consumer.
		p.Evaluated.Set(last)
		return errs
	}
	if err := p.store.Record(ctx, out, map[string]uint64{p.cfg.Name: last}); err != nil {
		clear(p.eval.rooms)
		err = streams.Unavailable(err)
		for j := range failed {
			errs[j] = err
		}
		return errs
	}
	p.Evaluated.Set(last)
	p.written.Store(max(p.written.Load(), last))
	users := make([]string, len(out))
	for i, n := range out {
		users[i] = n.User
	}
	p.deliver.notify(users)
	return errs
}

// Read notifications are kept for notificationRetention, then deleted a chunk at a
// time, every pruneEvery, by the first pusher instance; unread ones stay, since the
// counts are counted again from them. A replay stores them again, to be pruned again.
const (
	notificationRetention = 30 * 24 * time.Hour
	pruneEvery            = time.Hour
	firstPrune            = time.Minute
	pruneChunk            = 10_000
)

// pruneRead deletes the read notifications older than notificationRetention, every
// pruneEvery, until ctx ends.
func (p *Pusher) pruneRead(ctx context.Context) {
	wait := firstPrune
	for streams.Sleep(ctx, wait) == nil {
		wait = pruneEvery
		before := time.Now().Add(-notificationRetention).UnixMilli()
		var total int64
		for ctx.Err() == nil {
			n, err := p.store.PruneRead(ctx, before, pruneChunk)
			total += n
			if err != nil {
				p.log.Warn("could not prune read notifications; trying again later", zap.Error(err))
				break
			}
			if n < pruneChunk {
				break
			}
		}
		if total > 0 {
			p.log.Info("pruned read notifications", zap.Int64("deleted", total), zap.Duration("older_than", notificationRetention))
		}
	}
}

// positionFlush is how often a position that moved without notifications is written.
const positionFlush = time.Second

// flushPositions writes the evaluated position when batches without notifications
// moved it, at most once per positionFlush, until ctx ends.
func (p *Pusher) flushPositions(ctx context.Context) {
	t := time.NewTicker(positionFlush)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		pos := p.Evaluated.Get()
		if pos <= p.written.Load() {
			continue
		}
		if err := p.store.Record(ctx, nil, map[string]uint64{p.cfg.Name: pos}); err != nil {
			p.log.Warn("could not write the pusher's position", zap.Error(err))
			continue
		}
		p.written.Store(max(p.written.Load(), pos))
	}
}

// removePusher deletes a pusher through the accounts stream, as its user would.
func (p *Pusher) removePusher(ctx context.Context, k pushers.Key) error {
	body, err := schemas.Marshal(schemas.Pusher{AppID: k.AppID, Pushkey: k.Pushkey})
	if err != nil {
		return err
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	res, err := p.cfg.Intents.Write(ctx, &schemas.StreamWrite{V: schemas.StreamWriteVersion, ID: "pusher-" + hex.EncodeToString(id),
		Stream: schemas.StreamAccounts, Op: userstreams.OpDeletePusher, Key: k.User, User: k.User,
		IssuedAtMS: time.Now().UnixMilli(), Body: body})
	if err != nil {
		return err
	}
	if res.Error != nil {
		return fmt.Errorf("pusher: removing a rejected pusher: %s", res.Error.Message)
	}
	return nil
}

// message evaluates one log message (one room's events, in order) for the local
// members sharded here.
func (p *evaluator) message(ctx context.Context, seq uint64, data []byte) ([]notifications.Notification, error) {
	batch, err := schemas.DecodeLogBatch(data)
	if err != nil {
		return nil, streams.Permanent(err)
	}
	return p.batch(ctx, seq, batch)
}

// batch is message, decoded.
func (p *evaluator) batch(ctx context.Context, seq uint64, batch *schemas.LogBatch) ([]notifications.Notification, error) {
	if batch.Purged {
		// The room is gone, with its notifications (the events projection deleted them).
		delete(p.rooms, batch.RoomID)
		return nil, nil
	}
	room, err := p.room(ctx, batch.RoomID, seq)
	if err != nil {
		return nil, streams.Unavailable(err)
	}
	var out []notifications.Notification
	for idx, le := range batch.Events {
		// A message event nobody here is notified of is not decoded: its room's state
		// does not change either.
		if f := gjson.GetManyBytes(le.JSON, "sender", "state_key"); !f[1].Exists() && !p.anyTarget(room, f[0].String()) {
			continue
		}
		var ev event.Event
		if err := json.Unmarshal(le.JSON, &ev); err != nil {
			return nil, streams.Permanent(fmt.Errorf("pusher: event %s: %w", le.EventID, err))
		}
		ev.ID = id.EventID(le.EventID)
		ns, err := p.evaluate(ctx, room, &ev, persist.Pos{Seq: seq, Idx: idx})
		if err != nil {
			return nil, err
		}
		out = append(out, ns...)
		room.apply(&ev)
	}
	return out, nil
}

// anyTarget reports whether a message event from sender notifies anyone here.
func (p *evaluator) anyTarget(room *roomState, sender string) bool {
	for user := range room.members {
		if p.target(user, sender) {
			return true
		}
	}
	return false
}

// target reports whether a joined member is evaluated for sender's events: sharded
// here, and not the sender.
func (p *evaluator) target(member, sender string) bool { return member != sender && p.mine(member) }

// evaluate returns the notifications ev makes for the local members sharded here:
// the joined members but its sender, and the user an invite is for.
func (p *evaluator) evaluate(ctx context.Context, room *roomState, ev *event.Event, pos persist.Pos) ([]notifications.Notification, error) {
	targets := make([]string, 0, len(room.members))
	for user := range room.members {
		if p.target(user, string(ev.Sender)) {
			targets = append(targets, user)
		}
	}
	if ev.Type == event.StateMember && ev.StateKey != nil && ev.Content.Raw["membership"] == "invite" {
		if _, joined := room.members[*ev.StateKey]; !joined && p.mine(*ev.StateKey) {
			targets = append(targets, *ev.StateKey)
		}
	}
	if len(targets) == 0 {
		return nil, nil
	}
	e := NewEvaluation(ev, len(room.members), room.levels)
	thread := threadOf(ev)
	var out []notifications.Notification
	for _, user := range targets {
		rules, err := p.rulesOf(ctx, user)
		if err != nil {
			return nil, err
		}
		rule := e.Rule(rules, room.members[user])
		if rule == nil {
			continue
		}
		a, err := p.actionsOf(rule)
		if err != nil {
			return nil, streams.Permanent(err)
		}
		if !a.should.Notify {
			continue
		}
		out = append(out, notifications.Notification{User: user, EventID: ev.ID.String(), RoomID: string(ev.RoomID),
			Thread: thread, Pos: pos, Highlight: a.should.Highlight, Actions: a.raw, TS: ev.Timestamp})
	}
	return out, nil
}

// ruleActions are what a rule's actions say, and their JSON as stored.
type ruleActions struct {
	should pushrules.PushActionArrayShould
	raw    json.RawMessage
}

// maxActionCache bounds the rules whose actions are remembered: rules compiled again
// leave their old ones behind.
const maxActionCache = 100_000

// actionsOf returns what rule's actions say, worked out once per rule: every member
// with the server's default rules matches one of a few rules.
func (p *evaluator) actionsOf(rule *pushrules.PushRule) (ruleActions, error) {
	if a, ok := p.actions[rule]; ok {
		return a, nil
	}
	raw, err := json.Marshal(rule.Actions)
	if err != nil {
		return ruleActions{}, err
	}
	if len(p.actions) >= maxActionCache {
		clear(p.actions)
	}
	a := ruleActions{should: rule.Actions.Should(), raw: raw}
	p.actions[rule] = a
	return a, nil
}

// mine reports whether user is a local user sharded to this instance.
func (p *evaluator) mine(user string) bool {
	_, server, ok := strings.Cut(user, ":")
	return ok && server == p.serverName && streams.ShardIndex(user, p.shards) == p.shard
}

// threadOf is the thread an event is in: its root's ID, or the main timeline.
func threadOf(ev *event.Event) string {
	rel, _ := ev.Content.Raw["m.relates_to"].(map[string]any)
	if rel["rel_type"] == "m.thread" {
		if root, ok := rel["event_id"].(string); ok && root != "" {
			return root
		}
	}
	return notifications.MainThread
}

// rulesOf returns the user's compiled rules, read again when the push_rules feed shows
// a change for them.
func (p *evaluator) rulesOf(ctx context.Context, user string) (*Rules, error) {
	if c, ok := p.users[user]; ok {
		if changed, known := p.rulesFeed.NewSince(c.at, []string{user}); known && !changed {
			return c.rules, nil
		}
	}
	at := p.rulesFeed.Position()
	state, _, err := p.rulesDB.Get(ctx, user)
	if err != nil {
		return nil, streams.Unavailable(err)
	}
	rules, err := Compile(state, user)
	if err != nil {
		return nil, streams.Permanent(err)
	}
	if len(p.users) >= maxCachedRules {
		clear(p.users)
	}
	p.users[user] = cachedRules{rules: rules, at: at}
	return rules, nil
}

// roomState is what the evaluation needs of a room, as of the last message handled.
type roomState struct {
	// members are the joined users (local or not) with their display names.
	members map[string]string
	levels  *event.PowerLevelsEventContent
}

// room returns the room's state before the message at seq: remembered from the
// messages before it, or read from Postgres once the log is projected up to the message
// before. Only that read waits for the projection: a message is evaluated beside its
// projection, so a /sync seldom waits for the pusher.
func (p *evaluator) room(ctx context.Context, roomID string, seq uint64) (*roomState, error) {
	if r, ok := p.rooms[roomID]; ok {
		return r, nil
	}
	p.projection.WaitPosition(ctx, seq-1)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	state, err := p.db.StateAt(ctx, roomID, persist.Pos{Seq: seq - 1, Idx: math.MaxInt32})
	if err != nil {
		return nil, err
	}
	r := &roomState{members: map[string]string{}}
	for _, se := range state {
		var ev event.Event
		if err := json.Unmarshal(se.JSON, &ev); err != nil {
			return nil, fmt.Errorf("pusher: state event %s: %w", se.EventID, err)
		}
		r.apply(&ev)
	}
	if len(p.rooms) >= maxCachedRooms {
		clear(p.rooms)
	}
	p.rooms[roomID] = r
	return r, nil
}

// apply moves the state past ev.
func (r *roomState) apply(ev *event.Event) {
	if ev.StateKey == nil {
		return
	}
	switch ev.Type {
	case event.StateMember:
		if ev.Content.Raw["membership"] == "join" {
			name, _ := ev.Content.Raw["displayname"].(string)
			r.members[*ev.StateKey] = name
		} else {
			delete(r.members, *ev.StateKey)
		}
	case event.StatePowerLevels:
		if *ev.StateKey != "" {
			return
		}
		var levels event.PowerLevelsEventContent
		if json.Unmarshal(ev.Content.VeryRaw, &levels) == nil {
			r.levels = &levels
		}
	}
}
