package userstreams

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/persist/presence"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// OpPresenceSet sets the requester's presence (PUT /presence/{userId}/status): its
// body is PresenceSet.
const OpPresenceSet = "set"

// PresenceSet is the body of OpPresenceSet.
type PresenceSet struct {
	Presence  string  `json:"presence"`
	StatusMsg *string `json:"status_msg,omitempty"`
}

// MaxStatusMsg bounds a status message. Synapse has no bound of its own besides the
// request's size; every sync of everyone sharing a room with the user carries it.
const MaxStatusMsg = 4096

// Validate refuses what no presence writer stores, with the Matrix error to answer.
func (b *PresenceSet) Validate() *schemas.ResultError {
	switch {
	case !schemas.ValidPresence(b.Presence):
		return &schemas.ResultError{Status: http.StatusBadRequest, Code: "M_INVALID_PARAM",
			Message: "presence must be online, unavailable or offline"}
	case b.StatusMsg != nil && len(*b.StatusMsg) > MaxStatusMsg:
		return &schemas.ResultError{Status: http.StatusBadRequest, Code: "M_INVALID_PARAM",
			Message: fmt.Sprintf("status_msg is at most %d bytes", MaxStatusMsg)}
	}
	return nil
}

// maxNotices bounds the sync notices waiting for the writer's loop; past it they are
// dropped, as a lost core NATS message would be (the next ones repair it).
const maxNotices = 1 << 16

// maxAppend bounds the records of one append of the writer's own changes.
const maxAppend = 1024

// Presence is the presence stream: the latest announced presence of each user, with
// Synapse's state machine. The writer keeps every user it tracks in memory, hears
// which devices sync where from the processes serving /sync (schemas.UserSync), runs
// the timers, and appends a record whenever a user's presence changes in a way Synapse
// would announce. Memory is the state machine's; the log and Postgres hold what was
// announced, from which memory is restored at a restart.
type Presence struct {
	store    presence.Store
	settings PresenceSettings
	timers   PresenceTimers

	mu sync.Mutex
	// users are the users the writer tracks: everyone not offline, and offline users
	// touched lately.
	users  map[string]*presenceUser
	loaded bool

	// queue holds the notices heard and not handled yet; kick wakes the loop.
	qmu   sync.Mutex
	queue []*schemas.UserSync
	kick  chan struct{}
}

// NewPresence returns the presence stream.
func NewPresence(store presence.Store, settings PresenceSettings) *Presence {
	return &Presence{store: store, settings: settings, timers: settings.Timers,
		users: map[string]*presenceUser{}, kick: make(chan struct{}, 1)}
}

func (*Presence) Name() string { return schemas.StreamPresence }

func (p *Presence) Prepare(ctx context.Context, batch []*schemas.StreamWrite) ([]Outcome, error) {
	out := make([]Outcome, len(batch))
	bodies := make([]*PresenceSet, len(batch))
	var users []string
	for i, w := range batch {
		if w.Op != OpPresenceSet {
			out[i] = Refuse(http.StatusBadRequest, "M_UNRECOGNIZED", "unknown presence operation %q", w.Op)
			continue
		}
		var body PresenceSet
		if err := json.Unmarshal(w.Body, &body); err != nil {
			out[i] = Refuse(http.StatusBadRequest, "M_BAD_JSON", "presence needs a state")
			continue
		}
		if refused := body.Validate(); refused != nil {
			out[i] = Outcome{Answer: &schemas.IntentResult{Error: refused}}
			continue
		}
		if p.settings.Track() {
			bodies[i] = &body
			users = append(users, w.User)
		}
	}
	if len(users) == 0 {
		return out, nil
	}
	recs := make([]*schemas.PresenceRecord, len(batch))
	err := p.withUsers(ctx, users, func() {
		now := time.Now().UnixMilli()
		for i, body := range bodies {
			if body == nil {
				continue
			}
			u := p.users[batch[i].User]
			p.timers.set(u, batch[i].Device, body.Presence, body.StatusMsg, false, now)
			if u.dirty {
				rec := u.rec
				recs[i] = &rec
			}
		}
	})
	if err != nil {
		return nil, err
	}
	var changed []string
	for _, rec := range recs {
		if rec != nil {
			changed = append(changed, rec.User)
		}
	}
	keys, err := p.wakeKeys(ctx, changed)
	if err != nil {
		return nil, err
	}
	for i, rec := range recs {
		if rec != nil {
			out[i].Records = []Record{presenceRecord(rec, keys[rec.User])}
		}
	}
	return out, nil
}

func presenceRecord(rec *schemas.PresenceRecord, wake []string) Record {
	rec.V = schemas.PresenceVersion
	data, _ := schemas.Marshal(rec)
	return Record{Key: []string{rec.User}, Data: data, Wake: wake}
}

