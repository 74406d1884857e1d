package streams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// shardsKey is the key of the events writers' list in the shard bucket.
const shardsKey = "events"

// ShardBucket is the JetStream key-value bucket holding the live list of event writers.
func (t Topology) ShardBucket() string { return t.streamName("SHARDS") }

// ShardMap is the live list of event writers, the list rooms are sharded over. It is
// kept in a key-value bucket on the bus, so that an operator changes it while every
// process runs (ganglion persisters apply): each process watches it, gateways route new
// intents by it at once, and a writer hands on the intents it receives for rooms it no
// longer owns. stream_writers.events seeds it on a bus that has none.
type ShardMap struct {
	writers atomic.Pointer[[]string]
}

// Writers returns the current list, in sharding order.
func (m *ShardMap) Writers() []string { return *m.writers.Load() }

// Owner returns the writer owning room.
func (m *ShardMap) Owner(room string) string { return ShardOwner(room, m.Writers()) }

// shardBucket opens (or makes) the bucket.
func shardBucket(ctx context.Context, js jetstream.JetStream, t Topology) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      t.ShardBucket(),
		Description: "the live list of event writers (ganglion persisters apply)",
		History:     16,
		Storage:     jetstream.FileStorage,
		Replicas:    t.replicas(),
	})
	if err != nil {
		return nil, fmt.Errorf("streams: shard bucket: %w", err)
	}
	return kv, nil
}

// OpenShardMap reads the live list, writing seed as the list when the bus has none, and
// follows its changes until ctx ends.
func OpenShardMap(ctx context.Context, js jetstream.JetStream, t Topology, seed []string, log *zap.Logger) (*ShardMap, error) {
	kv, err := shardBucket(ctx, js, t)
	if err != nil {
		return nil, err
	}
	data, _ := json.Marshal(seed)
	if _, err := kv.Create(ctx, shardsKey, data); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, fmt.Errorf("streams: shard map: %w", err)
	}
	m := &ShardMap{}
	w, err := watchList(ctx, kv, m)
	if err != nil {
		return nil, err
	}
	if live := m.Writers(); !slices.Equal(live, seed) {
		log.Warn("stream_writers.events differs from the live list of event writers, which rules (ganglion persisters apply makes the configuration's list live)",
			zap.Strings("configured", seed), zap.Strings("live", live))
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil || e.Operation() != jetstream.KeyValuePut {
					continue
				}
				if err := m.set(e.Value()); err != nil {
					log.Error("bad live list of event writers; keeping the last one", zap.Error(err))
					continue
				}
				log.Info("event writers changed", zap.Strings("writers", m.Writers()))
			case <-ctx.Done():
				return
			}
		}
	}()
	return m, nil
}

// watchList watches the list and sets m to its current value, which the watcher gives
// first, before each change. On a cluster the watcher's consumer may sit on a server
// that has not yet applied the list just written, and report none: the list exists
// (OpenShardMap wrote it, or found it), so it watches again, for up to 5 s.
func watchList(ctx context.Context, kv jetstream.KeyValue, m *ShardMap) (jetstream.KeyWatcher, error) {
	for attempt := 1; ; attempt++ {
		w, err := kv.Watch(ctx, shardsKey)
		if err != nil {
			return nil, fmt.Errorf("streams: shard map: %w", err)
		}
		select {
		case e := <-w.Updates():
			if e != nil {
				if err := m.set(e.Value()); err != nil {
					_ = w.Stop()
					return nil, err
				}
				return w, nil
			}
		case <-ctx.Done():
			_ = w.Stop()
			return nil, ctx.Err()
		}
		_ = w.Stop()
		if attempt == 50 {
			return nil, errors.New("streams: shard map: no list")
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (m *ShardMap) set(data []byte) error {
	var writers []string
	if err := json.Unmarshal(data, &writers); err != nil || len(writers) == 0 {
		return fmt.Errorf("streams: shard map %q: not a list of writers", data)
	}
	m.writers.Store(&writers)
	return nil
}

// StaticShards is a fixed list of writers, for processes and tests without a live map.
type StaticShards []string

// Writers returns the list.
func (s StaticShards) Writers() []string { return s }

// ReadShards returns the live list of event writers, or nil when the bus has none yet.
func ReadShards(ctx context.Context, js jetstream.JetStream, t Topology) ([]string, error) {
	kv, err := shardBucket(ctx, js, t)
	if err != nil {
		return nil, err
	}
	e, err := kv.Get(ctx, shardsKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var writers []string
	return writers, json.Unmarshal(e.Value(), &writers)
}

// ApplyShards makes writers the live list of event writers.
func ApplyShards(ctx context.Context, js jetstream.JetStream, t Topology, writers []string) error {
	if len(writers) == 0 {
		return errors.New("streams: no event writers")
	}
	kv, err := shardBucket(ctx, js, t)
	if err != nil {
		return err
	}
	data, _ := json.Marshal(writers)
	_, err = kv.Put(ctx, shardsKey, data)
	return err
}
