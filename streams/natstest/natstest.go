// Package natstest gives tests their own JetStream server and namespace, so they run in
// parallel against real NATS and rerun cleanly after a crash.
package natstest

import (
	"context"
	"crypto/rand"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ganglionhq/ganglion/streams"
)

// Env is one test's NATS: a server of its own on a random port, a connection, and a
// topology with a random namespace whose streams exist.
type Env struct {
	Server   *server.Server
	URL      string
	NC       *nats.Conn
	JS       jetstream.JetStream
	Topology streams.Topology
}

// Start starts the server and ensures the topology; everything stops at cleanup.
func Start(t testing.TB) *Env {
	t.Helper()
	ns, err := streams.StartEmbedded(streams.EmbeddedOptions{StoreDir: t.TempDir(), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	topo := streams.Topology{Namespace: Namespace()}
	if err := topo.Ensure(context.Background(), js); err != nil {
		t.Fatal(err)
	}
	return &Env{Server: ns, URL: ns.ClientURL(), NC: nc, JS: js, Topology: topo}
}

// Namespace returns a random NATS namespace.
func Namespace() string {
	const letters = "abcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return "t" + string(b)
}
