package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/ganglionhq/ganglion/gateway/matrix"
	"github.com/ganglionhq/ganglion/persist/presence"
	"github.com/ganglionhq/ganglion/schemas"
)

// presenceStream is the presence stream's part of /sync, as Synapse builds it: on an
// initial (or full_state) sync the presence of the user and of everyone sharing a room
// with them, offline users left out; on an incremental one whose presence among those
// changed, offline included, and everyone the user newly shares a room with.
type presenceStream struct {
	feedStream
	s *Server
}

// blocksAllPresence reports whether f lets no presence through (Synapse's
// blocks_all_presence): /sync then never looks. What passes a filter that lets some
// through is decided with every stream's output (syncCtx.applyFilter).
func blocksAllPresence(f *filter) bool {
	ef := f.Presence
	return ef != nil && (ef.Types != nil && len(*ef.Types) == 0 || slices.Contains(ef.NotTypes, "*") ||
		ef.Senders != nil && len(*ef.Senders) == 0 || slices.Contains(ef.NotSenders, "*"))
}

func (p *presenceStream) fill(ctx context.Context, sc *syncCtx, since, to uint64) error {
	settings := p.s.Presence
	// An incremental sync from presence position 0 (a token of an older build, or
	// from before any presence) still wants the changes, offline users included.
	initial := !sc.req.incremental || sc.req.fullState
	// With presence off, an incremental sync still gets what was written since its
	// token: the offline states of everyone, announced when presence was turned off.
	if blocksAllPresence(sc.req.filter) || !settings.Enabled && (initial || since >= to) {
		return nil
	}
	user := sc.dev.UserID
	var items []presence.Item
	var err error
	switch {
	case initial:
		items, err = p.s.presence.Visible(ctx, user, settings.IncludeOfflineUsersOnSync)
	case p.changed(sc, since):
		items, err = p.s.presence.Changed(ctx, user, since, to)
	}
	if err != nil {
		return err
	}
	if !initial {
		newcomers, err := p.newcomers(ctx, sc)
		if err != nil {
			return err
		}
		items = append(items, newcomers...)
	}
	now := time.Now()
	// A user's last item is the one shown: the newcomers came last.
	last := make(map[string]int, len(items))
	for i := range items {
		last[items[i].User] = i
	}
	for i := range items {
		it := &items[i]
		if last[it.User] != i {
			continue
		}
		ev, err := matrix.Marshal(schemas.NewPresenceEvent(&it.PresenceRecord, now))
		if err != nil {
			return err
		}
		sc.res.Presence.Events = append(sc.res.Presence.Events, ev)
	}
	return nil
}

// newcomers is the presence of everyone the user newly shares a room with since the
// token, whether it changed or not (offline for users without any): the members of
// rooms the user joined, and users who joined, were invited to or knocked on the
// user's rooms, as the response's timelines and state show (Synapse's
// calculate_user_changes).
func (p *presenceStream) newcomers(ctx context.Context, sc *syncCtx) ([]presence.Item, error) {
	users := map[string]bool{}
	var rooms []string
	for room := range sc.newlyJoined {
		rooms = append(rooms, room)
	}
	if len(rooms) > 0 {
		members, err := p.s.presence.JoinedMembers(ctx, rooms)
		if err != nil {
			return nil, err
		}
		for _, m := range members {
			users[m] = true
		}
	}
	for _, jr := range sc.res.Rooms.Join {
		for _, raw := range slices.Concat(jr.Timeline.Events, jr.State.Events) {
			if !bytes.Contains(raw, []byte(`"m.room.member"`)) {
				continue // not worth decoding
			}
			var ev struct {
				Type     string  `json:"type"`
				StateKey *string `json:"state_key"`
				Content  struct {
					Membership string `json:"membership"`
				} `json:"content"`
			}
			if json.Unmarshal(raw, &ev) != nil || ev.Type != "m.room.member" || ev.StateKey == nil {
				continue
			}
			switch ev.Content.Membership {
			case "join", "invite", "knock":
				users[*ev.StateKey] = true
			default:
				// Joined and left since the token: not a newcomer.
				delete(users, *ev.StateKey)
			}
		}
	}
	delete(users, sc.dev.UserID)
	if len(users) == 0 {
		return nil, nil
	}
	ids := make([]string, 0, len(users))
	for u := range users {
		ids = append(ids, u)
	}
	slices.Sort(ids)
	stored, err := p.s.presence.Users(ctx, ids)
	if err != nil {
		return nil, err
	}
	byUser := make(map[string]presence.Item, len(stored))
	for _, it := range stored {
		byUser[it.User] = it
	}
	out := make([]presence.Item, len(ids))
	for i, u := range ids {
		it, ok := byUser[u]
		if !ok {
			it = presence.Item{PresenceRecord: offline(u)}
		}
		out[i] = it
	}
	return out, nil
}

// syncing tells the presence writer that dev syncs with set_presence (Synapse's
// user_syncing); it returns what to call once the /sync is answered. set_presence
// offline, and a /sync beyond rc_presence, leave presence alone; as in Synapse, every
// /sync counts against rc_presence, whatever its set_presence.
//
// A device that starts syncing, or changes its set_presence, may change its user's
// presence (offline to online): the /sync waits, briefly, for the presence writer to
// record that, so the change lands before the response's token, as Synapse records it
// before answering. Otherwise the change would wake the client's next long-poll with
// nothing but the user's own presence.
func (s *Server) syncing(ctx context.Context, dev Device, setPresence string) func() {
	if s.userSyncs == nil {
		return func() {}
	}
	if _, ok := s.limits.presenceSync.Take(dev.UserID); !ok || setPresence == schemas.PresenceOffline {
		return func() {}
	}
	end, changed := s.userSyncs.begin(dev.UserID, dev.DeviceID, setPresence)
	if changed {
		s.awaitOwnPresence(ctx, dev.UserID, setPresence)
	}
	return end
}

// ownPresenceWait bounds how long a /sync waits for its user's presence change.
const ownPresenceWait = 250 * time.Millisecond

// awaitOwnPresence waits until the presence feed shows a record of user after the one
// stored, unless the stored state is already state (nothing will change).
func (s *Server) awaitOwnPresence(ctx context.Context, user, state string) {
	feed := s.StreamFeeds[schemas.StreamPresence]
	if feed == nil {
		return
	}
	cur, err := s.presence.Get(ctx, user)
	switch {
	case err == nil && cur.State == state:
		return
	case err != nil && !errors.Is(err, presence.ErrNotFound):
		return // the sync goes on without waiting; its own query will report the outage
	}
	ch := make(chan struct{}, 1)
	stop := feed.Notify(cur.Pos, []string{user}, ch)
	defer stop()
	t := time.NewTimer(ownPresenceWait)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
	}
}
