package load

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ganglionhq/ganglion/streams"
)

// The ceiling measurements time the parts a send is made of, alone, on this machine: the
// HTTP round trip, JetStream publish and consume, building and signing the event, and
// writing its row to Postgres. Each is bounded by a count and by ctx.

// sampleEvent builds and signs a message event the way the persister does (room version
// 11, one prev event, the usual three auth events), and returns its JSON: the size of
// what the log and the events table hold for one send.
func sampleEvent() ([]byte, error) {
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	b := newSampleBuilder(key)
	pdu, err := b.build(time.Now())
	if err != nil {
		return nil, err
	}
	return pdu.JSON(), nil
}

// sampleBuilder is a message event ready to be built again and again.
type sampleBuilder struct {
	key   ed25519.PrivateKey
	proto gomatrixserverlib.ProtoEvent
}

func newSampleBuilder(key ed25519.PrivateKey) *sampleBuilder {
	ref := func(s string) string { return "$" + s + strings.Repeat("x", 43-len(s)) }
	return &sampleBuilder{key: key, proto: gomatrixserverlib.ProtoEvent{
		SenderID:   "@load" + strings.Repeat("a", 12) + "_0:localhost",
		RoomID:     "!" + strings.Repeat("r", 18) + ":localhost",
		Type:       "m.room.message",
		Content:    spec.RawJSON(messageBody),
		PrevEvents: []string{ref("prev")},
		AuthEvents: []string{ref("create"), ref("power"), ref("member")},
		Depth:      1000,
	}}
}

func (b *sampleBuilder) build(now time.Time) (gomatrixserverlib.PDU, error) {
	proto := b.proto
	return gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11).
		NewEventBuilderFromProtoEvent(&proto).Build(now, "localhost", "ed25519:load", b.key)
}

// measureBuild times building, hashing and signing events and computing their event
// ids (the reference hash, which gomatrixserverlib computes on first use), in one
// goroutine.
func measureBuild(ctx context.Context, n int) (result, error) {
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		return result{}, err
	}
	b := newSampleBuilder(key)
	res := result{name: "build+sign event, with its event id (1 goroutine)"}
	cpu0 := selfCPU()
	t0 := time.Now()
	for range n {
		if ctx.Err() != nil {
			break
		}
		pdu, err := b.build(t0)
		if err != nil {
			return res, err
		}
		_ = pdu.EventID()
		res.ops++
	}
	res.elapsed = time.Since(t0)
	res.cpu = selfCPU() - cpu0
	return res, nil
}

