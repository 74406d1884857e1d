package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"
)

// syncUntilEvent syncs from since until ev is in room's timeline, and returns that
// response: the counts it shows must already count ev.
func syncUntilEvent(ctx context.Context, t *testing.T, c *mautrix.Client, since string, room id.RoomID, ev id.EventID) *mautrix.RespSync {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		res, err := c.SyncRequest(ctx, 5000, since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		if jr := res.Rooms.Join[room]; jr != nil {
			for _, e := range jr.Timeline.Events {
				if e.ID == ev {
					return res
				}
			}
		}
		since = res.NextBatch
	}
	t.Fatalf("%s never reached %s's /sync", ev, c.UserID)
	return nil
}

func unread(t *testing.T, res *mautrix.RespSync, room id.RoomID) mautrix.UnreadNotificationCounts {
	t.Helper()
	jr := res.Rooms.Join[room]
	if jr == nil || jr.UnreadNotifications == nil {
		t.Fatalf("%s is not in the response with its unread_notifications", room)
	}
	return *jr.UnreadNotifications
}

type notificationsPage struct {
	NextToken     string `json:"next_token"`
	Notifications []struct {
		Actions []any        `json:"actions"`
		Event   *event.Event `json:"event"`
		Read    bool         `json:"read"`
		RoomID  id.RoomID    `json:"room_id"`
		TS      int64        `json:"ts"`
	} `json:"notifications"`
}

func getNotifications(ctx context.Context, t *testing.T, c *mautrix.Client, query map[string]string) notificationsPage {
	t.Helper()
	var page notificationsPage
	if _, err := c.MakeRequest(ctx, http.MethodGet, c.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "notifications"}, query), nil, &page); err != nil {
		t.Fatal(err)
	}
	return page
}

// TestNotificationCounts: the pusher evaluates the members' push rules for each event,
// and /sync shows the counts with the event that made them: a message counts, a
// mention highlights, the user's own messages and a muted room do not count, a read
// receipt clears the count, and /notifications lists them newest first.
func TestNotificationCounts(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	room := createRoomWith(ctx, t, alice, "private_chat", bob)
	muted := createRoomWith(ctx, t, alice, "private_chat", bob)
	if err := alice.PutPushRule(ctx, "global", pushrules.RoomRule, muted.String(), &mautrix.ReqPutPushRule{Actions: []*pushrules.PushAction{}}); err != nil {
		t.Fatal(err)
	}
	since, err := syncUntilJoined(ctx, alice, []id.RoomID{room, muted})
	if err != nil {
		t.Fatal(err)
	}

	hello, err := sendText(ctx, bob, room, "n1", "hello")
	if err != nil {
		t.Fatal(err)
	}
	res := syncUntilEvent(ctx, t, alice, since, room, hello)
	if got := unread(t, res, room); got.NotificationCount != 1 || got.HighlightCount != 0 {
		t.Errorf("after a message: %+v, want 1 notification", got)
	}
	mention, err := bob.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "alice, look",
		"m.mentions": map[string]any{"user_ids": []string{alice.UserID.String()}}}, mautrix.ReqSendEvent{TransactionID: "n2"})
	if err != nil {
		t.Fatal(err)
	}
	res = syncUntilEvent(ctx, t, alice, res.NextBatch, room, mention.EventID)
	if got := unread(t, res, room); got.NotificationCount != 2 || got.HighlightCount != 1 {
		t.Errorf("after a mention: %+v, want 2 notifications, 1 highlight", got)
	}
	own, err := sendText(ctx, alice, room, "n3", "my own")
	if err != nil {
		t.Fatal(err)
	}
	res = syncUntilEvent(ctx, t, alice, res.NextBatch, room, own)
	if got := unread(t, res, room); got.NotificationCount != 2 {
		t.Errorf("after alice's own message: %+v, want 2 notifications still", got)
	}
	quiet, err := sendText(ctx, bob, muted, "n4", "shh")
	if err != nil {
		t.Fatal(err)
	}
	res = syncUntilEvent(ctx, t, alice, res.NextBatch, muted, quiet)
	if got := unread(t, res, muted); got.NotificationCount != 0 {
		t.Errorf("in the muted room: %+v, want nothing", got)
	}

	// /notifications: newest first, unread, with the matching rule's actions.
	page := getNotifications(ctx, t, alice, nil)
	if len(page.Notifications) != 2 || page.Notifications[0].Event.ID != mention.EventID || page.Notifications[1].Event.ID != hello ||
		page.Notifications[0].Read || page.Notifications[0].RoomID != room || len(page.Notifications[0].Actions) == 0 {
		raw, _ := json.Marshal(page)
		t.Errorf("/notifications: %s", raw)
	}
	if page := getNotifications(ctx, t, alice, map[string]string{"only": "highlight"}); len(page.Notifications) != 1 || page.Notifications[0].Event.ID != mention.EventID {
		t.Errorf("/notifications?only=highlight: %+v", page)
	}
	first := getNotifications(ctx, t, alice, map[string]string{"limit": "1"})
	if len(first.Notifications) != 1 || first.NextToken == "" {
		t.Fatalf("/notifications?limit=1: %+v", first)
	}
	if next := getNotifications(ctx, t, alice, map[string]string{"limit": "1", "from": first.NextToken}); len(next.Notifications) != 1 || next.Notifications[0].Event.ID != hello {
		t.Errorf("the second page: %+v", next)
	}

	// A read receipt on the mention clears the room's count.
	if err := alice.SendReceipt(ctx, room, mention.EventID, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	after, err := alice.SyncRequest(ctx, 0, res.NextBatch, "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	if got := unread(t, after, room); got.NotificationCount != 0 || got.HighlightCount != 0 {
		t.Errorf("after the read receipt: %+v, want none", got)
	}
	if page := getNotifications(ctx, t, alice, nil); len(page.Notifications) != 2 || !page.Notifications[0].Read || !page.Notifications[1].Read {
		t.Errorf("/notifications after the receipt: %+v", page)
	}
}

