package frontdoor

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// backends starts n HTTP servers that answer with their name, and returns their URLs.
func backends(t *testing.T, prefix string, n int) []*url.URL {
	var out []*url.URL
	for i := range n {
		name := prefix + string(rune('0'+i))
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, name)
		}))
		t.Cleanup(srv.Close)
		u, _ := url.Parse(srv.URL)
		out = append(out, u)
	}
	return out
}

func TestRouting(t *testing.T) {
	rt := &Router{Gateways: backends(t, "gw", 2), SyncWorkers: backends(t, "sync", 2)}
	front := httptest.NewServer(rt.Handler())
	defer front.Close()
	get := func(path, token string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, front.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}

	// /sync: by user, whatever the device or the path's version.
	users := map[string]bool{}
	for _, local := range []string{"YWxpY2U", "Ym9i", "Y2Fyb2w", "ZGF2ZQ", "ZXZl", "ZnJhbms"} {
		first := get("/_matrix/client/v3/sync", "syt_"+local+"_device1")
		if again := get("/_matrix/client/r0/sync?since=s1", "syt_"+local+"_device2"); again != first {
			t.Errorf("user %s: sync went to %s, then %s", local, first, again)
		}
		if first[:4] != "sync" {
			t.Errorf("sync went to %s", first)
		}
		users[first] = true
	}
	if len(users) != 2 {
		t.Errorf("six users all synced on %v", users)
	}
	if got := get("/_matrix/client/v3/rooms/!r:h/initialSync", "syt_YWxpY2U_x"); got != get("/_matrix/client/v3/sync", "syt_YWxpY2U_y") {
		t.Errorf("initialSync and sync of one user on different workers")
	}
	// Pagination: one room, one gateway.
	room := "/_matrix/client/v3/rooms/%21abc:h/messages"
	if a, b := get(room, "t1"), get(room+"?from=t5_0", "t2"); a != b || a[:2] != "gw" {
		t.Errorf("pagination of one room went to %s and %s", a, b)
	}
	// The rest: round robin over the gateways.
	seen := map[string]int{}
	for range 4 {
		seen[get("/_matrix/client/v3/joined_rooms", "t")]++
	}
	if seen["gw0"] != 2 || seen["gw1"] != 2 {
		t.Errorf("round robin: %v", seen)
	}
}

func TestUnreachableBackend(t *testing.T) {
	dead, _ := url.Parse("http://127.0.0.1:1")
	front := httptest.NewServer((&Router{Gateways: []*url.URL{dead}}).Handler())
	defer front.Close()
	resp, err := http.Get(front.URL + "/_matrix/client/versions")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadGateway || string(body) == "" {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
}

// A client giving up a long poll is no backend failure: nothing is logged as a warning.
func TestClientCancelIsNotBackendFailure(t *testing.T) {
	release := make(chan struct{})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer backend.Close()
	defer close(release)
	u, _ := url.Parse(backend.URL)
	core, logs := observer.New(zapcore.InfoLevel)
	front := httptest.NewServer((&Router{Gateways: []*url.URL{u}, Log: zap.New(core)}).Handler())
	defer front.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, front.URL+"/_matrix/client/v3/sync?timeout=30000", nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		_ = resp.Body.Close()
		t.Fatal("the long poll answered before the client gave up")
	}
	// Close waits for the proxy's handler, which ends with the cancelled backend request.
	front.Close()
	if n := logs.Len(); n != 0 {
		t.Fatalf("a client cancellation logged %d lines at info or above: %v", n, logs.All()[0].Message)
	}
}
