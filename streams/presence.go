package streams

import (
	"time"

	"github.com/nats-io/nats.go"
)

// UserSyncSubject is where client-serving processes tell the presence writer which of
// their users are syncing (schemas.UserSync, core NATS, fire and forget): Synapse's
// USER_SYNC and CLEAR_USER_SYNC. It is outside <ns>.intents.>, so JetStream keeps none
// of it: a notice matters for seconds, and the next one repairs a lost one.
func (t Topology) UserSyncSubject(writer string) string {
	return t.ns() + ".user_sync." + writer
}

// Notices publishes fire-and-forget messages to one core NATS subject.
type Notices struct {
	NC      *nats.Conn
	Subject string
}

func (n Notices) Publish(data []byte) error { return n.NC.Publish(n.Subject, data) }

// Flush waits, a second at most, until the server has what was published.
func (n Notices) Flush() error { return n.NC.FlushTimeout(time.Second) }
