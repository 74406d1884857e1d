package client

import (
	"context"
	"time"

	"github.com/ganglionhq/ganglion/persist"
	"github.com/ganglionhq/ganglion/persist/notifications"
)

// Evaluated is how far the pusher of each user has evaluated the EVENTS log, as the
// pusher instances announce it (streams.Followed).
type Evaluated interface {
	Wait(ctx context.Context, user string, seq uint64) error
}

// notificationsStore reads the notifications the pusher stored: their counts for
// /sync, their pages for /notifications.
type notificationsStore interface {
	Counts(ctx context.Context, user string, rooms []string) (map[string]map[string]notifications.Count, error)
	List(ctx context.Context, user string, before persist.Pos, limit int, onlyHighlights bool) ([]notifications.Listed, error)
}

// evaluatedWait bounds how long a /sync waits for its user's pusher to evaluate the
// events it shows before counting notifications: past it, the counts may miss the
// newest events until the next /sync.
const evaluatedWait = 500 * time.Millisecond

// fillUnread sets the notification counts of the joined rooms of the response: each
// room's total, or, when the filter asks for unread_thread_notifications, the main
// timeline's with each thread's apart (MSC3773).
func (s *Server) fillUnread(ctx context.Context, sc *syncCtx) error {
	if len(sc.res.Rooms.Join) == 0 || s.NoPushers {
		return nil
	}
	if s.Evaluated != nil {
		wctx, cancel := context.WithTimeout(ctx, evaluatedWait)
		_ = s.Evaluated.Wait(wctx, sc.dev.UserID, sc.next[slotEvents])
		cancel()
	}
	rooms := make([]string, 0, len(sc.res.Rooms.Join))
	for room := range sc.res.Rooms.Join {
		rooms = append(rooms, room)
	}
	counts, err := s.notifications.Counts(ctx, sc.dev.UserID, rooms)
	if err != nil {
		return err
	}
	tl := sc.req.filter.timeline()
	threaded := tl != nil && tl.UnreadThreadNotifications
	for room, threads := range counts {
		jr := sc.res.Rooms.Join[room]
		for thread, c := range threads {
			if threaded && thread != notifications.MainThread {
				if jr.UnreadThreadNotifications == nil {
					jr.UnreadThreadNotifications = map[string]notifications.Count{}
				}
				jr.UnreadThreadNotifications[thread] = c
				continue
			}
			jr.UnreadNotifications.Notifications += c.Notifications
			jr.UnreadNotifications.Highlights += c.Highlights
		}
	}
	return nil
}
