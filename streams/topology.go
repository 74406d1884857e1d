// Package streams owns the JetStream topology (streams, subjects, consumers), the
// sharding function, and the publish/consume helpers every role shares.
package streams

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultNamespace prefixes every subject and stream unless configured otherwise.
// Tests use their own namespace so they can share one NATS server.
const DefaultNamespace = "ganglion"

// Topology names every stream and subject of one deployment.
type Topology struct {
	// Namespace is a NATS subject token ([a-z0-9_-]); empty means DefaultNamespace.
	Namespace string
	// ToDevicePerDevice bounds the to-device messages one device holds (and the
	// transactions one sending device is remembered by); 0 means
	// DefaultToDevicePerDevice. It shapes the to_device stream, so it lives here.
	ToDevicePerDevice int64
	// Replicas is how many servers of a NATS cluster hold each stream (nats.replicas);
	// 0 means 1, a single server.
	Replicas int
}

// replicas is the replica count of every stream (and, by JetStream's default, of every
// consumer on it).
func (t Topology) replicas() int { return max(t.Replicas, 1) }

// allowDirect is whether reads of single messages (GetMsg, GetLastMsgForSubject) may
// be answered by any server holding the stream rather than its leader. With replicas,
// a follower may not have applied a message its leader has delivered yet and answers
// "not found" for it: a reader then stops short of the end, or fails on a message it
// was just handed. So only a single server's streams allow it.
func (t Topology) allowDirect() bool { return t.replicas() == 1 }

func (t Topology) ns() string {
	if t.Namespace == "" {
		return DefaultNamespace
	}
	return t.Namespace
}

func (t Topology) streamName(s string) string {
	return strings.ToUpper(strings.ReplaceAll(t.ns(), "-", "_")) + "_" + s
}

// IntentsStream holds intents (limits retention, 10 minutes), one subject per event
// writer.
func (t Topology) IntentsStream() string { return t.streamName("INTENTS") }

// EventsStream is the durable, replayable log of accepted events.
func (t Topology) EventsStream() string { return t.streamName("EVENTS") }

// DeadLetterStream keeps messages that kept failing, with context to inspect and retry.
func (t Topology) DeadLetterStream() string { return t.streamName("DEADLETTER") }

// IntentSubject is where intents for rooms owned by writer go.
func (t Topology) IntentSubject(writer string) string {
	return t.ns() + ".intents." + writer
}

// EventSubject is the log subject of one room. Room IDs contain characters NATS does not
// allow in tokens ('.', and potentially others), so the ID is base64url-encoded.
func (t Topology) EventSubject(roomID string) string {
	return t.ns() + ".events." + base64.RawURLEncoding.EncodeToString([]byte(roomID))
}

// EventsInfo describes the EVENTS stream: its name, creation time (which tells one log
// from another of the same name) and state.
func (t Topology) EventsInfo(ctx context.Context, js jetstream.JetStream) (*jetstream.StreamInfo, error) {
	stream, err := js.Stream(ctx, t.EventsStream())
	if err != nil {
		return nil, err
	}
	return stream.Info(ctx)
}

// EventsLastSeq returns a function reading the events log's last sequence now.
func (t Topology) EventsLastSeq(js jetstream.JetStream) func(context.Context) (uint64, error) {
	return func(ctx context.Context) (uint64, error) {
		info, err := t.EventsInfo(ctx, js)
		if err != nil {
			return 0, err
		}
		return info.State.LastSeq, nil
	}
}

// EventsWildcard matches every room's log subject.
func (t Topology) EventsWildcard() string { return t.ns() + ".events.>" }

// DeadLetterSubject is where the consumer called name dead-letters its messages.
func (t Topology) DeadLetterSubject(name string) string { return t.ns() + ".dlq." + name }

// ProjectedSubject carries schemas.Projected notices over core NATS.
func (t Topology) ProjectedSubject() string { return t.ns() + ".projected" }

// PersisterConsumer is the durable consumer name of an event writer.
func (t Topology) PersisterConsumer(writer string) string { return "persister_" + writer }

// dedupWindow is how long JetStream remembers message ids for deduplication.
// Gateways also check Postgres, so this only needs to cover in-flight retries.
const dedupWindow = 2 * time.Minute

