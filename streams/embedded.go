package streams

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// EmbeddedOptions configures a NATS server run inside this process.
type EmbeddedOptions struct {
	StoreDir string
	// Port is the client port; 0 means no listener (in-process clients only), -1 a
	// random free port.
	Port         int
	SyncInterval time.Duration
	SyncAlways   bool
}

// StartEmbedded starts a JetStream-enabled NATS server in this process and waits until
// it accepts connections.
func StartEmbedded(o EmbeddedOptions) (*server.Server, error) {
	opts := &server.Options{
		ServerName:   "ganglion-embedded",
		Host:         "127.0.0.1",
		Port:         o.Port,
		DontListen:   o.Port == 0,
		JetStream:    true,
		StoreDir:     o.StoreDir,
		SyncInterval: o.SyncInterval,
		SyncAlways:   o.SyncAlways,
		NoSigs:       true,
		NoLog:        true,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embedded nats: not ready after 30s")
	}
	return ns, nil
}

// ConnectEmbedded connects to an embedded server without going through TCP.
func ConnectEmbedded(ns *server.Server, name string) (*nats.Conn, error) {
	return nats.Connect("", nats.InProcessServer(ns), nats.Name(name), nats.MaxReconnects(-1))
}