// measureHTTP times PUT round trips of a send's size against a trivial JSON handler in
// this process, with the load generator's own client and 64 connections: the cheapest
// an HTTP send can be here, client side included.
func measureHTTP(ctx context.Context, n, conns int) (result, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return result{}, err
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"event_id":"$abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ"}`))
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	hs := newHomeserver("http://" + ln.Addr().String())
	defer hs.http.CloseIdleConnections()
	users := make([]*user, conns)
	for i := range users {
		users[i] = &user{token: "x", txnPrefix: "h" + strconv.Itoa(i)}
	}
	res := result{name: fmt.Sprintf("HTTP PUT round trip, trivial handler, %d connections", conns)}
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	per := n / conns
	m := &meter{}
	cpu0 := m.sample(ctx)
	t0 := time.Now()
	for _, u := range users {
		wg.Go(func() {
			for range per {
				if ctx.Err() != nil {
					return
				}
				if _, err := hs.send(ctx, u, "!room:localhost"); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				mu.Lock()
				res.ops++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(t0)
	res.cpu = m.since(ctx, cpu0)
	return res, firstErr
}

// jsTarget is a scratch stream on the NATS server the ceilings are measured against.
type jsTarget struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	stream  string
	subject string // prefix; messages go to subject.<i%100>, like rooms in the log
	where   string
	close   func()
	m       *meter
}

// openJetStream connects to natsURL, or, when it is empty, starts an embedded server
// with its files in a temporary directory and connects in-process, as the single-process
// homeserver does. It creates a scratch file-backed stream that close deletes.
func openJetStream(ctx context.Context, natsURL string) (*jsTarget, error) {
	t := &jsTarget{}
	var ns *server.Server
	var dir string
	closers := []func(){}
	t.close = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	if natsURL == "" {
		var err error
		dir, err = os.MkdirTemp("", "ganglion-load-nats-")
		if err != nil {
			return nil, err
		}
		closers = append(closers, func() { _ = os.RemoveAll(dir) })
		ns, err = streams.StartEmbedded(streams.EmbeddedOptions{StoreDir: dir})
		if err != nil {
			t.close()
			return nil, err
		}
		closers = append(closers, func() { ns.Shutdown(); ns.WaitForShutdown() })
		t.nc, err = streams.ConnectEmbedded(ns, "ganglion-load")
		if err != nil {
			t.close()
			return nil, err
		}
		t.where = "embedded in this process (in-process connection, files in " + dir + ")"
		t.m = &meter{}
	} else {
		if err := checkLoopbackURLs(natsURL); err != nil {
			return nil, err
		}
		var err error
		t.nc, err = nats.Connect(natsURL, nats.Name("ganglion-load"))
		if err != nil {
			return nil, fmt.Errorf("nats %s: %w", natsURL, err)
		}
		t.where = natsURL + " (TCP)"
		t.m = &meter{}
		if u, err := url.Parse(strings.Split(natsURL, ",")[0]); err == nil {
			if port, err := strconv.Atoi(u.Port()); err == nil {
				if pid := listenerPID(port); pid != 0 {
					t.m.pids = []int{pid}
					t.where += fmt.Sprintf(", nats-server pid %d counted", pid)
				}
			}
		}
	}
	closers = append(closers, t.nc.Close)
	js, err := jetstream.New(t.nc)
	if err != nil {
		t.close()
		return nil, err
	}
	t.js = js
	tag := randomHex(4)
	t.stream = "GANGLION_LOAD_" + strings.ToUpper(tag)
	t.subject = "ganglion_load_" + tag
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: t.stream, Subjects: []string{t.subject + ".>"},
		Storage: jetstream.FileStorage, Replicas: 1, Retention: jetstream.LimitsPolicy,
	}); err != nil {
		t.close()
		return nil, fmt.Errorf("create scratch stream: %w", err)
	}
	closers = append(closers, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = js.DeleteStream(ctx, t.stream)
	})
	return t, nil
}

// publishSync publishes n messages one at a time, each waiting for its ack.
func (t *jsTarget) publishSync(ctx context.Context, payload []byte, n int) (result, error) {
	res := result{name: "JetStream publish, synchronous, 1 publisher", lat: make([]time.Duration, 0, n)}
	cpu0 := t.m.sample(ctx)
	t0 := time.Now()
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		s := time.Now()
		if _, err := t.js.Publish(ctx, t.subject+"."+strconv.Itoa(i%100), payload); err != nil {
			return res, fmt.Errorf("publish: %w", err)
		}
		res.lat = append(res.lat, time.Since(s))
		res.ops++
	}
	res.elapsed = time.Since(t0)
	res.cpu = t.m.since(ctx, cpu0)
	return res, nil
}

// publishAsync publishes n messages with up to 4,000 unacknowledged at a time, then
// waits for every ack.
func (t *jsTarget) publishAsync(ctx context.Context, payload []byte, n int) (result, error) {
	res := result{name: "JetStream publish, asynchronous (batched acks), 1 publisher"}
	js, err := jetstream.New(t.nc, jetstream.WithPublishAsyncMaxPending(4000))
	if err != nil {
		return res, err
	}
	futures := make([]jetstream.PubAckFuture, 0, n)
	cpu0 := t.m.sample(ctx)
	t0 := time.Now()
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		f, err := js.PublishAsync(t.subject+"."+strconv.Itoa(i%100), payload)
		if err != nil {
			return res, fmt.Errorf("publish async: %w", err)
		}
		futures = append(futures, f)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(time.Minute):
		return res, fmt.Errorf("publish async: acks missing after a minute")
	}
	res.elapsed = time.Since(t0)
	res.cpu = t.m.since(ctx, cpu0)
	for _, f := range futures {
		select {
		case <-f.Ok():
			res.ops++
		case err := <-f.Err():
			res.failures++
			if res.failures == 1 {
				return res, fmt.Errorf("publish async: %w", err)
			}
		}
	}
	return res, nil
}

// consume reads up to n messages of the scratch stream with a durable pull consumer,
// acknowledging each, as the persister and the sync feed read theirs.
func (t *jsTarget) consume(ctx context.Context, n int) (result, error) {
	res := result{name: "JetStream durable pull consumer, explicit ack"}
	cons, err := t.js.CreateOrUpdateConsumer(ctx, t.stream, jetstream.ConsumerConfig{
		Durable: "load", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 10000,
	})
	if err != nil {
		return res, fmt.Errorf("create consumer: %w", err)
	}
	cpu0 := t.m.sample(ctx)
	t0 := time.Now()
	for res.ops < n && ctx.Err() == nil {
		batch, err := cons.Fetch(min(500, n-res.ops), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return res, fmt.Errorf("fetch: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			if err := m.Ack(); err != nil {
				return res, fmt.Errorf("ack: %w", err)
			}
			got++
		}
		if err := batch.Error(); err != nil {
			return res, fmt.Errorf("fetch: %w", err)
		}
		if got == 0 {
			break // the stream has no more
		}
		res.ops += got
	}
	res.elapsed = time.Since(t0)
	res.cpu = t.m.since(ctx, cpu0)
	return res, nil
}

// pgTarget is a scratch database with a copy of the events table.
type pgTarget struct {
	pool  *pgxpool.Pool
	where string
	close func()
	m     *meter
	event string // the JSON every row carries
	tag   string // keeps event ids of this run unique
}

// scratchTable mirrors the events table of persist/migrations (columns, keys and
// indexes), so an insert costs what a projection's insert costs.
const scratchTable = `CREATE TABLE events (
    event_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, seq BIGINT NOT NULL, idx INT NOT NULL,
    type TEXT NOT NULL, state_key TEXT, sender TEXT NOT NULL, membership TEXT,
    depth BIGINT NOT NULL, origin_server_ts BIGINT NOT NULL, json TEXT NOT NULL,
    redacted_by TEXT, device_id TEXT, txn_id TEXT, UNIQUE (room_id, seq, idx));
