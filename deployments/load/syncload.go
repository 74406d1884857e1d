package load

import (
	"context"
	"fmt"
	"io"
	"time"
)

// Targets of issue 6 for /sync of a user in many rooms.
const (
	targetInitialSyncP50   = 100 * time.Millisecond
	targetEmptyIncrSyncP99 = 2 * time.Millisecond
)

// roomSyncs are the /sync measurements of one user in many rooms.
type roomSyncs struct {
	rooms int
	// initial are full initial syncs (default filter); empty are incremental syncs
	// with nothing new, timeout 0.
	initial, empty result
}

// measureRoomSyncs makes a user who is in n rooms, then times initialReps initial
// /syncs and emptyReps incremental ones that have nothing to report.
func measureRoomSyncs(ctx context.Context, hs *homeserver, m *meter, prefix string, n, initialReps, emptyReps int) (roomSyncs, error) {
	out := roomSyncs{rooms: n}
	u, err := hs.register(ctx, prefix+"_rooms")
	if err != nil {
		return out, err
	}
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for range n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			_, err := u.createRoom(ctx)
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			return out, err
		}
	}
	// One sync first: connections and caches in their steady state.
	first, err := hs.sync(ctx, u, "", "", 0)
	if err != nil {
		return out, fmt.Errorf("initial sync: %w", err)
	}
	if got := len(first.Rooms.Join); got != n {
		return out, fmt.Errorf("initial sync lists %d of the user's %d rooms", got, n)
	}
	out.initial, err = timeSyncs(ctx, hs, m, u, "initial /sync", "", initialReps)
	if err != nil {
		return out, err
	}
	if _, err := hs.sync(ctx, u, first.NextBatch, "", 0); err != nil {
		return out, err
	}
	out.empty, err = timeSyncs(ctx, hs, m, u, "incremental /sync, nothing new", first.NextBatch, emptyReps)
	return out, err
}

func timeSyncs(ctx context.Context, hs *homeserver, m *meter, u *user, name, since string, reps int) (result, error) {
	res := result{name: name, lat: make([]time.Duration, 0, reps)}
	cpu0 := m.sample(ctx)
	t0 := time.Now()
	for range reps {
		t := time.Now()
		if _, err := hs.sync(ctx, u, since, "", 0); err != nil {
			return res, fmt.Errorf("%s: %w", name, err)
		}
		res.lat = append(res.lat, time.Since(t))
	}
	res.elapsed, res.ops, res.cpu = time.Since(t0), reps, m.since(ctx, cpu0)
	return res, nil
}

func printRoomSyncs(out io.Writer, s roomSyncs) {
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "short"
	}
	p50 := percentile(s.initial.lat, 0.5)
	fmt.Fprintf(out, "(e) initial /sync of a user in %d rooms, %d times: p50 %s, p99 %s, CPU/sync %s (target p50 ≤ %s: %s)\n",
		s.rooms, s.initial.ops, fmtDur(p50), fmtDur(percentile(s.initial.lat, 0.99)), fmtDur(s.initial.cpuPerOp()),
		targetInitialSyncP50, verdict(p50 <= targetInitialSyncP50))
	p99 := percentile(s.empty.lat, 0.99)
	fmt.Fprintf(out, "(f) incremental /sync with nothing new, same user, %d times: p50 %s, p99 %s, CPU/sync %s (target p99 ≤ %s: %s)\n",
		s.empty.ops, fmtDur(percentile(s.empty.lat, 0.5)), fmtDur(p99), fmtDur(s.empty.cpuPerOp()),
		targetEmptyIncrSyncP99, verdict(p99 <= targetEmptyIncrSyncP99))
}
