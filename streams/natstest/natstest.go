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

// Conn is one test's own JetStream server, on a random port, and a connection to it.
type Conn struct {
	Server *server.Server
	URL    string
	NC     *nats.Conn
	JS     jetstream.JetStream
}

// Env is a Conn with a topology under a random namespace whose streams exist.
type Env struct {
	Conn
	Topology streams.Topology
}

// Connect starts the server, with no streams, and connects to it; everything stops at
// cleanup. Tests of their own streams start here.
func Connect(t testing.TB) *Conn {
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
	return &Conn{Server: ns, URL: ns.ClientURL(), NC: nc, JS: js}
}

// Start connects and ensures the topology; everything stops at cleanup.
func Start(t testing.TB) *Env {
	t.Helper()
	c := Connect(t)
	topo := streams.Topology{Namespace: Namespace()}
	if err := topo.Ensure(context.Background(), c.JS); err != nil {
		t.Fatal(err)
	}
	return &Env{Conn: *c, Topology: topo}
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