// Ensure creates or updates every stream of the topology. It is safe to call from
// every process at start.
func (t Topology) Ensure(ctx context.Context, js jetstream.JetStream) error {
	configs := []jetstream.StreamConfig{{
		Name:        t.IntentsStream(),
		Description: "intents from gateways, one subject per event writer",
		// <ns>.intents.<writer> for rooms, <ns>.intents.<writer>.<stream> for the
		// per-user streams that writer writes.
		Subjects: []string{t.ns() + ".intents.>"},
		// Limits, not a work queue: a work queue deletes each intent on ack, and at low
		// load that empties and replaces a message block file per send (measured: 11%
		// of a sequential send's CPU). Age removes intents in bulk instead.
		Retention: jetstream.LimitsPolicy,
		Storage:   jetstream.FileStorage,
		Replicas:  t.replicas(),
		// Intents only matter while a gateway waits for the answer (30 s); after a
		// writer outage longer than this, clients have long retried with the same
		// transaction ids, which the writer answers from its stored results.
		MaxAge:   10 * time.Minute,
		MaxBytes: 1 << 30,
		Discard:  jetstream.DiscardOld,
	}, {
		Name:        t.EventsStream(),
		Description: "the events log: one message per room batch, the source of truth",
		Subjects:    []string{t.EventsWildcard()},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    t.replicas(),
		Duplicates:  dedupWindow,
		MaxMsgSize:  8 << 20,
		AllowDirect: t.allowDirect(),
	}, {
		Name:        t.DeadLetterStream(),
		Description: "messages that kept failing, with their context",
		Subjects:    []string{t.ns() + ".dlq.>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    t.replicas(),
	}}
	for _, spec := range UserStreams {
		configs = append(configs, t.userStreamConfig(spec))
	}
	for _, cfg := range configs {
		if err := ensureStream(ctx, js, cfg); err != nil {
			return err
		}
	}
	return nil
}

// ensureStream creates or updates one stream. Processes starting together may both
// find it missing and both create it; the second creation fails when the configs
// differ (a memory stream's first sequence comes from the clock), and then the stream
// exists, so updating it is what is left to do.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	// A stream that exists as configured is left alone: every process ensures the
	// topology as it starts, and updating a stream while another process creates a
	// consumer on it races inside nats-server (its race detector reports
	// fileStore.UpdateConfig against ConsumerStore).
	if s, err := js.Stream(ctx, cfg.Name); err == nil && sameStreamConfig(s.CachedInfo().Config, cfg) {
		return nil
	}
	_, err := js.CreateOrUpdateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		_, err = js.CreateOrUpdateStream(ctx, cfg)
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	return nil
}

// sameStreamConfig reports whether a stream's configuration has every setting the
// topology gives it; a setting left at zero is the server's default, whatever it is.
func sameStreamConfig(have, want jetstream.StreamConfig) bool {
	zeroOr := func(w, h int64) bool { return w == 0 || w == h }
	return slices.Equal(have.Subjects, want.Subjects) && have.Description == want.Description &&
		have.Retention == want.Retention && have.Storage == want.Storage && have.Replicas == want.Replicas &&
		have.Discard == want.Discard && have.AllowDirect == want.AllowDirect &&
		zeroOr(int64(want.MaxAge), int64(have.MaxAge)) && zeroOr(want.MaxBytes, have.MaxBytes) &&
		zeroOr(int64(want.Duplicates), int64(have.Duplicates)) && zeroOr(int64(want.MaxMsgSize), int64(have.MaxMsgSize)) &&
		zeroOr(want.MaxMsgsPerSubject, have.MaxMsgsPerSubject)
}

// Headers of EVENTS log messages. They let followers (sync feeds, senders) route a
// message without decoding its body.
const (
	// HeaderWriter names the event writer instance that appended the message.
	HeaderWriter = "Ganglion-Writer"
	// HeaderRoom is the room ID of every event in the message.
	HeaderRoom = "Ganglion-Room"
	// HeaderMembers lists, space-separated, the state keys of m.room.member events in
	// the message: the users whose room list changes.
	HeaderMembers = "Ganglion-Members"
)

// MembershipKey is the key under which a sync feed files a log message that changes the
// membership of room: a long-poll that cares about who is in a room (device lists)
// waits for it, and not for every message of the room.
func MembershipKey(room string) string { return "~members " + room }
