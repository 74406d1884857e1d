package frontdoor

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// Every endpoint group of the seed's tables lands in its group, keyed as the seed says.
func TestClassify(t *testing.T) {
	t.Parallel()
	const user = "Bearer syt_YWxpY2U_abc_123"
	for _, tt := range []struct {
		method, target, auth string
		group                Group
		key                  string
	}{
		{"GET", "/_matrix/client/v3/sync?since=s1", user, Sync, "YWxpY2U"},
		{"GET", "/_matrix/client/r0/sync?since=s1&access_token=syt_Ym9i_x", "", Sync, "Ym9i"},
		{"GET", "/_matrix/client/v3/sync", user, InitialSync, "YWxpY2U"},
		{"GET", "/_matrix/client/v3/events", user, Sync, "YWxpY2U"},
		{"GET", "/_matrix/client/v3/initialSync", user, InitialSync, "YWxpY2U"},
		{"GET", "/_matrix/client/r0/rooms/!r:h/initialSync", user, InitialSync, "YWxpY2U"},
		{"PUT", "/_matrix/federation/v1/send/txn1", `X-Matrix origin="remote.example",key="ed25519:a",sig="s"`, FederationInbound, "remote.example"},
		{"PUT", "/_matrix/federation/v1/send/txn1", `x-matrix origin=bare.example,key="k"`, FederationInbound, "bare.example"},
		{"GET", "/_matrix/federation/v1/event/$e", "", Federation, ""},
		{"PUT", "/_matrix/federation/v2/send_join/!r:h/$e", "", Federation, ""},
		{"GET", "/_matrix/key/v2/query/remote.example", "", Federation, ""},
		{"GET", "/_matrix/key/v2/server", "", Federation, ""},
		{"POST", "/_matrix/media/v3/upload", user, Media, ""},
		{"GET", "/_matrix/client/v1/media/download/h/abc", user, Media, ""},
		{"GET", "/_matrix/federation/v1/media/download/abc", "", Media, ""},
		{"POST", "/_synapse/admin/v1/purge_media_cache", user, Media, ""},
		{"GET", "/_synapse/admin/v1/users/@a:h/media", user, Media, ""},
		{"DELETE", "/_synapse/admin/v1/media/h/abc", user, Media, ""},
		{"PUT", "/_matrix/client/v3/rooms/!r:h/typing/@a:h", user, Typing, ""},
		{"PUT", "/_matrix/client/v3/sendToDevice/m.x/t1", user, ToDevice, ""},
		{"PUT", "/_matrix/client/v3/user/@a:h/rooms/!r:h/tags/u.x", user, AccountData, ""},
		{"PUT", "/_matrix/client/v3/user/@a:h/account_data/m.x", user, AccountData, ""},
		{"POST", "/_matrix/client/v3/rooms/!r:h/receipt/m.read/$e", user, Receipts, ""},
		{"POST", "/_matrix/client/v3/rooms/!r:h/read_markers", user, Receipts, ""},
		{"PUT", "/_matrix/client/v3/presence/@a:h/status", user, Presence, ""},
		{"GET", "/_matrix/client/v3/pushrules/", user, PushRules, ""},
		{"POST", "/_matrix/client/v3/login", "", Login, ""},
		{"POST", "/_matrix/client/v3/register", "", Login, ""},
		{"GET", "/_matrix/client/v3/register/available", "", Login, ""},
		{"GET", "/_matrix/client/v3/password_policy", "", Login, ""},
		{"GET", "/_matrix/client/v3/rooms/!abc:h/messages?from=t1", user, Pagination, "!abc:h"},
		{"PUT", "/_matrix/client/v3/rooms/!r:h/send/m.room.message/t1", user, Client, ""},
		{"POST", "/_matrix/client/v3/createRoom", user, Client, ""},
		{"GET", "/_matrix/client/versions", "", Client, ""},
		{"GET", "/_synapse/admin/v1/rooms", user, Client, ""},
		{"GET", "/.well-known/matrix/client", "", Client, ""},
	} {
		r := httptest.NewRequest(tt.method, tt.target, nil)
		if tt.auth != "" {
			r.Header.Set("Authorization", tt.auth)
		}
		got := Classify(r)
		if got.Refused || got.Group != tt.group || got.Key != tt.key {
			t.Errorf("%s %s: got %+v, want group %s key %q", tt.method, tt.target, got, tt.group, tt.key)
		}
	}
	for _, path := range []string{"/_synapse/replication/send_event/x", "/_synapse/replication/"} {
		if got := Classify(httptest.NewRequest("POST", path, nil)); !got.Refused {
			t.Errorf("%s: got %+v, want refused", path, got)
		}
	}
}