// wakeKeys says whom each of users' presence concerns: the user and the rooms they are
// joined to (their members see it), or everyone past maxWakeRooms.
func (p *Presence) wakeKeys(ctx context.Context, users []string) (map[string][]string, error) {
	if len(users) == 0 {
		return nil, nil
	}
	rooms, err := p.store.JoinedRooms(ctx, users)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]string, len(users))
	for _, u := range users {
		out[u] = roomsAndUser(u, rooms[u])
	}
	return out, nil
}

// withUsers runs f under the lock with every one of users tracked, restoring what the
// writer knew at its last start first, and reading the users it does not track from
// Postgres.
func (p *Presence) withUsers(ctx context.Context, users []string, f func()) error {
	for {
		p.mu.Lock()
		var missing []string
		for _, u := range users {
			if p.users[u] == nil {
				missing = append(missing, u)
			}
		}
		if p.loaded && len(missing) == 0 {
			f()
			p.mu.Unlock()
			return nil
		}
		loaded := p.loaded
		p.mu.Unlock()
		if !loaded {
			// Everyone not offline has timers running.
			items, err := p.store.NotOffline(ctx)
			if err != nil {
				return err
			}
			p.track(items, nil)
			continue
		}
		items, err := p.store.Users(ctx, missing)
		if err != nil {
			return err
		}
		p.track(items, missing)
	}
}

// track starts tracking the users of items, and those of also (who have no stored
// presence: offline since ever), unless they are tracked already: memory is newer.
func (p *Presence) track(items []presence.Item, also []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now().UnixMilli()
	for _, it := range items {
		if p.users[it.User] == nil {
			u := newPresenceUser(it.PresenceRecord)
			u.changed = now
			p.users[it.User] = u
		}
	}
	for _, id := range also {
		if p.users[id] == nil {
			u := newPresenceUser(schemas.PresenceRecord{V: schemas.PresenceVersion, User: id, State: schemas.PresenceOffline})
			u.changed = now
			p.users[id] = u
		}
	}
	p.loaded = true
}

func (p *Presence) Project(ctx context.Context, tx pgx.Tx, recs []streams.RawMessage) error {
	decoded := make([]*schemas.PresenceRecord, 0, len(recs))
	seqs := make([]uint64, 0, len(recs))
	for _, m := range recs {
		r, err := schemas.DecodePresence(m.Data)
		if err != nil {
			return err
		}
		decoded = append(decoded, r)
		seqs = append(seqs, m.Seq)
	}
	if err := presence.Project(ctx, tx, decoded, seqs); err != nil {
		return err
	}
	// The log now carries these records: a user whose state they cover has nothing
	// left to announce. (Records are appended under the writer's lock and projected
	// right after, so no later record of the user is in flight.)
	p.mu.Lock()
	defer p.mu.Unlock()
	granularity := p.timers.LastActiveGranularity.Milliseconds()
	for _, r := range decoded {
		if u := p.users[r.User]; u != nil && u.dirty && !shouldNotify(r, &u.rec, granularity) {
			u.dirty = false
		}
	}
	return nil
}

func (p *Presence) Row(m streams.RawMessage) any {
	r, err := schemas.DecodePresence(m.Data)
	if err != nil {
		return nil
	}
	return schemas.PresenceRow{PresenceRecord: r}
}

// Start restores the users whose timers run, then, while presence is tracked, hears
// the sync notices of every process serving /sync and runs the timers until ctx ends.
// With presence disabled it announces once that everyone is offline, as Synapse does,
// so clients do not show forever what was current when presence was turned off.
func (p *Presence) Start(ctx context.Context, w *Writer) error {
	if err := p.withUsers(ctx, nil, func() {}); err != nil {
		return err
	}
	if !p.settings.Enabled {
		p.mu.Lock()
		for _, u := range p.users {
			if u.rec.State != schemas.PresenceOffline {
				u.rec.State, u.rec.StatusMsg, u.rec.CurrentlyActive = schemas.PresenceOffline, nil, false
				u.dirty = true
			}
		}
		p.mu.Unlock()
		go func() {
			for !p.appendDirty(ctx, w) {
				if streams.Sleep(ctx, time.Second) != nil {
					return
				}
			}
		}()
		return nil
	}
	if !p.settings.Track() {
		return nil
	}
	sub, err := w.cfg.NC.Subscribe(w.cfg.Topology.UserSyncSubject(w.cfg.Name), p.hear(w.log))
	if err != nil {
		return err
	}
	go p.loop(ctx, w, sub)
	return nil
}

// loop handles the sync notices heard on sub and runs the timers until ctx ends.
func (p *Presence) loop(ctx context.Context, w *Writer, sub *nats.Subscription) {
	defer func() { _ = sub.Unsubscribe() }()
	// As Synapse, time nobody out before processes have had the time to say who syncs
	// on them: a restart must not send everyone offline.
	timersFrom := time.Now().Add(p.timers.SyncOnlineTimeout)
	tick := time.NewTicker(p.timers.tick())
	defer tick.Stop()
	for {
		timeouts := false
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-tick.C:
			timeouts = !time.Now().Before(timersFrom)
		}
		p.step(ctx, timeouts)
		p.appendDirty(ctx, w)
	}
}

