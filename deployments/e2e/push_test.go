package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"
)

// gatewayPush is one notification a test push gateway received.
type gatewayPush struct {
	Notification struct {
		EventID           string          `json:"event_id"`
		RoomID            string          `json:"room_id"`
		Type              string          `json:"type"`
		Sender            string          `json:"sender"`
		SenderDisplayName string          `json:"sender_display_name"`
		Content           json.RawMessage `json:"content"`
		Prio              string          `json:"prio"`
		Counts            struct {
			Unread int `json:"unread"`
		} `json:"counts"`
		Devices []struct {
			AppID     string         `json:"app_id"`
			Pushkey   string         `json:"pushkey"`
			PushkeyTS int64          `json:"pushkey_ts"`
			Data      map[string]any `json:"data"`
			Tweaks    map[string]any `json:"tweaks"`
		} `json:"devices"`
	} `json:"notification"`
}

// testGateway is a push gateway: it records what it is sent and answers as told.
type testGateway struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []gatewayPush
	// abandoned counts requests whose sender gave up waiting for the answer.
	abandoned atomic.Int32
	// answer returns the status and body of the answer to a push for a pushkey.
	answer func(pushkey string) (int, string)
}

func newTestGateway(t *testing.T) *testGateway {
	g := &testGateway{answer: func(string) (int, string) { return 200, `{}` }}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_matrix/push/v1/notify" || r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		stop := context.AfterFunc(r.Context(), func() { g.abandoned.Add(1) })
		defer stop()
		raw, _ := io.ReadAll(r.Body)
		var p gatewayPush
		if err := json.Unmarshal(raw, &p); err != nil || len(p.Notification.Devices) != 1 {
			t.Errorf("push gateway got %s (%v)", raw, err)
			w.WriteHeader(400)
			return
		}
		g.mu.Lock()
		status, body := g.answer(p.Notification.Devices[0].Pushkey)
		if status == 200 {
			g.got = append(g.got, p)
		}
		g.mu.Unlock()
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *testGateway) url() string { return g.srv.URL + "/_matrix/push/v1/notify" }

func (g *testGateway) setAnswer(answer func(pushkey string) (int, string)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.answer = answer
}

// pushesFor returns what was pushed for an event to a pushkey.
func (g *testGateway) pushesFor(ev id.EventID, pushkey string) []gatewayPush {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []gatewayPush
	for _, p := range g.got {
		if p.Notification.EventID == ev.String() && p.Notification.Devices[0].Pushkey == pushkey {
			out = append(out, p)
		}
	}
	return out
}