CREATE INDEX events_seq ON events (seq);
CREATE INDEX events_member_target ON events (state_key, seq) WHERE type = 'm.room.member';`

var eventColumns = []string{"event_id", "room_id", "seq", "idx", "type", "state_key", "sender",
	"membership", "depth", "origin_server_ts", "json", "redacted_by", "device_id", "txn_id"}

// openPostgres creates a scratch database on the server dsn points at (which must be on
// this machine) and the events table in it; close drops the database.
func openPostgres(ctx context.Context, dsn string, event []byte) (*pgTarget, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("-pg: %w", err)
	}
	if !strings.HasPrefix(cfg.Host, "/") {
		if err := checkLoopbackHost(cfg.Host); err != nil {
			return nil, fmt.Errorf("-pg: %w", err)
		}
	}
	admin, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	name := "ganglion_load_" + randomHex(6)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close(ctx)
		return nil, fmt.Errorf("postgres: create scratch database: %w", err)
	}
	t := &pgTarget{
		where: fmt.Sprintf("%s:%d, scratch database %s", cfg.Host, cfg.Port, name),
		event: string(event), tag: randomHex(4),
		m: &meter{pg: admin, dbs: []string{name}},
	}
	t.close = func() {
		if t.pool != nil {
			t.pool.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		admin.Close(ctx)
	}
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.close()
		return nil, err
	}
	pcfg.ConnConfig.Database = name
	pcfg.MaxConns = 8
	t.pool, err = pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		t.close()
		return nil, err
	}
	if _, err := t.pool.Exec(ctx, scratchTable); err != nil {
		t.close()
		return nil, fmt.Errorf("postgres: scratch table: %w", err)
	}
	return t, nil
}

// row returns the values of the i-th row of this run.
func (t *pgTarget) row(i int) []any {
	return []any{
		"$" + t.tag + "_" + strconv.Itoa(i) + strings.Repeat("e", 30),
		"!room" + strconv.Itoa(i%100) + ":localhost",
		int64(i), 0, "m.room.message", nil, "@load_" + t.tag + ":localhost", nil,
		int64(i), time.Now().UnixMilli(), t.event, nil, "LOADDEVICE", "txn" + strconv.Itoa(i),
	}
}

var insertOne = "INSERT INTO events (" + strings.Join(eventColumns, ",") + ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)"

// insertPerRow inserts n rows, each in its own transaction, from clients connections.
func (t *pgTarget) insertPerRow(ctx context.Context, first, n, clients int) (result, error) {
	res := result{name: fmt.Sprintf("Postgres INSERT, 1 row per transaction, %d client(s)", clients)}
	var next = first
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	cpu0 := t.m.sample(ctx)
	t0 := time.Now()
	for range clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				mu.Lock()
				if next >= first+n || firstErr != nil {
					mu.Unlock()
					return
				}
				i := next
				next++
				mu.Unlock()
				_, err := t.pool.Exec(ctx, insertOne, t.row(i)...)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if err == nil {
					res.ops++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(t0)
	res.cpu = t.m.since(ctx, cpu0)
	return res, firstErr
}

// insertBatched inserts n rows with one multi-row INSERT of per rows per transaction.
func (t *pgTarget) insertBatched(ctx context.Context, first, n, per int) (result, error) {
	res := result{name: fmt.Sprintf("Postgres INSERT, %d rows per statement and transaction", per)}
	var sb strings.Builder
	sb.WriteString("INSERT INTO events (" + strings.Join(eventColumns, ",") + ") VALUES ")
	for r := range per {
		if r > 0 {
			sb.WriteByte(',')
		}
		sb.WriteByte('(')
		for c := range eventColumns {
			if c > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString("$" + strconv.Itoa(r*len(eventColumns)+c+1))
		}
		sb.WriteByte(')')
	}
	sql := sb.String()
	args := make([]any, 0, per*len(eventColumns))
	cpu0 := t.m.sample(ctx)
	t0 := time.Now()
	for i := first; i+per <= first+n && ctx.Err() == nil; i += per {
		args = args[:0]
		for r := range per {
			args = append(args, t.row(i+r)...)
		}
		if _, err := t.pool.Exec(ctx, sql, args...); err != nil {
			return res, err
		}
		res.ops += per
	}
	res.elapsed = time.Since(t0)
	res.cpu = t.m.since(ctx, cpu0)
	return res, nil
}

// copyRows writes n rows with CopyFrom, per rows per transaction.
func (t *pgTarget) copyRows(ctx context.Context, first, n, per int) (result, error) {
	res := result{name: fmt.Sprintf("Postgres COPY (pgx CopyFrom), %d rows per transaction", per)}
	rows := make([][]any, per)
	cpu0 := t.m.sample(ctx)
	t0 := time.Now()
	for i := first; i+per <= first+n && ctx.Err() == nil; i += per {
		for r := range per {
			rows[r] = t.row(i + r)
		}
		if _, err := t.pool.CopyFrom(ctx, pgx.Identifier{"events"}, eventColumns, pgx.CopyFromRows(rows)); err != nil {
			return res, err
		}
		res.ops += per
	}
	res.elapsed = time.Since(t0)
	res.cpu = t.m.since(ctx, cpu0)
	return res, nil
}
