package load

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"
)

// targetFanoutP99 is issue 6's bound from a typing PUT or receipt POST to the moment
// every member's long-poll has it.
const targetFanoutP99 = 10 * time.Millisecond

// fanout is scenario (g): ephemeral events reaching every member of one room.
type fanout struct {
	members         int
	typing, receipt result
}

// measureFanout puts n users in one room, each long-polling /sync, and times, for reps
// typing notices and reps read receipts by one of them, how long each member's /sync
// takes to carry it, from the moment the request was sent.
func measureFanout(ctx context.Context, hs *homeserver, m *meter, prefix string, n, reps int) (fanout, error) {
	out := fanout{members: n}
	users, err := hs.registerMany(ctx, prefix+"_fan", n)
	if err != nil {
		return out, err
	}
	room, err := users[0].createRoom(ctx)
	if err != nil {
		return out, err
	}
	for _, u := range users[1:] {
		if err := u.join(ctx, room); err != nil {
			return out, err
		}
	}
	events := make([]string, reps)
	for i := range events {
		if events[i], err = hs.send(ctx, users[0], room); err != nil {
			return out, err
		}
	}
	typist := users[0]
	typingPath := "/_matrix/client/v3/rooms/" + url.PathEscape(string(room)) + "/typing/" + url.PathEscape(string(typist.id))
	reader := users[1]
	receiptPath := func(ev string) string {
		return "/_matrix/client/v3/rooms/" + url.PathEscape(string(room)) + "/receipt/m.read/" + url.PathEscape(ev)
	}
	out.typing, err = timeFanout(ctx, hs, m, users, room, "m.typing", reps, func(i int) error {
		return hs.put(ctx, typist, http.MethodPut, typingPath, map[string]any{"typing": i%2 == 0, "timeout": 30000})
	})
	if err != nil {
		return out, err
	}
	out.receipt, err = timeFanout(ctx, hs, m, users, room, "m.receipt", reps, func(i int) error {
		return hs.put(ctx, reader, http.MethodPost, receiptPath(events[i]), map[string]any{})
	})
	return out, err
}

// timeFanout runs reps rounds: every member long-polls from its latest token, act(i)
// makes one ephemeral change, and each member's latency is from act's start to its
// /sync answer carrying an ephemeral event of type kind.
func timeFanout(ctx context.Context, hs *homeserver, m *meter, users []*user, room id.RoomID, kind string, reps int, act func(i int) error) (result, error) {
	res := result{name: kind}
	since := make([]string, len(users))
	for i, u := range users {
		r, err := hs.sync(ctx, u, "", initialSyncFilter, 0)
		if err != nil {
			return res, err
		}
		since[i] = r.NextBatch
	}
	cpu0 := m.sample(ctx)
	t0 := time.Now()
	for i := range reps {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var firstErr error
		parked := make(chan struct{}, len(users))
		var start time.Time
		started := make(chan struct{})
		for k, u := range users {
			wg.Go(func() {
				parked <- struct{}{}
				for {
					r, err := hs.sync(ctx, u, since[k], syncFilter, 10*time.Second)
					if err != nil {
						mu.Lock()
						firstErr = err
						mu.Unlock()
						return
					}
					since[k] = r.NextBatch
					jr, ok := r.Rooms.Join[string(room)]
					got := false
					if ok {
						for _, ev := range jr.Ephemeral.Events {
							got = got || ev.Type == kind
						}
					}
					if got {
						<-started
						mu.Lock()
						res.lat = append(res.lat, time.Since(start))
						mu.Unlock()
						return
					}
				}
			})
		}
		for range users {
			<-parked
		}
		// Let the long-polls reach the server and park there.
		time.Sleep(50 * time.Millisecond)
		start = time.Now()
		close(started)
		if err := act(i); err != nil {
			return res, fmt.Errorf("%s %d: %w", kind, i, err)
		}
		wg.Wait()
		if firstErr != nil {
			return res, fmt.Errorf("%s: /sync: %w", kind, firstErr)
		}
	}
	res.elapsed, res.ops, res.cpu = time.Since(t0), reps, m.since(ctx, cpu0)
	return res, nil
}

func printFanout(out io.Writer, f fanout) {
	for _, r := range []result{f.typing, f.receipt} {
		p99 := percentile(r.lat, 0.99)
		verdict := "met"
		if p99 > targetFanoutP99 {
			verdict = "short"
		}
		fmt.Fprintf(out, "(g) %s to %d long-polling members, %d times: from the request to each member's /sync p50 %s, p99 %s, max %s (target p99 ≤ %s: %s)\n",
			r.name, f.members, r.ops, fmtDur(percentile(r.lat, 0.5)), fmtDur(p99), fmtDur(percentile(r.lat, 1)), targetFanoutP99, verdict)
	}
}
