package client

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

// getWithToken sends an authenticated GET and returns the answer and its decoded body.
func getWithToken(t *testing.T, url, token string) (*http.Response, map[string]any) {
	t.Helper()
	resp, raw := authedGet(t, url, token)
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("GET %s: body %q is not JSON", url, raw)
	}
	return resp, body
}

// wantUnavailable checks the answer to a request met by a database outage: 503 with a
// retry hint in the header and the body, never a 500.
func wantUnavailable(t *testing.T, what string, resp *http.Response, body map[string]any) {
	t.Helper()
	if resp.StatusCode != http.StatusServiceUnavailable || body["errcode"] != "M_UNKNOWN" {
		t.Errorf("%s: %d %v, want 503 M_UNKNOWN", what, resp.StatusCode, body)
	}
	if resp.Header.Get("Retry-After") == "" || body["retry_after_ms"] == nil {
		t.Errorf("%s: no retry hint (Retry-After %q, body %v)", what, resp.Header.Get("Retry-After"), body)
	}
}

// TestDatabaseOutageAnswers503: with the database gone, a token lookup and a /sync
// answer 503 with a retry hint.
func TestDatabaseOutageAnswers503(t *testing.T) {
	t.Parallel()
	srv := newSyncServer(t)
	// The token cache's clock stands still, so a token looked up once stays cached
	// however slow the machine is.
	now := time.Now()
	srv.tokens.now = func() time.Time { return now }
	cached := newSyncTestUser(t, srv.db, "@cached:"+testServerName, "DEV")
	fresh := newSyncTestUser(t, srv.db, "@fresh:"+testServerName, "DEV")
	if resp, body := getWithToken(t, srv.url+"/_matrix/client/v3/sync", cached); resp.StatusCode != 200 {
		t.Fatalf("sync before the outage: %d %v", resp.StatusCode, body)
	}

	srv.db.Pool.Close()
	resp, body := getWithToken(t, srv.url+"/_matrix/client/v3/account/whoami", fresh)
	wantUnavailable(t, "token lookup", resp, body)
	resp, body = getWithToken(t, srv.url+"/_matrix/client/v3/sync", cached)
	wantUnavailable(t, "sync", resp, body)
	resp, body = getWithToken(t, srv.url+"/_matrix/client/v3/joined_rooms", cached)
	wantUnavailable(t, "joined_rooms", resp, body)
}
