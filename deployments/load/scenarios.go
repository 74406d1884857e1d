package load

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"
)

// warmup sends a few messages first so connections, caches and the server's pools are
// in their steady state before the clock starts.
const warmup = 20

// sendLoad runs one send scenario: each client sends perClient messages one after the
// other, to the rooms rooms[i] gives it in turn, all clients at once. It returns the
// aggregate rate and every send's latency. Sending stops early when ctx ends or the
// run exceeds limit; a failed send is counted and stops that client.
func sendLoad(ctx context.Context, hs *homeserver, m *meter, name string, clients []*user, rooms [][]id.RoomID, perClient int, limit time.Duration) (result, error) {
	lats := make([][]time.Duration, len(clients))
	fails := make([]int, len(clients))
	var firstErr error
	var errOnce sync.Once
	fail := func(i int, err error) {
		fails[i]++
		errOnce.Do(func() { firstErr = err })
	}
	var ready, wg sync.WaitGroup
	start := make(chan struct{})
	// runCtx bounds the measured part; it is set before start is closed.
	var runCtx context.Context
	for i, u := range clients {
		lats[i] = make([]time.Duration, 0, perClient)
		ready.Add(1)
		wg.Go(func() {
			for k := range warmup {
				if _, err := hs.send(ctx, u, rooms[i][k%len(rooms[i])]); err != nil {
					fail(i, fmt.Errorf("warm-up: %w", err))
					ready.Done()
					return
				}
			}
			ready.Done()
			<-start
			ctx := runCtx
			for k := range perClient {
				if ctx.Err() != nil {
					return
				}
				r := rooms[i][k%len(rooms[i])]
				t := time.Now()
				if _, err := hs.send(ctx, u, r); err != nil {
					if !errors.Is(err, context.DeadlineExceeded) {
						fail(i, err)
					}
					return
				}
				lats[i] = append(lats[i], time.Since(t))
			}
		})
	}
	ready.Wait()
	// The time limit starts with the measured part.
	runCtx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	if firstErr != nil {
		cancel()
		close(start)
		wg.Wait()
		return result{}, fmt.Errorf("%s: %w", name, firstErr)
	}
	cpu0 := m.sample(ctx)
	t0 := time.Now()
	close(start)
	wg.Wait()
	res := result{name: name, elapsed: time.Since(t0), cpu: m.since(ctx, cpu0)}
	for i := range clients {
		res.ops += len(lats[i])
		res.lat = append(res.lat, lats[i]...)
		res.failures += fails[i]
	}
	if firstErr != nil {
		return res, fmt.Errorf("%s: %d sends failed, first: %w", name, res.failures, firstErr)
	}
	return res, nil
}

// deliveryLatency is the outcome of a paced measurement (send→sync, send→service).
type deliveryLatency struct {
	result
	sendRate   float64 // achieved sends/s
	beforeSend int     // events that arrived before their send's 200 did
	missing    int     // events that never arrived within the grace period
	limited    int     // /sync timelines cut short (events in them could be missed)
	// fromRequest are the latencies from the moment each send was made, not its 200:
	// what a sender's correspondent waits, wherever the server answers the send.
	fromRequest []time.Duration
}

// syncFilter asks /sync for room timelines only, long enough that a long-poll never
// truncates what arrived since the last one at the paced rate.
const syncFilter = `{"room":{"timeline":{"limit":1000},"state":{"lazy_load_members":true}},"presence":{"types":[]},"account_data":{"types":[]}}`

// initialSyncFilter keeps the first /sync small: it only needs the token.
const initialSyncFilter = `{"room":{"timeline":{"limit":1}},"presence":{"types":[]},"account_data":{"types":[]}}`