// Patterns are used as they are in nginx's double-quoted location and map strings.
func TestPatternsNeedNoEscaping(t *testing.T) {
	t.Parallel()
	for _, r := range append(Rules, Rule{Pattern: refusedPattern}) {
		if strings.ContainsAny(r.Pattern.String(), "\"\\;{} \n") {
			t.Errorf("pattern %q needs escaping in nginx", r.Pattern)
		}
	}
}

// upstream is an HTTP server that answers with its name; its state makes /health
// answer 503 (sick) or every request meet a closed connection (dead).
type upstream struct {
	Upstream
	state chan string
}

func startUpstream(t *testing.T, name string) *upstream {
	t.Helper()
	u := &upstream{state: make(chan string, 1)}
	u.state <- "ok"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		state := u.set("")
		switch {
		case state == "dead":
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_ = conn.Close()
			}
		case r.URL.Path == "/health" && state == "sick":
			w.WriteHeader(http.StatusServiceUnavailable)
		case r.URL.Path == "/health":
		default:
			_, _ = io.Copy(io.Discard, r.Body)
			_, _ = io.WriteString(w, name)
		}
	}))
	t.Cleanup(srv.Close)
	parsed, _ := url.Parse(srv.URL)
	u.Upstream = Upstream{Name: name, URL: parsed}
	return u
}

// set makes state the upstream's state ("" keeps it) and returns the state it had.
func (u *upstream) set(state string) string {
	was := <-u.state
	if state == "" {
		state = was
	}
	u.state <- state
	return was
}

func upstreams(us ...*upstream) []Upstream {
	var out []Upstream
	for _, u := range us {
		out = append(out, u.Upstream)
	}
	return out
}

// front starts a Router over table with fast health checks, and returns a function
// sending a request through it that answers the upstream's name and the status.
func front(t *testing.T, table Table) func(method, target, auth string) (string, int) {
	t.Helper()
	do, _ := frontRouter(t, table)
	return do
}

// frontRouter is front, with the Router.
func frontRouter(t *testing.T, table Table) (func(method, target, auth string) (string, int), *Router) {
	t.Helper()
	rt, err := New(table, Options{HealthInterval: 20 * time.Millisecond, HealthTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rt.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	srv := httptest.NewServer(rt)
	t.Cleanup(srv.Close)
	return func(method, target, auth string) (string, int) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+target, strings.NewReader("{}"))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body), resp.StatusCode
	}, rt
}

func TestRouting(t *testing.T) {
	t.Parallel()
	gw0, gw1 := startUpstream(t, "gw0"), startUpstream(t, "gw1")
	s0, s1 := startUpstream(t, "sync0"), startUpstream(t, "sync1")
	initial := startUpstream(t, "initial")
	typing := startUpstream(t, "typing")
	fed0, fed1 := startUpstream(t, "fed0"), startUpstream(t, "fed1")
	do := front(t, Table{
		Client: upstreams(gw0, gw1), Sync: upstreams(s0, s1), InitialSync: upstreams(initial),
		Typing: upstreams(typing), Federation: upstreams(fed0, fed1),
	})

	// /sync: by user, whatever the device or the path's version.
	users := map[string]bool{}
	for _, local := range []string{"YWxpY2U", "Ym9i", "Y2Fyb2w", "ZGF2ZQ", "ZXZl", "ZnJhbms"} {
		first, _ := do("GET", "/_matrix/client/v3/sync?since=s1", "Bearer syt_"+local+"_device1")
		if again, _ := do("GET", "/_matrix/client/r0/sync?since=s2", "Bearer syt_"+local+"_device2"); again != first {
			t.Errorf("user %s: sync went to %s, then %s", local, first, again)
		}
		if !strings.HasPrefix(first, "sync") {
			t.Errorf("sync went to %s", first)
		}
		users[first] = true
	}
	if len(users) != 2 {
		t.Errorf("six users all synced on %v", users)
	}
	// Initial syncs have their group.
	if got, _ := do("GET", "/_matrix/client/v3/sync", "Bearer syt_YWxpY2U_x"); got != "initial" {
		t.Errorf("initial sync went to %s", got)
	}
	// A stream writer's endpoints go to it; a group nobody takes falls back to client.
	if got, _ := do("PUT", "/_matrix/client/v3/rooms/!r:h/typing/@a:h", "Bearer t"); got != "typing" {
		t.Errorf("typing went to %s", got)
	}
	if got, _ := do("PUT", "/_matrix/client/v3/sendToDevice/m.x/1", "Bearer t"); !strings.HasPrefix(got, "gw") {
		t.Errorf("to-device went to %s", got)
	}
	// Inbound federation: one origin, one process.
	origin := `X-Matrix origin="remote.example",key="ed25519:1",sig="x"`
	first, _ := do("PUT", "/_matrix/federation/v1/send/1", origin)
	for i := range 4 {
		if got, _ := do("PUT", fmt.Sprintf("/_matrix/federation/v1/send/%d", i+2), origin); got != first || !strings.HasPrefix(got, "fed") {
			t.Errorf("transactions of one origin went to %s and %s", first, got)
		}
	}
	// Pagination: one room, one gateway.
	room := "/_matrix/client/v3/rooms/%21abc:h/messages"
	if a, _ := do("GET", room, "Bearer t1"); a[:2] != "gw" {
		t.Errorf("pagination went to %s", a)
	} else if b, _ := do("GET", room+"?from=t5_0", "Bearer t2"); a != b {
		t.Errorf("pagination of one room went to %s and %s", a, b)
	}
	// The rest: round robin over the client group.
	seen := map[string]int{}
	for range 4 {
		got, _ := do("GET", "/_matrix/client/v3/joined_rooms", "Bearer t")
		seen[got]++
	}
	if seen["gw0"] != 2 || seen["gw1"] != 2 {
		t.Errorf("round robin: %v", seen)
	}
	// Internal endpoints are not forwarded.
	if got, status := do("POST", "/_synapse/replication/send_event/x", ""); status != http.StatusNotFound || !strings.Contains(got, "M_UNRECOGNIZED") {
		t.Errorf("replication path: %d %s", status, got)
	}
}