// hear queues a sync notice for the loop; a NATS callback must not wait.
func (p *Presence) hear(log *zap.Logger) nats.MsgHandler {
	return func(m *nats.Msg) {
		n, err := schemas.DecodeUserSync(m.Data)
		if err != nil {
			log.Warn("presence: bad sync notice dropped", zap.Error(err))
			return
		}
		p.qmu.Lock()
		full := len(p.queue) >= maxNotices
		if !full {
			p.queue = append(p.queue, n)
		}
		p.qmu.Unlock()
		if full {
			log.Warn("presence: too many sync notices waiting; one dropped", zap.String("process", n.Process))
			return
		}
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// step handles the notices heard, and the timers when timeouts is set.
func (p *Presence) step(ctx context.Context, timeouts bool) {
	p.qmu.Lock()
	notices := p.queue
	p.queue = nil
	p.qmu.Unlock()
	var users []string
	for _, n := range notices {
		for _, d := range n.Devices {
			users = append(users, d.User)
		}
	}
	err := p.withUsers(ctx, users, func() {
		now := time.Now().UnixMilli()
		for _, n := range notices {
			p.heardLocked(n, now)
		}
		if timeouts {
			p.timeoutsLocked(now)
		}
	})
	if err != nil {
		// Postgres is unavailable: keep the notices for the next step.
		p.qmu.Lock()
		p.queue = append(notices, p.queue...)
		p.qmu.Unlock()
	}
}

// heardLocked applies one notice (Synapse's update_external_syncs_row and
// update_external_syncs_clear, and set_state for a sync's set_presence).
func (p *Presence) heardLocked(n *schemas.UserSync, now int64) {
	if n.Clear {
		// The process stopped: its devices stopped syncing now.
		for _, u := range p.users {
			for s := range u.syncs {
				if s.process == n.Process {
					delete(u.syncs, s)
					p.timers.stopped(u, s.device, now, now)
				}
			}
		}
	}
	for _, d := range n.Devices {
		u := p.users[d.User]
		src := syncSource{process: n.Process, device: d.Device}
		switch d.Kind {
		case schemas.UserSyncStart:
			u.syncs[src] = now
			p.timers.set(u, d.Device, d.State, nil, true, now)
		case schemas.UserSyncAlive:
			u.syncs[src] = now
		case schemas.UserSyncStop:
			if _, ok := u.syncs[src]; ok {
				delete(u.syncs, src)
				p.timers.stopped(u, d.Device, now-min(d.AgoMS, now), now)
			}
		}
	}
}

// timeoutsLocked runs every tracked user's timers, forgets the syncs of processes that
// fell silent (crashed: a stopping process says so), and stops tracking users who are
// offline with nothing left to announce.
func (p *Presence) timeoutsLocked(now int64) {
	lease := p.timers.Lease().Milliseconds()
	for id, u := range p.users {
		for s, heard := range u.syncs {
			if now-heard > lease {
				delete(u.syncs, s)
			}
		}
		p.timers.timeout(u, now)
		// Kept a while after the last change, so a reader of Postgres never sees
		// an older row than memory had.
		if u.rec.State == schemas.PresenceOffline && !u.dirty && len(u.syncs) == 0 &&
			now-u.changed > p.timers.SyncOnlineTimeout.Milliseconds() {
			delete(p.users, id)
		}
	}
}

// appendDirty appends the state of every user with a change to announce, and reports
// whether all of it is appended.
func (p *Presence) appendDirty(ctx context.Context, w *Writer) bool {
	// Each append takes at most maxAppend users; a few rounds cover a burst (a crashed
	// process's users going offline together). A change arriving meanwhile waits for
	// the next step.
	for range 16 {
		var users []string
		p.mu.Lock()
		for id, u := range p.users {
			if u.dirty && len(users) < maxAppend {
				users = append(users, id)
			}
		}
		p.mu.Unlock()
		if len(users) == 0 {
			return true
		}
		keys, err := p.wakeKeys(ctx, users)
		if err == nil {
			// The records are made under the writer's lock, from the state as it is
			// then: a write's record never comes between them and their place in the
			// log.
			_, err = w.AppendFunc(ctx, func() []Record {
				p.mu.Lock()
				defer p.mu.Unlock()
				var recs []Record
				for _, id := range users {
					if u := p.users[id]; u != nil && u.dirty {
						rec := u.rec
						recs = append(recs, presenceRecord(&rec, keys[id]))
					}
				}
				return recs
			})
		}
		if err != nil {
			if ctx.Err() == nil {
				w.log.Warn("presence changes not appended; retrying", zap.Error(err))
			}
			return false
		}
	}
	return false
}
