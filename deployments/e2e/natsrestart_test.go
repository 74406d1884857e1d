package e2e

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestNATSRestartUnderLoad (issue 5, item 13): clients keep sending while the NATS
// server goes away for a few seconds and comes back on the same port and files. Each
// client retries a failed send with the same transaction id, as a real client does.
// Every acknowledged send is stored exactly once, and no send fails: the gateway holds
// the sends of the outage until NATS is back, then sends them again.
func TestNATSRestartUnderLoad(t *testing.T) {
	ctx, d, hs := mainProcess(t, deploymentOptions{externalNATS: true})

	const senders, before, after = 6, 20, 10
	clients := make([]*mautrix.Client, senders)
	for i := range clients {
		clients[i] = newUser(ctx, t, hs.url(), fmt.Sprintf("sender%d", i))
	}
	room := createRoomWith(ctx, t, clients[0], "private_chat", clients[1:]...)

	var (
		mu       sync.Mutex
		acked    = map[string]id.EventID{} // body -> event id
		restart  = make(chan struct{})     // closed once NATS is back
		afterAck atomic.Int64              // sends acknowledged after NATS came back
		started  atomic.Int64              // sends acknowledged before the restart began
		wg       sync.WaitGroup
	)
	send := func(c *mautrix.Client, txn, body string) {
		for {
			resp, err := c.SendMessageEvent(ctx, room, event.EventMessage, textContent(body), mautrix.ReqSendEvent{TransactionID: txn})
			if err != nil {
				// The outage is far shorter than a gateway's wait for its event writer
				// (30 s): the gateway absorbs it, a client sees no error.
				t.Errorf("send %s %q failed: %v", txn, body, err)
			}
			if err == nil {
				mu.Lock()
				acked[body] = resp.EventID
				mu.Unlock()
				return
			}
			if ctx.Err() != nil {
				t.Errorf("send %s: never acknowledged: %v", txn, err)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	for i, c := range clients {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-restart:
					if afterAck.Load() >= senders*after {
						return
					}
				default:
				}
				send(c, fmt.Sprintf("t%d", n), fmt.Sprintf("sender %d message %d", i, n))
				select {
				case <-restart:
					afterAck.Add(1)
				default:
					started.Add(1)
				}
				if ctx.Err() != nil {
					return
				}
			}
		})
	}
	for started.Load() < senders*before && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	d.restartNATS(3 * time.Second)
	close(restart)
	hs.waitLogged("NATS connection lost")
	hs.waitLogged("NATS connection back")
	wg.Wait()
	if t.Failed() {
		return
	}

	checkStoredOnce(ctx, t, d, room, acked)
	t.Logf("%d sends acknowledged, %d of them after NATS came back", len(acked), afterAck.Load())
}

// checkStoredOnce checks that every acknowledged send (body -> event ID) is in Postgres
// exactly once, under the ID it was acknowledged with, and that no other message of the
// room was stored. Sends are answered at their append and projected a moment later.
func checkStoredOnce(ctx context.Context, t *testing.T, d *deployment, room id.RoomID, acked map[string]id.EventID) {
	t.Helper()
	var stored map[string][]id.EventID
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		stored = map[string][]id.EventID{}
		d.query(ctx, func(conn *pgx.Conn) error {
			rows, err := conn.Query(ctx, `SELECT event_id, (json::jsonb)->'content'->>'body' FROM events WHERE room_id = $1 AND type = 'm.room.message'`, room.String())
			if err != nil {
				return err
			}
			for rows.Next() {
				var ev id.EventID
				var body string
				if err := rows.Scan(&ev, &body); err != nil {
					return err
				}
				stored[body] = append(stored[body], ev)
			}
			return rows.Err()
		})
		if len(stored) >= len(acked) || time.Now().After(deadline) {
			break
		}
	}
	for body, evs := range stored {
		if len(evs) != 1 {
			t.Errorf("%q stored %d times: %v", body, len(evs), evs)
		}
		if acked[body] == "" {
			t.Errorf("%q stored but never acknowledged", body)
		}
	}
	for body, ev := range acked {
		if got := stored[body]; len(got) != 1 || got[0] != ev {
			t.Errorf("%q acknowledged as %s, stored as %v", body, ev, got)
		}
	}
}

// steadySends keeps clients sending while a test breaks and mends the deployment: client
// i sends its n-th message into rooms[(n+i) % len(rooms)], pausing between sends, and
// retries a failed send with the same transaction ID until it is acknowledged, as a real
// client does.
type steadySends struct {
	mu    sync.Mutex
	acked map[id.RoomID]map[string]id.EventID // room -> body -> event ID
	total atomic.Int64
	stop  chan struct{}
	wg    sync.WaitGroup
}

func startSteadySends(ctx context.Context, t *testing.T, clients []*mautrix.Client, rooms []id.RoomID, pause time.Duration) *steadySends {
	s := &steadySends{acked: map[id.RoomID]map[string]id.EventID{}, stop: make(chan struct{})}
	for _, room := range rooms {
		s.acked[room] = map[string]id.EventID{}
	}
	for i, c := range clients {
		s.wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-s.stop:
					return
				default:
				}
				room := rooms[(n+i)%len(rooms)]
				txn, body := fmt.Sprintf("t%d", n), fmt.Sprintf("sender %d message %d", i, n)
				for {
					resp, err := c.SendMessageEvent(ctx, room, event.EventMessage, textContent(body), mautrix.ReqSendEvent{TransactionID: txn})
					if err == nil {
						s.mu.Lock()
						s.acked[room][body] = resp.EventID
						s.mu.Unlock()
						s.total.Add(1)
						break
					}
					if ctx.Err() != nil {
						t.Errorf("send %s: never acknowledged: %v", txn, err)
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
				time.Sleep(pause)
			}
		})
	}
	return s
}

// waitAcked waits until n more sends are acknowledged.
func (s *steadySends) waitAcked(ctx context.Context, t *testing.T, what string, n int64) {
	t.Helper()
	for goal := s.total.Load() + n; s.total.Load() < goal; time.Sleep(20 * time.Millisecond) {
		if ctx.Err() != nil {
			t.Fatalf("%s: %d sends acknowledged of %d", what, s.total.Load(), goal)
		}
	}
}

// finish stops the senders once their sends in flight are acknowledged.
func (s *steadySends) finish() {
	close(s.stop)
	s.wg.Wait()
}
