package client

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/ganglionhq/ganglion/persist"
)

// erasedTTL is how long the set of erased users is used before it is read again: an
// erasure shows in reads within it.
const erasedTTL = 5 * time.Second

// erasedUsers caches the users deactivated with erase.
type erasedUsers struct {
	mu   sync.Mutex
	at   time.Time
	set  map[string]bool
	load func(ctx context.Context) ([]string, error)
	// rereadUntil is when reads stop reading the set again each time: another process
	// erases a user, and Postgres may not show it yet.
	rereadUntil time.Time
}

// erasedElsewhere makes the set be read again at every get for erasedTTL: another
// process erases a user, and its projection lands a moment after its record.
func (e *erasedUsers) erasedElsewhere() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.rereadUntil = time.Now().Add(erasedTTL)
}

// get returns the erased users, read again when the cache is older than erasedTTL; a
// failed read keeps the last set.
func (e *erasedUsers) get() map[string]bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.load == nil || time.Since(e.at) < erasedTTL && time.Now().After(e.rereadUntil) {
		return e.set
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if users, err := e.load(ctx); err == nil {
		e.set = make(map[string]bool, len(users))
		for _, u := range users {
			e.set[u] = true
		}
		e.at = time.Now()
	}
	return e.set
}

// asSeen converts events into the client format as the reader sees them: with their
// membership at each (unsigned.membership), and the events of erased users redacted
// unless the reader was joined to the room when they were sent, as Synapse shows them.
func (s *Server) asSeen(evs []persist.StoredEvent, dev Device, memberships []string) []json.RawMessage {
	if erased := s.erased.get(); len(erased) > 0 {
		copied := false
		for i := range evs {
			if !erased[evs[i].Sender] || memberships[i] == "join" || evs[i].RedactedBy != "" {
				continue
			}
			if !copied {
				evs, copied = slices.Clone(evs), true
			}
			if red, err := persist.Redact(evs[i].RoomVersion, evs[i].JSON); err == nil {
				evs[i].JSON = red
			}
		}
	}
	return clientEventsAs(evs, dev, memberships)
}