// Without a federation listener, federation requests are refused, not sent to a
// client listener.
func TestNoFederationListener(t *testing.T) {
	t.Parallel()
	do := front(t, Table{Client: upstreams(startUpstream(t, "gw"))})
	if got, status := do("GET", "/_matrix/key/v2/server", ""); status != http.StatusNotFound {
		t.Errorf("key request: %d %s", status, got)
	}
}

// Adding a fifth upstream to four moves about a fifth of the users, all of them to the
// new one (rendezvous hashing), where a modulus would move four fifths.
func TestConsistentHashing(t *testing.T) {
	t.Parallel()
	build := func(n int) *Router {
		var table []Upstream
		for i := range n {
			table = append(table, Upstream{Name: fmt.Sprintf("sync%d", i), URL: &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", 9000+i)}})
		}
		rt, err := New(Table{Client: table, Sync: table}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		return rt
	}
	four, five := build(4), build(5)
	const users = 10000
	moved := 0
	load := map[string]int{}
	for i := range users {
		route := Route{Group: Sync, Key: fmt.Sprintf("user%d", i)}
		a, b := four.Pick(route, nil), five.Pick(route, nil)
		load[b.Name]++
		if a.Name != b.Name {
			moved++
			if b.Name != "sync4" {
				t.Fatalf("%s moved from %s to %s, not to the new upstream", route.Key, a.Name, b.Name)
			}
		}
	}
	if moved < users/5-users/25 || moved > users/5+users/25 {
		t.Errorf("%d of %d users moved, want about a fifth", moved, users)
	}
	for name, n := range load {
		if n < users/5-users/25 || n > users/5+users/25 {
			t.Errorf("%s has %d of %d users, want about a fifth", name, n, users)
		}
	}
}

// An upstream that fails its health check leaves the rotation and comes back when it
// passes again; an idempotent request to a dead one is retried on another, a POST is
// not.
func TestHealth(t *testing.T) {
	t.Parallel()
	a, b := startUpstream(t, "a"), startUpstream(t, "b")
	do := front(t, Table{Client: upstreams(a, b)})
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	onlyB := func() bool {
		for range 4 {
			if got, _ := do("GET", "/_matrix/client/versions", ""); got != "b" {
				return false
			}
		}
		return true
	}

	a.set("sick")
	waitFor("a sick upstream to leave the rotation", onlyB)
	a.set("ok")
	waitFor("a healthy upstream to come back", func() bool {
		got, _ := do("GET", "/_matrix/client/versions", "")
		return got == "a"
	})

	// a dies: a GET is retried on b at once; after the dead upstream left the rotation
	// every request goes to b.
	a.set("dead")
	for range 4 {
		if got, status := do("GET", "/_matrix/client/v3/joined_rooms", ""); got != "b" || status != http.StatusOK {
			t.Fatalf("GET with a dead upstream: %d %s", status, got)
		}
	}
	waitFor("the dead upstream to leave the rotation", onlyB)
	for range 4 {
		if got, status := do("POST", "/_matrix/client/v3/createRoom", ""); got != "b" {
			t.Fatalf("POST after the dead upstream left: %d %s", status, got)
		}
	}
	a.set("ok")
	waitFor("the revived upstream to come back", func() bool {
		got, _ := do("GET", "/_matrix/client/versions", "")
		return got == "a"
	})
}

// A reload (SIGHUP) adds a sync worker: a fifth of the users move to it and no other
// moves, it is health-checked from then on, and a removed gateway takes no more
// requests.
func TestReload(t *testing.T) {
	t.Parallel()
	gw0, gw1 := startUpstream(t, "gw0"), startUpstream(t, "gw1")
	syncs := []*upstream{startUpstream(t, "s0"), startUpstream(t, "s1"), startUpstream(t, "s2"), startUpstream(t, "s3")}
	do, rt := frontRouter(t, Table{Client: upstreams(gw0, gw1), Sync: upstreams(syncs...)})
	users := make([]string, 200)
	before := map[string]string{}
	for i := range users {
		users[i] = fmt.Sprintf("Bearer syt_%s_x_1", base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "user%d", i)))
		before[users[i]], _ = do("GET", "/_matrix/client/v3/sync?since=s1", users[i])
	}

	s4 := startUpstream(t, "s4")
	added, removed, err := rt.Reload(Table{Client: upstreams(gw0), Sync: upstreams(append(syncs, s4)...)})
	if err != nil || !slices.Equal(added, []string{"s4"}) || !slices.Equal(removed, []string{"gw1"}) {
		t.Fatalf("reload: added %v, removed %v, %v", added, removed, err)
	}
	moved := 0
	for _, u := range users {
		got, _ := do("GET", "/_matrix/client/v3/sync?since=s1", u)
		switch {
		case got == "s4":
			moved++
		case got != before[u]:
			t.Errorf("%s moved from %s to %s, not to the new worker", u, before[u], got)
		}
	}
	if moved < 20 || moved > 60 {
		t.Errorf("%d of %d users moved to the fifth sync worker, want about a fifth", moved, len(users))
	}
	for range 4 {
		if got, _ := do("GET", "/_matrix/client/versions", ""); got != "gw0" {
			t.Fatalf("a request after gw1 was removed went to %s", got)
		}
	}
	// The new upstream is checked: when it falls sick, its users go elsewhere.
	s4.set("sick")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		n := 0
		for _, u := range users {
			if got, _ := do("GET", "/_matrix/client/v3/sync?since=s1", u); got == "s4" {
				n++
			}
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the added upstream, sick, still takes %d users", n)
		}
	}
	if _, _, err := rt.Reload(Table{Sync: upstreams(s4)}); err == nil {
		t.Error("a reload to a table without the client group was taken")
	}
}

