package e2e

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/ganglionhq/ganglion/persist/pgtest"
)

// TestTrustedRebuild: `ganglion replay -into` rebuilds a fresh database while the
// configured one serves sends; `-verify` compares the two table by table and room by
// room, finds a row changed in the rebuilt one, and passes once it is put back; the
// process switched over to the rebuilt database serves the same rooms and tokens.
func TestTrustedRebuild(t *testing.T) {
	ctx, d, hs := mainProcess(t, deploymentOptions{externalNATS: true})
	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")
	rooms := []id.RoomID{createRoomWith(ctx, t, alice, "private_chat", bob), createRoomWith(ctx, t, bob, "public_chat", alice)}
	first, err := sendText(ctx, alice, rooms[0], "first", "before the rebuild")
	if err != nil {
		t.Fatal(err)
	}

	// Sends go on while the rebuild runs.
	var sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := sendText(ctx, bob, rooms[n%2], fmt.Sprintf("load%d", n), fmt.Sprintf("during the rebuild %d", n)); err != nil {
				t.Errorf("send during the rebuild: %v", err)
				return
			}
			sent.Add(1)
			time.Sleep(10 * time.Millisecond)
		}
	})
	rebuilt := pgtest.DSN(t)
	replay := func(args ...string) (string, error) {
		all := append([]string{"replay", "-c", hs.files[0], "-into", rebuilt}, args...)
		out, err := exec.CommandContext(ctx, ganglionBin, all...).CombinedOutput()
		return string(out), err
	}
	for sent.Load() < 20 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if out, err := replay(); err != nil || !strings.Contains(out, "replayed") || !strings.Contains(out, "events/s") {
		t.Fatalf("replay -into: %v\n%s", err, out)
	}
	close(stop)
	wg.Wait()

	// A row changed in the rebuilt database is found, room and table.
	query := func(dsn, sql string, args ...any) {
		t.Helper()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	query(rebuilt, `UPDATE events SET type = 'org.example.corrupt' WHERE event_id = $1`, first.String())
	out, err := replay("-verify")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !strings.Contains(out, "events "+rooms[0].String()+": rows differ") {
		t.Fatalf("verify with a changed row: %v\n%s", err, out)
	}
	query(rebuilt, `UPDATE events SET type = 'm.room.message' WHERE event_id = $1`, first.String())
	if out, err := replay("-verify"); err != nil || !strings.Contains(out, "verified:") {
		t.Fatalf("verify: %v\n%s", err, out)
	}

	// The switch-over: the process restarts on the rebuilt database.
	hs.stop()
	d.dsn = rebuilt
	d.shared["database"] = rebuilt
	hs = d.startMain()
	for _, c := range []*mautrix.Client{alice, bob} {
		c := at(c, hs.url())
		if who, err := c.Whoami(ctx); err != nil || who.UserID == "" {
			t.Fatalf("token after the switch: %v", err)
		}
	}
	msgs, err := at(alice, hs.url()).Messages(ctx, rooms[0], "", "", mautrix.DirectionBackward, nil, 1000)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range msgs.Chunk {
		found = found || e.ID == first
	}
	if !found {
		t.Errorf("the message sent before the rebuild is not in the rebuilt database's room")
	}
	if _, err := sendText(ctx, at(alice, hs.url()), rooms[0], "after", "after the switch"); err != nil {
		t.Fatalf("send after the switch: %v", err)
	}
}
