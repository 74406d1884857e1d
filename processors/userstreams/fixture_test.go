package userstreams

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap/zaptest"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/pgtest"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
	"github.com/ganglionhq/ganglion/streams/natstest"
)

// fixture is one test's NATS server and namespace, database, and a client that sends
// stream writes the way a gateway does.
type fixture struct {
	t       testing.TB
	env     *natstest.Env
	db      *persist.DB
	waiters *streams.Waiters
	client  *streams.IntentClient
}

func newFixture(t testing.TB, writers map[string][]string) *fixture {
	t.Helper()
	env := natstest.Start(t)
	db, err := persist.Open(context.Background(), pgtest.DSN(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	waiters := &streams.Waiters{}
	return &fixture{t: t, env: env, db: db, waiters: waiters, client: &streams.IntentClient{
		Topology: env.Topology, JS: env.JS, NC: env.NC, StreamWriters: writers, Waiters: waiters, Log: zaptest.NewLogger(t)}}
}

// runWriter starts a writer of st named name; stop ends it and waits for it.
func (fx *fixture) runWriter(name string, st Stream) (w *Writer, stop func()) {
	fx.t.Helper()
	w, err := New(Config{Name: name, Stream: st, Topology: fx.env.Topology, JS: fx.env.JS, NC: fx.env.NC, DB: fx.db,
		Waiters: fx.waiters, Log: zaptest.NewLogger(fx.t).Named(name)})
	if err != nil {
		fx.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(ctx); err != nil {
			fx.t.Errorf("writer %s: %v", name, err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	fx.t.Cleanup(stop)
	return w, stop
}

// write sends one write and returns the writer's answer.
func (fx *fixture) write(stream, op, key, user string, body any) *schemas.IntentResult {
	fx.t.Helper()
	return fx.writeID(nats.NewInbox()[len(nats.InboxPrefix):], stream, op, key, user, body)
}

// writeID sends one write with the given ID, as a gateway resending it would.
func (fx *fixture) writeID(id, stream, op, key, user string, body any) *schemas.IntentResult {
	fx.t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		fx.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := fx.client.Write(ctx, &schemas.StreamWrite{V: schemas.StreamWriteVersion, ID: id, Stream: stream, Op: op,
		Key: key, User: user, IssuedAtMS: time.Now().UnixMilli(), Body: raw})
	if err != nil {
		fx.t.Errorf("write %s %s: %v", stream, op, err)
		return &schemas.IntentResult{}
	}
	if res.Error != nil {
		fx.t.Errorf("write %s %s refused: %+v", stream, op, res.Error)
	}
	return res
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
