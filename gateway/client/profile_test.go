package client

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
)

// TestProfileFieldsDoNotLoseUpdates: a display name and an avatar set at the same time
// both survive, since each update writes its own field only.
func TestProfileFieldsDoNotLoseUpdates(t *testing.T) {
	t.Parallel()
	g := newAccountsGateway(t, openAccountsDB(t), true)
	reg := register(t, g, "alice", "pw")
	auth := http.Header{"Authorization": {"Bearer " + reg.AccessToken}}
	profile := g.url + "/_matrix/client/v3/profile/" + string(reg.UserID)
	for round := range 30 {
		name, avatar := fmt.Sprintf("Alice %d", round), fmt.Sprintf("mxc://%s/a%d", testServerName, round)
		var wg sync.WaitGroup
		for field, body := range map[string]string{
			"displayname": fmt.Sprintf(`{"displayname":%q}`, name),
			"avatar_url":  fmt.Sprintf(`{"avatar_url":%q}`, avatar),
		} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if status, resp := rawRequest(t, http.MethodPut, profile+"/"+field, body, auth); status != 200 {
					t.Errorf("PUT %s: %d %v", field, status, resp)
				}
			}()
		}
		wg.Wait()
		status, got := rawRequest(t, http.MethodGet, profile, "", nil)
		if status != 200 || got["displayname"] != name || got["avatar_url"] != avatar {
			t.Fatalf("round %d: profile %d %v, want displayname %q and avatar_url %q", round, status, got, name, avatar)
		}
	}
}
