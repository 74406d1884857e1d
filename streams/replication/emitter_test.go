package replication

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	zapobserver "go.uber.org/zap/zaptest/observer"

	"github.com/ganglionhq/ganglion/schemas"
)

const redisAddr = "127.0.0.1:6379"

func ptr(s string) *string { return &s }

var (
	memberRow = schemas.EventRow{EventID: "$a:x", RoomID: "!r:x", Type: "m.room.member",
		StateKey: ptr("@u:x"), Membership: ptr("join")}
	memberJSON  = `["ev",["$a:x","!r:x","m.room.member","@u:x",null,null,"join",false,false]]`
	messageRow  = schemas.EventRow{EventID: "$b:x", RoomID: "!r:x", Type: "m.room.message", RelatesTo: ptr("$a:x")}
	messageJSON = `["ev",["$b:x","!r:x","m.room.message",null,null,"$a:x",null,false,false]]`
)

// uniqueChannel stands in for a server name, so parallel tests and reruns
// never hear each other.
func uniqueChannel() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "test-" + hex.EncodeToString(b) + ".example"
}

// observer is a plain Redis subscriber standing in for a Synapse worker.
type observer struct {
	client *redis.Client
	ch     string
	msgs   <-chan *redis.Message
}

func observe(t *testing.T, channel string) *observer {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { _ = c.Close() })
	ps := c.Subscribe(context.Background(), channel)
	t.Cleanup(func() { _ = ps.Close() })
	if _, err := ps.Receive(context.Background()); err != nil {
		t.Fatalf("observer subscribe: %v", err)
	}
	return &observer{client: c, ch: channel, msgs: ps.Channel()}
}

// next returns the next message on the channel; the deadline only guards
// against hanging.
func (o *observer) next(t *testing.T) string {
	t.Helper()
	select {
	case m := <-o.msgs:
		return m.Payload
	case <-time.After(time.Minute):
		t.Fatal("no message on the channel")
		return ""
	}
}

func (o *observer) expect(t *testing.T, want ...string) {
	t.Helper()
	for _, w := range want {
		if got := o.next(t); got != w {
			t.Fatalf("got  %q\nwant %q", got, w)
		}
	}
}

func runEmitter(t *testing.T, e *Emitter) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Error("Run did not return after cancel")
		}
	})
}

func TestWireFormat(t *testing.T) {
	t.Parallel()
	ch := uniqueChannel()
	obs := observe(t, ch)
	rc := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { _ = rc.Close() })
	e := New(rc, ch, "ganglion_w1", zaptest.NewLogger(t))
	e.Position(schemas.StreamEvents, 5) // known before connecting: announced on connect
	runEmitter(t, e)

	// On connect: REPLICATE then our positions; then the answer to our own
	// REPLICATE, which Synapse does not filter either.
	obs.expect(t,
		"REPLICATE ",
		"POSITION events ganglion_w1 5 5",
		"POSITION events ganglion_w1 5 5",
	)
	e.Events(7, []schemas.EventRow{memberRow, messageRow})
	e.Position(schemas.StreamEvents, 9)
	e.Position("receipts", 3)
	obs.expect(t,
		"RDATA events ganglion_w1 batch "+memberJSON,
		"RDATA events ganglion_w1 7 "+messageJSON,
		"POSITION events ganglion_w1 7 9",
		"POSITION receipts ganglion_w1 3 3",
	)
	// Another process connects and asks for positions.
	if err := obs.client.Publish(context.Background(), ch, "REPLICATE ").Err(); err != nil {
		t.Fatal(err)
	}
	obs.expect(t,
		"REPLICATE ",
		"POSITION events ganglion_w1 9 9",
		"POSITION receipts ganglion_w1 3 3",
	)
	// 3 on connect, 4 for the writes, 2 for the answer; the counter moves
	// just after Redis acknowledged, possibly after the observer heard it.
	deadline := time.Now().Add(time.Minute)
	for e.Stats().Published != 9 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s := e.Stats(); s.DroppedRows != 0 || s.Published != 9 {
		t.Errorf("stats: %+v", s)
	}
}

