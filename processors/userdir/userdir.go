// Package userdir keeps the user directory: a consumer of the EVENTS log, on the one
// instance update_user_directory_from_worker names, that projects who is in which room
// and which rooms anyone may find the members of (persist/userdir).
package userdir

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/tidwall/gjson"
	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/userdir"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// Config is a directory's configuration.
type Config struct {
	// Name is this instance.
	Name     string
	Topology streams.Topology
	JS       jetstream.JetStream
	DB       *persist.DB
	// Control, when set, takes operators' rewinds of the directory's consumer.
	Control *nats.Conn
	Log     *zap.Logger
	// MaxBatch bounds the log messages applied in one transaction (64 when 0).
	MaxBatch int
}

// Directory projects the log into the user directory.
type Directory struct {
	cfg   Config
	store userdir.Store
	log   *zap.Logger
}

// New returns the directory of cfg; Run starts it.
func New(cfg Config) (*Directory, error) {
	if cfg.JS == nil || cfg.DB == nil || cfg.Name == "" {
		return nil, errors.New("userdir: Name, JS and DB are required")
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 64
	}
	return &Directory{cfg: cfg, store: userdir.Store{Pool: cfg.DB.Pool}, log: cfg.Log.Named("userdir")}, nil
}

// ConsumerName is the durable consumer of a directory instance.
func ConsumerName(instance string) string { return "user_directory_" + instance }

// Run consumes the EVENTS log until ctx ends, from the position stored with the
// directory, or from the log's start on a database without one: a new directory holds
// every room's members.
func (d *Directory) Run(ctx context.Context) error {
	stored, err := d.cfg.DB.StreamPositions(ctx, userdir.Stream)
	if err != nil {
		return fmt.Errorf("userdir: %w", err)
	}
	from := uint64(1)
	if pos, ok := stored[d.cfg.Name]; ok {
		from = pos + 1
	}
	name := ConsumerName(d.cfg.Name)
	cons, from, err := d.cfg.Topology.OpenDownstream(ctx, d.cfg.JS, name, from, 4*d.cfg.MaxBatch)
	if err != nil {
		return fmt.Errorf("userdir: %w", err)
	}
	d.log.Info("user directory started", zap.Uint64("from", from))
	runner := &streams.Runner{
		Name:              name,
		Consumer:          cons,
		JS:                d.cfg.JS,
		DeadLetterSubject: d.cfg.Topology.DeadLetterSubject(name),
		MaxBatch:          d.cfg.MaxBatch,
		MaxDeliver:        5,
		Log:               d.log,
		Control:           d.cfg.Control,
		RewindSubject:     d.cfg.Topology.RewindSubject(),
	}
	return runner.Run(ctx, d.handle)
}

// handle applies a batch of log messages in one transaction with the position of the
// last; if it fails, every message comes back.
func (d *Directory) handle(ctx context.Context, msgs []jetstream.Msg) []error {
	errs := make([]error, len(msgs))
	var changes []userdir.Change
	var last uint64
	for i, m := range msgs {
		meta, err := m.Metadata()
		if err != nil {
			errs[i] = streams.Permanent(err)
			continue
		}
		b, err := schemas.DecodeLogBatch(m.Data())
		if err != nil {
			errs[i] = streams.Permanent(err)
			continue
		}
		changes = append(changes, Changes(b)...)
		last = meta.Sequence.Stream
	}
	if last == 0 {
		return errs
	}
	if err := d.store.Apply(ctx, changes, d.cfg.Name, last); err != nil {
		err = streams.Unavailable(err)
		for i := range errs {
			if errs[i] == nil {
				errs[i] = err
			}
		}
	}
	return errs
}

// Changes are what a log batch changes in the directory: memberships, join rules and
// history visibility, in order. The log holds only accepted events, each the room's
// state after it, so applying them in log order keeps the current state.
func Changes(b *schemas.LogBatch) []userdir.Change {
	if b.Purged {
		return []userdir.Change{{Room: b.RoomID, Purged: true}}
	}
	var out []userdir.Change
	for _, e := range b.Events {
		ev := gjson.ParseBytes(e.JSON)
		key := ev.Get("state_key")
		if !key.Exists() {
			continue
		}
		content := ev.Get("content")
		switch ev.Get("type").String() {
		case "m.room.member":
			c := userdir.Change{Room: b.RoomID, User: key.String(), Membership: true,
				Joined: content.Get("membership").String() == "join"}
			if c.Joined {
				c.DisplayName, c.AvatarURL = stringField(content, "displayname"), stringField(content, "avatar_url")
			}
			out = append(out, c)
		case "m.room.join_rules":
			public := content.Get("join_rule").String() == "public"
			out = append(out, userdir.Change{Room: b.RoomID, PublicJoin: &public})
		case "m.room.history_visibility":
			readable := content.Get("history_visibility").String() == "world_readable"
			out = append(out, userdir.Change{Room: b.RoomID, WorldReadable: &readable})
		}
	}
	return out
}

func stringField(obj gjson.Result, name string) *string {
	v := obj.Get(gjson.Escape(name))
	if v.Type != gjson.String {
		return nil
	}
	s := v.String()
	return &s
}

// Rebuild projects the whole log into the directory of a database: a follower of a
// replay (ganglion replay), which stores instance's position at the log's end.
type Rebuild struct {
	store    userdir.Store
	instance string
}

// NewRebuild returns the rebuild of instance's directory in db.
func NewRebuild(db *persist.DB, instance string) *Rebuild {
	return &Rebuild{store: userdir.Store{Pool: db.Pool}, instance: instance}
}

// Follow projects msgs into the directory, with the position of the last.
func (r *Rebuild) Follow(ctx context.Context, msgs []schemas.LogMessage) error {
	var changes []userdir.Change
	for _, m := range msgs {
		changes = append(changes, Changes(m.Batch)...)
	}
	if err := r.store.Apply(ctx, changes, r.instance, msgs[len(msgs)-1].Seq); err != nil {
		return fmt.Errorf("userdir: rebuild: %w", err)
	}
	return nil
}

// Finish stores the position at the log's end, which Follow's last chunk holds.
func (r *Rebuild) Finish(ctx context.Context, last uint64) error {
	return r.store.Apply(ctx, nil, r.instance, last)
}