// waitPush waits until the gateway has a push for ev to pushkey and returns it.
func (g *testGateway) waitPush(t *testing.T, ev id.EventID, pushkey string) gatewayPush {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if got := g.pushesFor(ev, pushkey); len(got) > 0 {
			return got[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no push for %s to %s", ev, pushkey)
	return gatewayPush{}
}

// TestPushGateway: the Push Gateway API with a real HTTP gateway: one push per
// notifying event and pusher, with the spec's body (event_id_only too), the tweaks of
// the matching rule, the unread count; nothing for a muted room; a gateway error is
// retried and the push arrives once; a rejected pushkey removes its pusher.
func TestPushGateway(t *testing.T) {
	ctx, base := clientScenario(t)
	gw := newTestGateway(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	room := createRoomWith(ctx, t, alice, "private_chat", bob)
	muted := createRoomWith(ctx, t, alice, "private_chat", bob)
	if err := alice.PutPushRule(ctx, "global", pushrules.RoomRule, muted.String(), &mautrix.ReqPutPushRule{Actions: []*pushrules.PushAction{}}); err != nil {
		t.Fatal(err)
	}
	full := httpPusher("org.example.app", "full", true)
	full.Data = mautrix.PusherData{"url": gw.url(), "extra": 1.0}
	idOnly := httpPusher("org.example.app", "idonly", true)
	idOnly.Data = mautrix.PusherData{"url": gw.url(), "format": "event_id_only"}
	for _, p := range []*mautrix.Pusher{full, idOnly} {
		if err := alice.SetPusher(ctx, p); err != nil {
			t.Fatal(err)
		}
	}

	hello, err := sendText(ctx, bob, room, "p1", "hello")
	if err != nil {
		t.Fatal(err)
	}
	p := gw.waitPush(t, hello, "full").Notification
	dev := p.Devices[0]
	if p.RoomID != room.String() || p.Type != "m.room.message" || p.Sender != bob.UserID.String() || p.SenderDisplayName != bob.UserID.Localpart() ||
		!json.Valid(p.Content) || p.Counts.Unread != 1 || p.Prio != "high" || dev.AppID != "org.example.app" ||
		dev.PushkeyTS <= 0 || dev.Data["extra"] != 1.0 || dev.Data["url"] != nil || dev.Tweaks["sound"] != "default" {
		t.Errorf("the push for a message in a room of two: %+v", p)
	}
	p = gw.waitPush(t, hello, "idonly").Notification
	if p.RoomID != room.String() || p.Type != "" || p.Sender != "" || p.Content != nil || p.Counts.Unread != 1 {
		t.Errorf("the event_id_only push: %+v", p)
	}

	mention, err := bob.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "alice!",
		"m.mentions": map[string]any{"user_ids": []string{alice.UserID.String()}}}, mautrix.ReqSendEvent{TransactionID: "p2"})
	if err != nil {
		t.Fatal(err)
	}
	if p := gw.waitPush(t, mention.EventID, "full").Notification; p.Devices[0].Tweaks["highlight"] != true {
		t.Errorf("the push for a mention: %+v", p)
	}

	// The gateway fails once: the push comes again, after a backoff, and arrives once.
	var failed sync.Once
	gw.setAnswer(func(string) (int, string) {
		status := 200
		failed.Do(func() { status = 503 })
		return status, `{}`
	})
	quiet, err := sendText(ctx, bob, muted, "p3", "shh")
	if err != nil {
		t.Fatal(err)
	}
	retried, err := sendText(ctx, bob, room, "p4", "again")
	if err != nil {
		t.Fatal(err)
	}
	gw.waitPush(t, retried, "full")
	gw.waitPush(t, retried, "idonly")
	time.Sleep(300 * time.Millisecond)
	for _, ev := range []id.EventID{hello, mention.EventID, retried} {
		for _, key := range []string{"full", "idonly"} {
			if n := len(gw.pushesFor(ev, key)); n != 1 {
				t.Errorf("%s was pushed to %s %d times", ev, key, n)
			}
		}
	}
	if n := len(gw.pushesFor(quiet, "full")) + len(gw.pushesFor(quiet, "idonly")); n != 0 {
		t.Errorf("the muted room's message was pushed %d times", n)
	}

	// A pushkey the gateway rejects goes.
	gw.setAnswer(func(pushkey string) (int, string) {
		if pushkey == "idonly" {
			return 200, `{"rejected":["idonly"]}`
		}
		return 200, `{}`
	})
	if _, err := sendText(ctx, bob, room, "p5", "last"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !slices.Equal(pusherKeys(ctx, t, alice), []string{"org.example.app/full"}) {
		if time.Now().After(deadline) {
			t.Fatalf("alice's pushers after a rejection: %v", pusherKeys(ctx, t, alice))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPushGatewayIsolation is issue 9's acceptance 5 for pushers: a gateway that hangs,
// one that answers after 30 seconds and one that answers bytes that are not HTTP hold up
// only their own pushers: while a request to the hung and the slow one is still open,
// another gateway gets every push, for another user and for the same user's other
// pusher.
func TestPushGatewayIsolation(t *testing.T) {
	ctx, base := clientScenario(t)
	hung, slow, fine := newTestGateway(t), newTestGateway(t), newTestGateway(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // runs before the gateways close
	waiting := make(chan struct{}, 16)
	hung.setAnswer(func(string) (int, string) {
		waiting <- struct{}{}
		<-release
		return 200, `{}`
	})
	var slowAnswered atomic.Int32
	slow.setAnswer(func(string) (int, string) {
		select {
		case <-time.After(30 * time.Second):
			slowAnswered.Add(1)
		case <-release:
		}
		return 200, `{}`
	})
	garbage, garbageAnswers := garbageServer(t)
	alice := newUser(ctx, t, base, "alice")
	bob := newUser(ctx, t, base, "bob")
	carol := newUser(ctx, t, base, "carol")
	room := createRoomWith(ctx, t, bob, "private_chat", alice, carol)
	for _, p := range []struct {
		c   *mautrix.Client
		key string
		url string
	}{
		{alice, "alice-hung", hung.url()}, {alice, "alice-slow", slow.url()},
		{alice, "alice-garbage", "http://" + garbage + "/_matrix/push/v1/notify"},
		{alice, "alice-fine", fine.url()}, {carol, "carol-fine", fine.url()},
	} {
		pusher := httpPusher("org.example.app", p.key, true)
		pusher.Data = mautrix.PusherData{"url": p.url}
		if err := p.c.SetPusher(ctx, pusher); err != nil {
			t.Fatal(err)
		}
	}
	first, err := sendText(ctx, bob, room, "i1", "first")
	if err != nil {
		t.Fatal(err)
	}
	<-waiting // the hung gateway holds alice's first push
	second, err := sendText(ctx, bob, room, "i2", "second")
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []id.EventID{first, second} {
		fine.waitPush(t, ev, "alice-fine")
		fine.waitPush(t, ev, "carol-fine")
	}
	// Had the fine gateway waited behind another, the pusher would have had the slow
	// gateway's answer, or given up on the hung request (its timeout), before these.
	if n := hung.abandoned.Load(); n != 0 {
		t.Errorf("the pushes to the fine gateway came after %d requests to the hung one were given up", n)
	}
	if n := slowAnswered.Load(); n != 0 {
		t.Errorf("the pushes to the fine gateway came after %d answers of the slow one", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for garbageAnswers.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if garbageAnswers.Load() == 0 {
		t.Error("the gateway answering garbage was never called")
	}
}
