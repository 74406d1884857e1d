package client

import (
	"github.com/nats-io/nats.go"

	"github.com/ganglionhq/ganglion/schemas"
)

// Views are what /sync keeps in memory of some streams, fed by their sync feeds
// (syncfeed.Config.Observe): who types where, and the newest receipts. Create them with
// NewViews before the feeds, hand Observer(stream) to each feed, and give them to the
// Server.
type Views struct {
	Typers   *Typers
	Receipts *RecentReceipts
}

// NewViews returns empty views.
func NewViews() *Views {
	return &Views{Typers: &Typers{}, Receipts: NewRecentReceipts(defaultRecentReceipts)}
}

// Observer is what the feed of stream hands its records to, or nil when /sync keeps
// nothing of that stream in memory.
func (v *Views) Observer(stream string) func(seq uint64, h nats.Header, data []byte) {
	switch stream {
	case schemas.StreamTyping:
		return v.Typers.Observe
	case schemas.StreamReceipts:
		return v.Receipts.Observe
	}
	return nil
}