func TestEventsNeverBlockWithoutRedis(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()
	rc := redis.NewClient(&redis.Options{Addr: closed})
	t.Cleanup(func() { _ = rc.Close() })
	e := New(rc, uniqueChannel(), "ganglion_w2", zaptest.NewLogger(t))
	runEmitter(t, e)

	const calls = 5000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range calls {
			e.Events(int64(i+1), []schemas.EventRow{memberRow, messageRow})
			e.Position("typing", int64(i+1))
		}
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("Events blocked while Redis was unreachable")
	}
	if s := e.Stats(); s.DroppedRows != 2*calls || s.Published != 0 {
		t.Errorf("stats: %+v", s)
	}
}

// A full queue drops rows, and the next row of the stream is preceded by a
// POSITION covering them, so receivers fetch the gap instead of skipping it.
func TestOverflowResyncsBeforeNextRows(t *testing.T) {
	t.Parallel()
	e := New(nil, "example.com", "ganglion_w3", nil)
	e.queue = make(chan item, 2)
	e.ready = true
	e.Position(schemas.StreamEvents, 10)
	e.Events(11, []schemas.EventRow{memberRow})
	e.Events(12, []schemas.EventRow{memberRow, messageRow}) // queue full: dropped
	queued := e.takeQueued(nil)
	e.Events(13, []schemas.EventRow{messageRow})
	got := e.itemCommands(e.takeQueued(queued))
	want := []string{
		"POSITION events ganglion_w3 10 10",
		"RDATA events ganglion_w3 11 " + memberJSON,
		"POSITION events ganglion_w3 12 12",
		"RDATA events ganglion_w3 13 " + messageJSON,
	}
	if !slices.Equal(got, want) {
		t.Errorf("commands:\n got %q\nwant %q", got, want)
	}
	if s := e.Stats(); s.DroppedRows != 2 {
		t.Errorf("stats: %+v", s)
	}
}

// proxy forwards TCP to Redis and can simulate an outage.
type proxy struct {
	ln    net.Listener
	down  atomic.Bool
	mu    sync.Mutex
	conns map[net.Conn]bool
}

func newProxy(t *testing.T) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, conns: map[net.Conn]bool{}}
	go p.serve()
	t.Cleanup(func() { _ = ln.Close(); p.cut() })
	return p
}

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.down.Load() {
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", redisAddr)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
		go func() { _, _ = io.Copy(c, up); _ = c.Close() }()
	}
}

// cut refuses new connections and breaks the open ones.
func (p *proxy) cut() {
	p.down.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

func TestReannouncesAfterOutage(t *testing.T) {
	t.Parallel()
	ch := uniqueChannel()
	obs := observe(t, ch)
	px := newProxy(t)
	rc := redis.NewClient(&redis.Options{Addr: px.ln.Addr().String()})
	t.Cleanup(func() { _ = rc.Close() })
	e := New(rc, ch, "ganglion_w4", zaptest.NewLogger(t))
	e.Position(schemas.StreamEvents, 1)
	runEmitter(t, e)
	obs.expect(t, "REPLICATE ", "POSITION events ganglion_w4 1 1", "POSITION events ganglion_w4 1 1")
	e.Events(2, []schemas.EventRow{memberRow})
	obs.expect(t, "RDATA events ganglion_w4 2 "+memberJSON)

	px.cut()
	e.Events(3, []schemas.EventRow{memberRow})
	e.Events(4, []schemas.EventRow{messageRow})
	e.Position(schemas.StreamEvents, 6)
	deadline := time.Now().Add(time.Minute)
	for e.Stats().DroppedRows < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("rows sent during the outage were not dropped: %+v", e.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	px.down.Store(false)

	// Back: the latest position (covering the dropped rows) comes first,
	// then traffic flows again.
	obs.expect(t, "REPLICATE ", "POSITION events ganglion_w4 6 6", "POSITION events ganglion_w4 6 6")
	e.Events(7, []schemas.EventRow{messageRow})
	obs.expect(t, "RDATA events ganglion_w4 7 "+messageJSON)
}

// The emitter logs with the process's logger, which names the instance already: one
// line must not carry the key twice.
func TestEmitterLogsInstanceOnce(t *testing.T) {
	core, logs := zapobserver.New(zapcore.InfoLevel)
	log := zap.New(core).With(zap.String("instance", "ganglion_w4"))
	// An empty channel disables the emitter with one error line.
	New(nil, "", "ganglion_w4", log).Run(context.Background())
	if logs.Len() != 1 {
		t.Fatalf("%d lines, want the one saying the emitter is disabled", logs.Len())
	}
	n := 0
	for _, f := range logs.All()[0].Context {
		if f.Key == "instance" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("the line carries instance %d times: %v", n, logs.All()[0].Context)
	}
}
