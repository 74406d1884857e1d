package client

import (
	"encoding/json"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/ganglionhq/ganglion/persist/projtest"
	"github.com/ganglionhq/ganglion/schemas"
)

// ephemeralTypers returns the user_ids of room's m.typing in a sync body, and whether
// there was one.
func ephemeralTypers(t *testing.T, b *syncTestBody, room string) ([]string, bool) {
	t.Helper()
	join, _ := b.raw["rooms"].(map[string]any)["join"].(map[string]any)
	jr, _ := join[room].(map[string]any)
	eph, _ := jr["ephemeral"].(map[string]any)
	evs, _ := eph["events"].([]any)
	for _, e := range evs {
		ev := e.(map[string]any)
		if ev["type"] != "m.typing" {
			continue
		}
		users := []string{}
		for _, u := range ev["content"].(map[string]any)["user_ids"].([]any) {
			users = append(users, u.(string))
		}
		return users, true
	}
	return nil, false
}

// TestSyncTypingAfterStreamRestart: /sync answers typing from the process's memory of
// the stream, and a token whose typing field is ahead of the stream (a stream that
// restarted behind it) gets who types now and a token at the stream's position, instead
// of waiting for the stream to pass it.
func TestSyncTypingAfterStreamRestart(t *testing.T) {
	t.Parallel()
	db := openAccountsDB(t)
	feed, typingFeed := newStepFeed(0), newStepFeed(0)
	typers := &Typers{}
	srv := &Server{ServerName: testServerName, DB: db, Feed: feed, StreamFeeds: map[string]Feed{schemas.StreamTyping: typingFeed},
		Views: &Views{Typers: typers, Receipts: NewRecentReceipts(16)}, Log: zaptest.NewLogger(t)}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	const alice, bob = "@alice:" + testServerName, "@bob:" + testServerName
	aliceC := &syncClient{t: t, url: hs.URL, token: newSyncTestUser(t, db, alice, "ALICEDEV")}
	room := &syncTestRoom{Room: projtest.NewRoom(t, "!room:"+testServerName, testServerName), t: t, db: db}
	room.project(1,
		projtest.State("create", "m.room.create", alice, map[string]any{"room_version": "11"}),
		projtest.Member("alice-join", alice, alice, "join"))
	feed.set(1)
	observe := func(seq uint64, users ...string) {
		data, _ := json.Marshal(schemas.TypingRecord{V: schemas.TypingVersion, Room: room.ID, Users: users})
		typers.Observe(seq, nil, data)
		typingFeed.set(seq)
	}

	observe(100, bob)
	b := aliceC.sync()
	if users, _ := ephemeralTypers(t, b, room.ID); !slices.Equal(users, []string{bob}) || b.NextBatch != "s1_0_100" {
		t.Fatalf("initial sync: typers %v, next %s", users, b.NextBatch)
	}
	if b = aliceC.sync("since", b.NextBatch); len(b.Rooms.Join) != 0 || b.NextBatch != "s1_0_100" {
		t.Errorf("nothing new: %v, next %s", b.raw["rooms"], b.NextBatch)
	}

	// The stream restarts at 5: the token's 100 is ahead of it.
	observe(5, alice)
	b = aliceC.sync("since", "s1_0_100")
	if users, _ := ephemeralTypers(t, b, room.ID); !slices.Equal(users, []string{alice}) || b.NextBatch != "s1_0_5" {
		t.Fatalf("sync from a token ahead of the stream: typers %v, next %s", users, b.NextBatch)
	}
	// From there, changes arrive as usual, and wake a long-poll.
	done := make(chan *syncTestBody, 1)
	go func() { done <- aliceC.sync("since", "s1_0_5", "timeout", "10000") }()
	time.Sleep(50 * time.Millisecond)
	observe(6)
	select {
	case b = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the long-poll was not woken by typing")
	}
	if users, ok := ephemeralTypers(t, b, room.ID); !ok || len(users) != 0 || b.NextBatch != "s1_0_6" {
		t.Errorf("long-poll woken by a stop: typers %v (%v), next %s", users, ok, b.NextBatch)
	}
}
