package persister

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/ganglionhq/ganglion/processors/syncfeed"
	"github.com/ganglionhq/ganglion/schemas"
	"github.com/ganglionhq/ganglion/streams"
)

// observation is a visible position and the log sequences Postgres held just after it
// was read. Postgres only grows, so a sequence missing here was missing at the time.
type observation struct {
	pos       uint64
	projected map[uint64]bool
}

// TestNoGapsWithSlowWriter runs two writers, one projecting 40 ms late, and a sync
// feed. The feed must never call a position visible while any log message at or below
// it is not in Postgres (DESIGN invariant 5), and must reach the end of the log.
func TestNoGapsWithSlowWriter(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	fast := c.writer("fast", 0)
	slow := c.writer("slow", 40*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	feed, err := syncfeed.New(ctx, syncfeed.Config{JS: c.env.JS, NC: c.env.NC, Topology: c.env.Topology, DB: c.db,
		Log: zaptest.NewLogger(t), Writers: []string{"fast", "slow"}, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = feed.Run(ctx) }()

	rooms := map[*streams.IntentClient]string{fast: "!fast:test", slow: "!slow:test"}
	for w, room := range rooms {
		c.createBareRoom(w, room)
	}

	var observations []observation
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stop:
				return
			default:
			}
			pos := feed.Position()
			seqs := map[uint64]bool{}
			rows, err := c.db.Pool.Query(ctx, `SELECT DISTINCT seq FROM events`)
			if err != nil {
				return
			}
			for rows.Next() {
				var s int64
				_ = rows.Scan(&s)
				seqs[uint64(s)] = true
			}
			rows.Close()
			observations = append(observations, observation{pos, seqs})
			time.Sleep(2 * time.Millisecond)
		}
	}()

	var wg sync.WaitGroup
	for w, room := range rooms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 30 {
				raw, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": fmt.Sprint(i)})
				res, err := w.Submit(ctx, &schemas.Intent{V: schemas.IntentVersion, Kind: schemas.KindClientEvent,
					ID: fmt.Sprintf("%s-%d", room, i), RoomID: room, Sender: alice,
					Event: &schemas.ProtoEvent{Type: "m.room.message", Content: raw}})
				if err != nil || res.Error != nil {
					t.Errorf("send %d to %s: %v %+v", i, room, err, res)
					return
				}
			}
		}()
	}
	wg.Wait()

	last := lastLogSeq(t, c)
	waitCtx, waitCancel := context.WithTimeout(ctx, 30*time.Second)
	defer waitCancel()
	for feed.Position() < last && waitCtx.Err() == nil {
		feed.Wait(waitCtx, feed.Position(), alice, []string{"!fast:test", "!slow:test"})
	}
	close(stop)
	<-watched
	if feed.Position() != last {
		t.Fatalf("feed stopped at %d, log ends at %d", feed.Position(), last)
	}

	heldBack := false
	for _, o := range observations {
		for s := uint64(1); s <= o.pos; s++ {
			if !o.projected[s] {
				t.Fatalf("position %d was visible while log message %d was not in Postgres", o.pos, s)
			}
		}
		for s := range o.projected {
			if s > o.pos {
				heldBack = true
			}
		}
	}
	if !heldBack {
		t.Fatal("the slow writer never held the position back: the test did not exercise the case")
	}
}

func lastLogSeq(t *testing.T, c *cluster) uint64 {
	t.Helper()
	s, err := c.env.JS.Stream(context.Background(), c.env.Topology.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}
