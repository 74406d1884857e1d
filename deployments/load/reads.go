package load

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"maunium.net/go/mautrix/event"
)

// Target of issue 10 for reads of 50 events.
const targetReadP99 = 10 * time.Millisecond

// readsRun is scenario (k): /messages, /context and /relations of 50 events, each timed
// over the same room.
type readsRun struct {
	reps  int
	reads []result
}

// measureReads fills a room with a thread of 100 replies between 100 other messages,
// then times reps reads of 50 events of each kind, one after another.
func measureReads(ctx context.Context, hs *homeserver, m *meter, u *user, reps int) (readsRun, error) {
	run := readsRun{reps: reps}
	room, err := u.createRoom(ctx)
	if err != nil {
		return run, err
	}
	root, err := u.mx.SendText(ctx, room, "the thread's root")
	if err != nil {
		return run, err
	}
	for i := range 200 {
		content := map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("message %d", i)}
		if i%2 == 0 {
			content["m.relates_to"] = map[string]any{"rel_type": "m.thread", "event_id": root.EventID}
		}
		if _, err := u.mx.SendMessageEvent(ctx, room, event.EventMessage, content); err != nil {
			return run, err
		}
	}
	mid, err := u.mx.SendText(ctx, room, "the middle")
	if err != nil {
		return run, err
	}
	for i := range 30 {
		if _, err := u.mx.SendText(ctx, room, fmt.Sprintf("after %d", i)); err != nil {
			return run, err
		}
	}
	r := url.PathEscape(string(room))
	for _, read := range []struct{ name, path string }{
		{"/messages", "/_matrix/client/v3/rooms/" + r + "/messages?dir=b&limit=50"},
		{"/context", "/_matrix/client/v3/rooms/" + r + "/context/" + url.PathEscape(string(mid.EventID)) + "?limit=50"},
		{"/relations", "/_matrix/client/v1/rooms/" + r + "/relations/" + url.PathEscape(string(root.EventID)) + "?limit=50"},
	} {
		res, err := timeReads(ctx, hs, m, u, read.name, read.path, reps)
		if err != nil {
			return run, err
		}
		run.reads = append(run.reads, res)
	}
	return run, nil
}

// timeReads GETs path reps times as u.
func timeReads(ctx context.Context, hs *homeserver, m *meter, u *user, name, path string, reps int) (result, error) {
	res := result{name: name, lat: make([]time.Duration, 0, reps), ops: reps}
	cpu0 := m.sample(ctx)
	t0 := time.Now()
	for range reps {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, hs.base+path, nil)
		if err != nil {
			return res, err
		}
		req.Header.Set("Authorization", "Bearer "+u.token)
		t := time.Now()
		resp, err := hs.http.Do(req)
		if err != nil {
			return res, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return res, err
		}
		if resp.StatusCode != http.StatusOK {
			return res, fmt.Errorf("%s: HTTP %d", name, resp.StatusCode)
		}
		res.lat = append(res.lat, time.Since(t))
	}
	res.elapsed, res.cpu = time.Since(t0), m.since(ctx, cpu0)
	return res, nil
}

func printReads(w io.Writer, r *readsRun) {
	if r == nil {
		return
	}
	for _, res := range r.reads {
		p99 := percentile(res.lat, 0.99)
		verdict := "met"
		if p99 > targetReadP99 {
			verdict = "short"
		}
		fmt.Fprintf(w, "(k) %s of 50 events, %d times: p50 %s, p99 %s, CPU/read %s (target p99 ≤ %s: %s)\n",
			res.name, r.reps, fmtDur(percentile(res.lat, 0.5)), fmtDur(p99), fmtDur(res.cpuPerOp()), targetReadP99, verdict)
	}
}
