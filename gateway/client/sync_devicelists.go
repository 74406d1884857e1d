package client

import (
	"context"
	"slices"

	"github.com/ganglionhq/ganglion/persist/e2ekeys"
	"github.com/ganglionhq/ganglion/streams"
)

// deviceListsStream is the device_lists stream's part of /sync: device_lists.changed
// and .left, and the syncing device's one-time key counts and unused fallback key
// types, which every response carries.
type deviceListsStream struct {
	feedStream
	s      *Server
	counts boundedMap[Device, cachedCounts]
}

func (d *deviceListsStream) fill(ctx context.Context, sc *syncCtx, since, to uint64) error {
	counts, err := d.keyCounts(ctx, sc, to)
	if err != nil {
		return err
	}
	sc.res.DeviceOneTimeKeysCount = counts.OneTimeKeys
	sc.res.DeviceUnusedFallbackKeyTypes = counts.UnusedFallback
	// An initial sync has no device list changes: the client fetches every list.
	if !sc.req.incremental {
		return nil
	}
	from := sc.req.since
	from[slotDeviceLists] = since
	changed, left, err := d.s.deviceListUpdates(ctx, sc.dev.UserID, sc.joined, from, sc.next, d.changed(sc, since))
	if err != nil {
		return err
	}
	sc.res.DeviceLists = deviceLists{Changed: changed, Left: left}
	return nil
}

// keyCounts returns the device's key counts as of to, from memory when no record
// concerning the user came since they were read.
func (d *deviceListsStream) keyCounts(ctx context.Context, sc *syncCtx, to uint64) (e2ekeys.KeyCounts, error) {
	if c, ok := d.counts.get(sc.dev); ok && c.at <= to {
		if changed, known := d.feed.NewSince(c.at, []string{sc.dev.UserID}); known && !changed {
			return c.counts, nil
		}
	}
	c, err := d.s.keyStore().Counts(ctx, sc.dev.UserID, sc.dev.DeviceID)
	if err != nil {
		return c, err
	}
	d.counts.put(sc.dev, cachedCounts{counts: c, at: to})
	return c, nil
}

// deviceListUpdates computes device_lists for a user between two sync tokens, as
// Synapse does: changed are the users sharing a room with them (and themselves) whose
// devices or keys changed, those whose master key they signed, and those who started
// sharing a room with them (joins and invites in their rooms, everyone in a room they
// joined); left are those who stopped sharing any room (leaves in their rooms, everyone
// in a room they left). joined are the user's rooms at the end; keysMayHaveChanged is
// false when the device_lists feed knows that nothing concerning the user came.
func (s *Server) deviceListUpdates(ctx context.Context, user string, joined []string, from, to syncToken, keysMayHaveChanged bool) (changed, left []string, err error) {
	changedSet := map[string]bool{}
	if keysMayHaveChanged && to[slotDeviceLists] > from[slotDeviceLists] {
		users, err := s.keyStore().ChangedUsers(ctx, user, joined, from[slotDeviceLists], to[slotDeviceLists])
		if err != nil {
			return nil, nil, err
		}
		for _, u := range users {
			changedSet[u] = true
		}
	}
	leftSet := map[string]bool{}
	if to[slotEvents] > from[slotEvents] && s.membershipMayHaveChanged(user, joined, from[slotEvents]) {
		deltas, err := s.DB.MembershipDeltas(ctx, user, joined, from[slotEvents], to[slotEvents])
		if err != nil {
			return nil, nil, err
		}
		inRoom := make(map[string]bool, len(joined))
		for _, r := range joined {
			inRoom[r] = true
		}
		var joinedRooms, leftRooms []string
		for _, d := range deltas {
			sharedBefore, sharedAfter := sharesRoom(d.Before), sharesRoom(d.After)
			switch {
			case d.UserID == user && d.Before != "join" && d.After == "join":
				joinedRooms = append(joinedRooms, d.RoomID)
			case d.UserID == user && d.Before == "join" && d.After != "join":
				leftRooms = append(leftRooms, d.RoomID)
			case d.UserID == user || !inRoom[d.RoomID]:
			case sharedAfter && !sharedBefore:
				changedSet[d.UserID] = true
				delete(leftSet, d.UserID)
			case sharedBefore && !sharedAfter:
				leftSet[d.UserID] = true
			}
		}
		if len(joinedRooms)+len(leftRooms) > 0 {
			members, err := s.DB.JoinedMembers(ctx, append(joinedRooms, leftRooms...))
			if err != nil {
				return nil, nil, err
			}
			for _, r := range joinedRooms {
				for _, u := range members[r] {
					changedSet[u] = true
				}
			}
			for _, r := range leftRooms {
				for _, u := range members[r] {
					leftSet[u] = true
				}
			}
		}
		delete(leftSet, user)
		if len(leftSet) > 0 {
			candidates := make([]string, 0, len(leftSet))
			for u := range leftSet {
				candidates = append(candidates, u)
			}
			still, err := s.DB.JoinedAny(ctx, candidates, joined)
			if err != nil {
				return nil, nil, err
			}
			for _, u := range still {
				delete(leftSet, u)
			}
		}
	}
	changed, left = []string{}, []string{}
	for u := range changedSet {
		if !leftSet[u] {
			changed = append(changed, u)
		}
	}
	for u := range leftSet {
		left = append(left, u)
	}
	slices.Sort(changed)
	slices.Sort(left)
	return changed, left, nil
}

// membershipMayHaveChanged tells from the events feed's memory whether anything came in
// the user's rooms, or about the user's own membership, after since: most incremental
// syncs skip the membership query this way.
func (s *Server) membershipMayHaveChanged(user string, joined []string, since uint64) bool {
	if s.Feed == nil {
		return true
	}
	keys := make([]string, 0, len(joined)+1)
	for _, r := range joined {
		keys = append(keys, streams.MembershipKey(r))
	}
	changed, known := s.Feed.NewSince(since, append(keys, user))
	return changed || !known
}

// sharesRoom reports whether a membership counts as sharing the room for device-list
// tracking (Synapse counts invited and knocking users too).
func sharesRoom(m string) bool { return m == "join" || m == "invite" || m == "knock" }

// cachedCounts are a device's key counts and the device_lists position they were read
// at.
type cachedCounts struct {
	counts e2ekeys.KeyCounts
	at     uint64
}
