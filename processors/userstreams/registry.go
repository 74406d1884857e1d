package userstreams

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/accountdata"
	"github.com/ganglionhq/ganglion/persist/accounts"
	"github.com/ganglionhq/ganglion/persist/presence"
	rulesdb "github.com/ganglionhq/ganglion/persist/pushrules"
	"github.com/ganglionhq/ganglion/persist/receipts"
	"github.com/ganglionhq/ganglion/persist/todevice"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// Deps is what the streams need from their process.
type Deps struct {
	DB *persist.DB
	// Presence is the presence section of the configuration.
	Presence PresenceSettings
	// JS and Topology reach the streams' logs (to_device purges what was delivered);
	// Topology also carries the to-device bound.
	JS       jetstream.JetStream
	Topology streams.Topology
	Log      *zap.Logger
}

// Streams returns every per-user stream built so far, by name: one line each.
func Streams(d Deps) map[string]Stream {
	return map[string]Stream{
		schemas.StreamAccountData: &AccountData{Store: accountdata.Store{Pool: d.DB.Pool}},
		schemas.StreamDeviceLists: &DeviceLists{DB: d.DB},
		schemas.StreamPushRules:   &PushRules{Store: rulesdb.Store{Pool: d.DB.Pool}},
		schemas.StreamTyping:      &Typing{},
		schemas.StreamReceipts:    &Receipts{Store: receipts.Store{Pool: d.DB.Pool}},
		schemas.StreamToDevice:    &ToDevice{DB: d.DB, Store: todevice.Store{Pool: d.DB.Pool}, JS: d.JS, Topology: d.Topology, Log: d.Log},
		schemas.StreamAccounts:    &Accounts{Store: accounts.Store{Pool: d.DB.Pool}},
		schemas.StreamPresence:    NewPresence(presence.Store{Pool: d.DB.Pool}, d.Presence),
	}
}

// Replay projects the whole log of st into db, then records each writer's position
// (rows first, on nobody's behalf, as the events replay does). It returns how many
// records it projected and the positions.
func Replay(ctx context.Context, js jetstream.JetStream, topo streams.Topology, db *persist.DB, st Stream) (int, map[string]uint64, error) {
	name := st.Name()
	positions := map[string]uint64{}
	if streams.UserStreams[name].Memory {
		return 0, positions, nil
	}
	n := 0
	_, err := streams.ReadStream(ctx, js, topo.UserStreamName(name), topo.UserStreamWildcard(name), false,
		streams.LogRange{Chunk: 512}, func(msgs []streams.RawMessage) error {
			n += len(msgs)
			for _, m := range msgs {
				positions[m.Writer] = max(positions[m.Writer], m.Seq)
			}
			return pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return st.Project(ctx, tx, msgs) })
		})
	if err != nil {
		return n, positions, err
	}
	for w, p := range positions {
		if err := db.AdvanceStreamPosition(ctx, name, w, p); err != nil {
			return n, positions, err
		}
	}
	return n, positions, nil
}
