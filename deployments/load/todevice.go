package load

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// Targets of issue 6 for to-device messages.
const (
	targetToDeviceRate = 5000.0
	// targetToDeviceSyncs is how many /syncs 1,000 messages to one device may take.
	targetToDeviceSyncs = 2
)

// toDeviceRun is scenario (h).
type toDeviceRun struct {
	senders, perRequest int
	send                result
	// syncs is how many /syncs the receiver needed for the ordered batch of
	// orderedCount messages; inOrder whether they came in the order sent.
	orderedCount, syncs int
	inOrder             bool
}

// measureToDevice has senders send n to-device messages, perRequest per request, all at
// once, and times the sends; then one sender sends ordered messages to a receiver's
// device, one request each, and the receiver syncs them.
func measureToDevice(ctx context.Context, hs *homeserver, m *meter, prefix string, senders, n, perRequest, ordered int) (toDeviceRun, error) {
	out := toDeviceRun{senders: senders, perRequest: perRequest, orderedCount: ordered}
	receiver, err := hs.register(ctx, prefix+"_inbox")
	if err != nil {
		return out, err
	}
	users, err := hs.registerMany(ctx, prefix+"_td", senders)
	if err != nil {
		return out, err
	}
	// Each request carries perRequest messages, to the devices of as many other senders
	// (real devices, which keep what they are sent): key sharing sends to many devices
	// at once like this.
	body := func(i, k int) map[string]any {
		msgs := map[string]any{}
		for j := range perRequest {
			to := users[(i+1+j)%len(users)]
			msgs[string(to.id)] = map[string]any{string(to.device): map[string]any{"n": k, "from": i}}
		}
		return map[string]any{"messages": msgs}
	}
	perSender := n / senders / perRequest
	res := result{name: "to-device", lat: make([]time.Duration, 0, perSender*senders)}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	cpu0 := m.sample(ctx)
	t0 := time.Now()
	for i, u := range users {
		wg.Go(func() {
			for k := range perSender {
				t := time.Now()
				if err := hs.sendToDevice(ctx, u, body(i, k)); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				mu.Lock()
				res.lat = append(res.lat, time.Since(t))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.elapsed, res.cpu = time.Since(t0), m.since(ctx, cpu0)
	res.ops = perSender * senders * perRequest
	out.send = res
	if firstErr != nil {
		return out, fmt.Errorf("to-device: %w", firstErr)
	}

	// Drain the receiver, then the ordered batch.
	since := ""
	for {
		r, err := hs.sync(ctx, receiver, since, initialSyncFilter, 0)
		if err != nil {
			return out, err
		}
		since = r.NextBatch
		if len(r.ToDevice.Events) == 0 {
			break
		}
	}
	for k := range ordered {
		msg := map[string]any{"messages": map[string]any{string(receiver.id): map[string]any{string(receiver.device): map[string]any{"n": k}}}}
		if err := hs.sendToDevice(ctx, users[0], msg); err != nil {
			return out, err
		}
	}
	got := 0
	out.inOrder = true
	for got < ordered && out.syncs < 10 {
		r, err := hs.sync(ctx, receiver, since, initialSyncFilter, 5*time.Second)
		if err != nil {
			return out, err
		}
		since = r.NextBatch
		if len(r.ToDevice.Events) > 0 {
			out.syncs++
		}
		for _, ev := range r.ToDevice.Events {
			var c struct {
				N int `json:"n"`
			}
			if json.Unmarshal(ev.Content, &c) != nil || c.N != got {
				out.inOrder = false
			}
			got++
		}
	}
	if got != ordered {
		return out, fmt.Errorf("to-device: %d of %d ordered messages arrived", got, ordered)
	}
	return out, nil
}

// sendToDevice PUTs one /sendToDevice request.
func (hs *homeserver) sendToDevice(ctx context.Context, u *user, body any) error {
	u.txn++
	path := "/_matrix/client/v3/sendToDevice/org.example.load/" + url.PathEscape(u.txnPrefix+"-"+strconv.Itoa(u.txn))
	return hs.put(ctx, u, http.MethodPut, path, body)
}

func printToDevice(out io.Writer, r toDeviceRun) {
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "short"
	}
	rate := r.send.rate()
	fmt.Fprintf(out, "(h) to-device: %d messages from %d senders, %d per request: %.0f messages/s, request p50 %s, p99 %s, CPU/message %s (target ≥ %.0f/s: %s)\n",
		r.send.ops, r.senders, r.perRequest, rate, fmtDur(percentile(r.send.lat, 0.5)), fmtDur(percentile(r.send.lat, 0.99)),
		fmtDur(r.send.cpuPerOp()), targetToDeviceRate, verdict(rate >= targetToDeviceRate))
	ok := r.inOrder && r.syncs <= targetToDeviceSyncs
	fmt.Fprintf(out, "    %d messages to one device arrived in %d /syncs, in order: %v (target ≤ %d syncs, in order: %s)\n",
		r.orderedCount, r.syncs, r.inOrder, targetToDeviceSyncs, verdict(ok))
}
