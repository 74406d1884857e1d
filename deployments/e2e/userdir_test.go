package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// directoryUsers is what a user directory search finds, in order, and whether it was
// cut at the limit.
func directoryUsers(ctx context.Context, t *testing.T, c *mautrix.Client, term string, limit int) ([]string, bool) {
	t.Helper()
	res, err := c.SearchUserDirectory(ctx, term, limit)
	if err != nil {
		t.Fatalf("search %q: %v", term, err)
	}
	var out []string
	for _, u := range res.Results {
		out = append(out, string(u.UserID))
	}
	return out, res.Limited
}

// waitDirectory searches until the users found are want (the directory is kept by a
// consumer of the log, behind the answers to the writes).
func waitDirectory(ctx context.Context, t *testing.T, c *mautrix.Client, term string, want ...id.UserID) {
	t.Helper()
	wantIDs := make([]string, len(want))
	for i, u := range want {
		wantIDs[i] = string(u)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _ := directoryUsers(ctx, t, c, term, 10)
		if slices.Equal(got, wantIDs) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("search %q by %s: %v, want %v", term, c.UserID, got, wantIDs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestUserDirectory: a search finds users sharing a room with the searcher and users
// in public rooms, by display name or user ID prefixes, exact matches first; follows
// display name changes and leaves; is limited; and answers bad requests with the
// spec's errors.
func TestUserDirectory(t *testing.T) {
	ctx, base := clientScenario(t)
	alice := newUser(ctx, t, base, runTag+"alice")
	bob := newUser(ctx, t, base, runTag+"bob")
	carol := newUser(ctx, t, base, runTag+"carol")
	dave := newUser(ctx, t, base, runTag+"dave")
	shared := createRoomWith(ctx, t, alice, "private_chat", bob)
	createRoomWith(ctx, t, carol, "public_chat")
	createRoomWith(ctx, t, dave, "private_chat")

	waitDirectory(ctx, t, alice, runTag+"bo", bob.UserID)
	waitDirectory(ctx, t, alice, runTag+"carol", carol.UserID)
	waitDirectory(ctx, t, alice, runTag+"dave") // shares no room, in no public room
	waitDirectory(ctx, t, dave, runTag+"bob")   // bob's only room is private, without dave

	if err := bob.SetDisplayName(ctx, "Robert Paulson"); err != nil {
		t.Fatal(err)
	}
	waitDirectory(ctx, t, alice, "robert pau", bob.UserID)
	waitDirectory(ctx, t, alice, "paulson", bob.UserID)
	if _, err := bob.LeaveRoom(ctx, shared); err != nil {
		t.Fatal(err)
	}
	waitDirectory(ctx, t, alice, "robert")

	// Three Zeds in a public room: an exact match comes first, the limit cuts.
	zeds := make([]*mautrix.Client, 3)
	for i, name := range []string{"zedd", "zed", "zedekiah"} {
		zeds[i] = newUser(ctx, t, base, runTag+name)
	}
	createRoomWith(ctx, t, zeds[0], "public_chat", zeds[1], zeds[2])
	waitDirectory(ctx, t, alice, runTag+"zed", zeds[1].UserID, zeds[0].UserID, zeds[2].UserID)
	if got, limited := directoryUsers(ctx, t, alice, runTag+"zed", 2); len(got) != 2 || !limited || got[0] != string(zeds[1].UserID) {
		t.Errorf("limit 2: %v limited %v", got, limited)
	}
	if got, limited := directoryUsers(ctx, t, alice, runTag+"zed", 3); len(got) != 3 || limited {
		t.Errorf("limit 3: %v limited %v", got, limited)
	}

	for _, c := range []struct {
		what, body string
		status     int
		code       string
	}{
		{"no search_term", `{}`, http.StatusBadRequest, "M_MISSING_PARAM"},
		{"a limit that is not a number", `{"search_term": "a", "limit": "ten"}`, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"not JSON", `search`, http.StatusBadRequest, "M_NOT_JSON"},
	} {
		status, code, _ := rawRequest(ctx, t, "POST", base+"/_matrix/client/v3/user_directory/search", alice.AccessToken, []byte(c.body))
		if status != c.status || code != c.code {
			t.Errorf("%s: HTTP %d %s, want %d %s", c.what, status, code, c.status, c.code)
		}
	}
	if status, code, _ := rawRequest(ctx, t, "POST", base+"/_matrix/client/v3/user_directory/search", "", []byte(`{"search_term":"a"}`)); status != http.StatusUnauthorized {
		t.Errorf("without a token: HTTP %d %s", status, code)
	}
}

// TestUserDirectoryWorker is issue 10's acceptance 3: the directory is kept on the worker
// update_user_directory_from_worker names (and not on the main process), searches
// through the main process reflect joins, leaves and display name changes, and the
// directory that `ganglion replay` rebuilds from the log gives the same results.
func TestUserDirectoryWorker(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{externalNATS: true})
	d.shared["update_user_directory_from_worker"] = "dirworker"
	hs := d.startMain()
	worker := d.launchWorker("dirworker", false)
	worker.waitLogged("user directory started")

	alice := newUser(ctx, t, hs.url(), "alice")
	bob := newUser(ctx, t, hs.url(), "bob")
	carol := newUser(ctx, t, hs.url(), "carol")
	room := createRoomWith(ctx, t, alice, "private_chat", bob, carol)
	waitDirectory(ctx, t, alice, "bob", bob.UserID)
	if err := carol.SetDisplayName(ctx, "Bobbie Carol"); err != nil {
		t.Fatal(err)
	}
	waitDirectory(ctx, t, alice, "bob", bob.UserID, carol.UserID)
	if _, err := bob.LeaveRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	waitDirectory(ctx, t, alice, "bob", carol.UserID)
	public := createRoomWith(ctx, t, bob, "public_chat")
	waitDirectory(ctx, t, alice, "bob", bob.UserID, carol.UserID) // the exact match first
	if _, err := carol.JoinRoomByID(ctx, public); err != nil {
		t.Fatal(err)
	}
	// The directory follows the log: the results compared below are taken once it has
	// carol's join, which lets bob find her.
	waitDirectory(ctx, t, bob, "carol", carol.UserID)
	if data, err := os.ReadFile(filepath.Join(d.dir, "main.1.log")); err != nil || strings.Contains(string(data), "user directory started") {
		t.Errorf("the main process keeps a user directory too (%v)", err)
	}

	terms := []string{"bob", "carol", "alice", "b", "bobbie carol"}
	searchers := []*mautrix.Client{alice, bob, carol}
	before := map[string][]string{}
	for _, c := range searchers {
		for _, term := range terms {
			got, _ := directoryUsers(ctx, t, c, term, 10)
			before[string(c.UserID)+" "+term] = got
		}
	}
	hs.stop()
	worker.stop()
	recreateDatabase(ctx, t, d.dsn)
	replay := exec.CommandContext(ctx, ganglionBin, "replay", "-c", filepath.Join(d.dir, "shared.yaml"))
	replay.Dir = d.dir
	if out, err := replay.CombinedOutput(); err != nil || !strings.Contains(string(out), "rebuilt the user directory") {
		t.Fatalf("ganglion replay: %v\n%s", err, out)
	}
	hs.restart()
	for _, c := range searchers {
		for _, term := range terms {
			got, _ := directoryUsers(ctx, t, c, term, 10)
			if want := before[string(c.UserID)+" "+term]; !slices.Equal(got, want) {
				t.Errorf("after the rebuild, %s's search %q: %v, want %v as before", c.UserID, term, got, want)
			}
		}
	}
}