// measureSendToSync sends at a fixed pace while receiver long-polls /sync in all of the
// senders' rooms (measurePaced); each latency ends when the /sync answer carrying the
// event was read.
func measureSendToSync(ctx context.Context, hs *homeserver, m *meter, receiver *user, senders []*user, rooms []id.RoomID, rate float64, n int) (deliveryLatency, error) {
	first, err := hs.sync(ctx, receiver, "", initialSyncFilter, 0)
	if err != nil {
		return deliveryLatency{}, fmt.Errorf("send→sync: initial sync: %w", err)
	}
	var limited int
	watch := func(ctx context.Context, seen func(eventID string, at time.Time)) error {
		since := first.NextBatch
		for ctx.Err() == nil {
			resp, err := hs.sync(ctx, receiver, since, syncFilter, 30*time.Second)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				return fmt.Errorf("/sync: %w", err)
			}
			now := time.Now()
			for _, jr := range resp.Rooms.Join {
				if jr.Timeline.Limited {
					limited++
				}
				for _, ev := range jr.Timeline.Events {
					seen(ev.EventID, now)
				}
			}
			since = resp.NextBatch
		}
		return nil
	}
	out, err := measurePaced(ctx, hs, m, "send→sync", senders, rooms, rate, n, watch)
	out.limited = limited
	return out, err
}

// deliveryWatch follows where sent events arrive (another client's /sync, an
// application service) until ctx ends, calling seen for each event with when it arrived.
type deliveryWatch func(ctx context.Context, seen func(eventID string, at time.Time)) error

// measurePaced sends at a fixed pace (open loop: a send is due at its slot whether or
// not earlier ones are done) for n sends spread over the senders, each sending to its
// own room, while watch follows where they arrive. Each latency is from the send's 200
// to the event's arrival.
func measurePaced(ctx context.Context, hs *homeserver, m *meter, name string, senders []*user, rooms []id.RoomID, rate float64, n int, watch deliveryWatch) (deliveryLatency, error) {
	var mu sync.Mutex
	sent := make(map[string]time.Time, n)
	requested := make(map[string]time.Time, n)
	seen := make(map[string]time.Time, n)
	var out deliveryLatency
	out.name = name

	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- watch(watchCtx, func(eventID string, at time.Time) {
			mu.Lock()
			if _, dup := seen[eventID]; !dup {
				seen[eventID] = at
			}
			mu.Unlock()
		})
	}()

	// Give the watch a moment to be in place (a long-poll parked on the server) before
	// the first send.
	time.Sleep(100 * time.Millisecond)

	slots := make(chan struct{}, n)
	var wg sync.WaitGroup
	var sendErr error
	var errOnce sync.Once
	cpu0 := m.sample(ctx)
	t0 := time.Now()
	for i, u := range senders {
		wg.Go(func() {
			for range slots {
				began := time.Now()
				evID, err := hs.send(ctx, u, rooms[i])
				if err != nil {
					errOnce.Do(func() { sendErr = err })
					return
				}
				now := time.Now()
				mu.Lock()
				sent[evID] = now
				requested[evID] = began
				mu.Unlock()
			}
		})
	}
	interval := time.Duration(float64(time.Second) / rate)
	for k := range n {
		if d := time.Until(t0.Add(time.Duration(k) * interval)); d > 0 {
			time.Sleep(d)
		}
		if ctx.Err() != nil {
			break
		}
		slots <- struct{}{}
	}
	close(slots)
	wg.Wait()
	sendElapsed := time.Since(t0)
	if sendErr != nil {
		return out, fmt.Errorf("%s: send: %w", name, sendErr)
	}

	grace := time.Now().Add(10 * time.Second)
	for time.Now().Before(grace) {
		mu.Lock()
		all := true
		for e := range sent {
			if _, ok := seen[e]; !ok {
				all = false
				break
			}
		}
		mu.Unlock()
		if all {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	out.cpu = m.since(ctx, cpu0)
	stopWatch()
	if err := <-watchDone; err != nil {
		return out, fmt.Errorf("%s: %w", name, err)
	}

	mu.Lock()
	defer mu.Unlock()
	out.ops = len(sent)
	out.elapsed = sendElapsed
	out.sendRate = float64(len(sent)) / sendElapsed.Seconds()
	for e, at := range sent {
		s, ok := seen[e]
		if ok {
			out.fromRequest = append(out.fromRequest, s.Sub(requested[e]))
		}
		switch {
		case !ok:
			out.missing++
		case s.Before(at):
			// It arrived before the sender read its 200: no wait at all.
			out.beforeSend++
			out.lat = append(out.lat, 0)
		default:
			out.lat = append(out.lat, s.Sub(at))
		}
	}
	return out, nil
}