// rawUnread is the part of a /sync response the thread counts test reads.
type rawUnread struct {
	Rooms struct {
		Join map[string]struct {
			Timeline struct {
				Events []struct {
					EventID string `json:"event_id"`
				} `json:"events"`
			} `json:"timeline"`
			Unread  mautrix.UnreadNotificationCounts            `json:"unread_notifications"`
			Threads map[string]mautrix.UnreadNotificationCounts `json:"unread_thread_notifications"`
		} `json:"join"`
	} `json:"rooms"`
}

// TestThreadNotificationCounts: with unread_thread_notifications in the filter, a
// thread's notifications are counted apart from the main timeline's (MSC3773); a
// threaded read receipt clears only its thread, an unthreaded one everything.
func TestThreadNotificationCounts(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	room := createRoomWith(ctx, t, alice, "private_chat", bob)
	root, err := sendText(ctx, bob, room, "t1", "root")
	if err != nil {
		t.Fatal(err)
	}
	reply, err := bob.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "in the thread",
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root.String()}}, mautrix.ReqSendEvent{TransactionID: "t2"})
	if err != nil {
		t.Fatal(err)
	}
	sync := func(threaded bool) rawUnread {
		t.Helper()
		q := map[string]string{"timeout": "0"}
		if threaded {
			q["filter"] = `{"room":{"timeline":{"unread_thread_notifications":true}}}`
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			var res rawUnread
			if _, err := alice.MakeRequest(ctx, http.MethodGet, alice.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, q), nil, &res); err != nil {
				t.Fatal(err)
			}
			for _, e := range res.Rooms.Join[room.String()].Timeline.Events {
				if e.EventID == reply.EventID.String() {
					return res
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("the thread reply never reached /sync")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	jr := sync(true).Rooms.Join[room.String()]
	if jr.Unread.NotificationCount != 1 || jr.Threads[root.String()].NotificationCount != 1 {
		t.Errorf("threaded counts: main %+v, threads %+v; want 1 and 1", jr.Unread, jr.Threads)
	}
	if jr := sync(false).Rooms.Join[room.String()]; jr.Unread.NotificationCount != 2 || len(jr.Threads) != 0 {
		t.Errorf("unthreaded counts: %+v, threads %+v; want 2 together", jr.Unread, jr.Threads)
	}
	if err := alice.SendReceipt(ctx, room, reply.EventID, event.ReceiptTypeRead, mautrix.ReqSendReceipt{ThreadID: root.String()}); err != nil {
		t.Fatal(err)
	}
	if jr := sync(true).Rooms.Join[room.String()]; jr.Unread.NotificationCount != 1 || jr.Threads[root.String()].NotificationCount != 0 {
		t.Errorf("after the thread's receipt: main %+v, threads %+v; want 1 and none", jr.Unread, jr.Threads)
	}
	if err := alice.SendReceipt(ctx, room, reply.EventID, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	if jr := sync(true).Rooms.Join[room.String()]; jr.Unread.NotificationCount != 0 || len(jr.Threads) != 0 {
		t.Errorf("after an unthreaded receipt: main %+v, threads %+v; want none", jr.Unread, jr.Threads)
	}
}