// A POST to a dead upstream the health checks have not caught yet is answered 502,
// never sent twice.
func TestPostNotRetried(t *testing.T) {
	t.Parallel()
	dead, _ := url.Parse("http://127.0.0.1:1")
	live := startUpstream(t, "live")
	rt, err := New(Table{Client: []Upstream{{Name: "dead", URL: dead}, live.Upstream}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rt)
	defer srv.Close()
	statuses := map[int]int{}
	for range 2 {
		resp, err := http.Post(srv.URL+"/_matrix/client/v3/createRoom", "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		statuses[resp.StatusCode]++
	}
	// Round robin: one POST met the dead upstream and failed, the other reached the
	// live one.
	if statuses[http.StatusBadGateway] != 1 || statuses[http.StatusOK] != 1 {
		t.Errorf("statuses %v", statuses)
	}
}

// A client giving up a long poll is no backend failure: nothing is logged as a warning,
// and the upstream stays in rotation.
func TestClientCancelIsNotBackendFailure(t *testing.T) {
	t.Parallel()
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
	rt, err := New(Table{Client: []Upstream{{Name: "b", URL: u}}}, Options{Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(rt)
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
	if rt.backends[u.String()].down.Load() {
		t.Fatal("a client cancellation took the upstream out of rotation")
	}
}

func TestCompleteNeedsClient(t *testing.T) {
	t.Parallel()
	u, _ := url.Parse("http://127.0.0.1:9")
	if _, err := (Table{Sync: []Upstream{{Name: "s", URL: u}}}).Complete(); err == nil {
		t.Fatal("a table without a client group was accepted")
	}
}

// Classify reads the path, the query and two headers of any request without failing.
func FuzzClassify(f *testing.F) {
	f.Add("/_matrix/client/v3/sync", "since=s1", "Bearer syt_YWxpY2U_x_y")
	f.Add("/_matrix/federation/v1/send/1", "", `X-Matrix origin="a",key="b"`)
	f.Add("/_matrix/client/v3/rooms/!r:h/messages", "access_token=syt_", "X-Matrix ,,origin")
	f.Fuzz(func(t *testing.T, path, query, auth string) {
		r := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: path, RawQuery: query}, Header: http.Header{}}
		r.Header.Set("Authorization", auth)
		route := Classify(r)
		if route.Refused && route.Group != "" {
			t.Fatalf("refused with a group: %+v", route)
		}
		if !route.Refused && !KnownGroup(string(route.Group)) {
			t.Fatalf("unknown group %q", route.Group)
		}
		_ = Origin(auth)
	})
}
