package streams

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ganglionhq/ganglion/schemas"
)

// UserStream is the JetStream shape of one per-user stream. Every one is a stream of
// its own, so each has its own sequence, which is the stream's position in sync tokens
// and in Synapse's replication; what differs is what the stream keeps, chosen by what
// its data is (ARCHITECTURE.md, "Per-user streams").
type UserStream struct {
	Name string
	// Memory keeps the stream in memory only: what it holds matters for seconds
	// (who is typing), and a NATS restart losing it costs nothing that lasts.
	Memory bool
	// PerSubject is how many messages each subject keeps (0: all of them). Streams
	// holding the latest value of each key keep 1, which makes the stream a key-value
	// store whose sequence is the position of each value.
	PerSubject int64
	// MaxAge drops messages older than this (0: never).
	MaxAge time.Duration
}

// DefaultToDevicePerDevice bounds the to-device messages one device that never syncs
// holds; the oldest are dropped past it.
const DefaultToDevicePerDevice = 10_000

// ToDeviceLimit is the configured bound of a to_device subject: the messages one device
// holds, or the transactions one sending device is remembered by.
func (t Topology) ToDeviceLimit() int64 {
	if t.ToDevicePerDevice > 0 {
		return t.ToDevicePerDevice
	}
	return DefaultToDevicePerDevice
}

// UserStreams are the per-user streams of the seed, by name.
var UserStreams = map[string]UserStream{
	// The current typers of each room, one subject per room: a row is the room's
	// whole list, as Synapse's typing row is. Typing notices last 30 s by default;
	// a room's last list is kept 10 minutes (Synapse forgets a room's typing after as
	// long), and its writer reads them back at start to expire typers it left behind.
	schemas.StreamTyping: {Name: schemas.StreamTyping, Memory: true, PerSubject: 1, MaxAge: 10 * time.Minute},
	// Messages for one device, one subject per (user, device), kept until the device
	// syncs past them (its writer then purges them) and bounded per device
	// (Topology.ToDeviceLimit); beside them, one subject per sending device holds the
	// transaction ids it used, bounded alike.
	schemas.StreamToDevice: {Name: schemas.StreamToDevice, PerSubject: DefaultToDevicePerDevice},
	// The latest value per (user, room, type).
	schemas.StreamAccountData: {Name: schemas.StreamAccountData, PerSubject: 1},
	// The latest receipt per (room, receipt type, user, thread).
	schemas.StreamReceipts: {Name: schemas.StreamReceipts, PerSubject: 1},
	// The latest state of each user.
	schemas.StreamPresence: {Name: schemas.StreamPresence, PerSubject: 1},
	// Each user's push rules, as one value per user.
	schemas.StreamPushRules: {Name: schemas.StreamPushRules, PerSubject: 1},
	// The change log of devices and their keys: every record is kept, in order, so
	// replaying it rebuilds devices, keys and the device-list positions.
	schemas.StreamDeviceLists: {Name: schemas.StreamDeviceLists},
	// Ganglion's own change log of accounts, devices, tokens, profiles, filters,
	// forgotten rooms and aliases: every record is kept, since replay rebuilds those
	// tables from all of them (a user's creation matters as long as the user exists).
	schemas.StreamAccounts: {Name: schemas.StreamAccounts},
}

// UserStreamName is the JetStream stream of a per-user stream, e.g. GANGLION_TYPING.
func (t Topology) UserStreamName(name string) string {
	return t.streamName(strings.ToUpper(name))
}

// UserStreamWildcard matches every subject of a per-user stream.
func (t Topology) UserStreamWildcard(name string) string { return t.ns() + ".s." + name + ".>" }

// UserStreamSubject is the subject of one key of a per-user stream: each part of the key
// becomes one token, base64url-encoded since IDs hold characters NATS does not allow
// in tokens; an empty part is "-", which no encoding produces.
func (t Topology) UserStreamSubject(name string, key ...string) string {
	var b strings.Builder
	b.WriteString(t.ns())
	b.WriteString(".s.")
	b.WriteString(name)
	for _, k := range key {
		b.WriteByte('.')
		if k == "" {
			b.WriteByte('-')
			continue
		}
		b.WriteString(base64.RawURLEncoding.EncodeToString([]byte(k)))
	}
	return b.String()
}

// UserStreamIntentSubject is where writes of a per-user stream go for writer.
func (t Topology) UserStreamIntentSubject(name, writer string) string {
	return t.IntentSubject(writer) + "." + name
}

// UserStreamProjectedSubject carries schemas.Projected notices of a per-user stream.
func (t Topology) UserStreamProjectedSubject(name string) string {
	return t.ProjectedSubject() + "." + name
}

// UserStreamConsumer is the durable consumer of writer's writes of a stream.
func (t Topology) UserStreamConsumer(name, writer string) string {
	return "writer_" + name + "_" + writer
}

// HeaderKeys lists, space-separated, whom a per-user stream's message concerns: user
// IDs, room IDs (everyone in the room), or "*" (everyone). Sync feeds wake long-polls
// by it without decoding bodies.
const HeaderKeys = "Ganglion-Keys"

// WakeEveryone is the HeaderKeys entry of a message that concerns every user.
const WakeEveryone = "*"

func (t Topology) userStreamConfig(s UserStream) jetstream.StreamConfig {
	cfg := jetstream.StreamConfig{
		Name:              t.UserStreamName(s.Name),
		Description:       "the " + s.Name + " stream",
		Subjects:          []string{t.UserStreamWildcard(s.Name)},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Replicas:          t.replicas(),
		MaxAge:            s.MaxAge,
		Duplicates:        dedupWindow,
		MaxMsgsPerSubject: s.PerSubject,
		Discard:           jetstream.DiscardOld,
		AllowDirect:       t.allowDirect(),
	}
	if s.Name == schemas.StreamToDevice {
		// The one bound an operator sets (max_to_device_messages_per_device).
		cfg.MaxMsgsPerSubject = t.ToDeviceLimit()
	}
	if cfg.MaxMsgsPerSubject == 0 {
		cfg.MaxMsgsPerSubject = -1
	}
	if s.Memory {
		cfg.Storage = jetstream.MemoryStorage
		// A memory stream is lost with a NATS restart, and a stream made again would
		// count from 1, behind the positions its readers and clients' sync tokens
		// hold, which would then skip everything until it caught up. Starting at the
		// clock in microseconds puts it past every position the lost stream gave out,
		// unless that stream took more than one message per microsecond of its life.
		// The first sequence only applies when the stream is created.
		cfg.FirstSeq = uint64(time.Now().UnixMicro())
	}
	return cfg
}

// EnsureUserStream creates the per-user stream name, or updates its configuration.
// Writers call it for a memory stream that a NATS restart lost.
func (t Topology) EnsureUserStream(ctx context.Context, js jetstream.JetStream, name string) error {
	spec, ok := UserStreams[name]
	if !ok {
		return fmt.Errorf("unknown per-user stream %q", name)
	}
	return ensureStream(ctx, js, t.userStreamConfig(spec))
}
