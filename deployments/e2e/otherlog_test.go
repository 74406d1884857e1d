package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
)

// TestDatabaseOfAnotherLogIsRefused is half of a "start over" done by hand: the
// embedded NATS store is deleted but the database kept. The new, empty log would never
// show another event in /sync, so the process must refuse to start, naming both and the
// way out, instead of serving silently.
func TestDatabaseOfAnotherLogIsRefused(t *testing.T) {
	ctx, d, hs := singleProcess(t)
	alice := newUser(ctx, t, hs.url(), "alice")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sendText(ctx, alice, created.RoomID, "t1", "before"); err != nil {
		t.Fatal(err)
	}
	hs.kill9()
	if err := os.RemoveAll(filepath.Join(d.dir, "nats")); err != nil {
		t.Fatal(err)
	}
	hs.launch()
	_, exited, logPath := hs.current()
	select {
	case <-exited:
	case <-time.After(startTimeout):
		t.Fatal("the process serves a database of another log")
	}
	hs.mu.Lock()
	hs.stopping = true // its exit is the point of the test
	exitErr := hs.exitErr
	hs.mu.Unlock()
	logged, _ := os.ReadFile(logPath)
	if exitErr == nil {
		t.Fatal("the process exited cleanly; it should fail")
	}
	for _, want := range []string{"projects the events log", "NATS holds", "ganglion replay"} {
		if !strings.Contains(string(logged), want) {
			t.Errorf("the refusal does not say %q:\n%s", want, tail(logPath, 10))
		}
	}
}
