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

// syncLatency is the send→sync measurement's outcome.
type syncLatency struct {
	result
	sendRate   float64 // achieved sends/s
	beforeSend int     // events /sync delivered before their send's 200 arrived
	missing    int     // events never seen in /sync within the grace period
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

// measureSendToSync sends at a fixed pace (open loop: a send is due at its slot whether
// or not earlier ones are done) for n sends spread over the senders, each sending to its
// own room, while receiver long-polls /sync in all of those rooms. Each latency is from
// the send's 200 to the moment the /sync answer carrying the event was read.
func measureSendToSync(ctx context.Context, hs *homeserver, m *meter, receiver *user, senders []*user, rooms []id.RoomID, rate float64, n int) (syncLatency, error) {
	first, err := hs.sync(ctx, receiver, "", initialSyncFilter, 0)
	if err != nil {
		return syncLatency{}, fmt.Errorf("send→sync: initial sync: %w", err)
	}
	var mu sync.Mutex
	sent := make(map[string]time.Time, n)
	requested := make(map[string]time.Time, n)
	seen := make(map[string]time.Time, n)
	var out syncLatency
	out.name = "send→sync"

	// The receiver: a long-poll loop until every sent event is seen, or the grace
	// period after the last send ends.
	recvCtx, stopRecv := context.WithCancel(ctx)
	defer stopRecv()
	recvDone := make(chan error, 1)
	go func() {
		since := first.NextBatch
		for recvCtx.Err() == nil {
			resp, err := hs.sync(recvCtx, receiver, since, syncFilter, 30*time.Second)
			if err != nil {
				if recvCtx.Err() != nil {
					break
				}
				recvDone <- fmt.Errorf("send→sync: /sync: %w", err)
				return
			}
			now := time.Now()
			mu.Lock()
			for _, jr := range resp.Rooms.Join {
				if jr.Timeline.Limited {
					out.limited++
				}
				for _, ev := range jr.Timeline.Events {
					if _, dup := seen[ev.EventID]; !dup {
						seen[ev.EventID] = now
					}
				}
			}
			mu.Unlock()
			since = resp.NextBatch
		}
		recvDone <- nil
	}()

	// Give the long-poll a moment to be parked on the server before the first send.
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
		return out, fmt.Errorf("send→sync: send: %w", sendErr)
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
	stopRecv()
	if err := <-recvDone; err != nil {
		return out, err
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
			// The long-poll answered before the sender read its 200: no wait at all.
			out.beforeSend++
			out.lat = append(out.lat, 0)
		default:
			out.lat = append(out.lat, s.Sub(at))
		}
	}
	return out, nil
}
