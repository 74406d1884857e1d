package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// The seed's routing, through the front door and through the nginx configuration
// generate-nginx writes from the same files: each request reaches the process the
// seed's tables assign, as each process's metrics show. The deployment: main (the
// events writer, in the client group by default), gateway1 (client and federation),
// sync1 (routes: sync, initial_sync) and writer1, the writer of the typing, to-device,
// account data, receipts, presence and push rules streams (routes: their groups).
func TestSeedRouting(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	writerStreams := []string{"typing", "to_device", "account_data", "receipts", "presence", "push_rules"}
	streamWriters := map[string][]string{}
	for _, s := range writerStreams {
		streamWriters[s] = []string{"writer1"}
	}
	d := newDeployment(t, deploymentOptions{externalNATS: true, streamWriters: streamWriters})
	d.shared["enable_metrics"] = true
	metrics := map[string]int{}
	for _, name := range []string{"main", "gateway1", "sync1", "writer1"} {
		metrics[name] = freePort(t)
	}
	hs := d.startMainWith([]map[string]any{metricsListener(metrics["main"])})
	worker := func(name string, resources []string, routes []string) *process {
		port := freePort(t)
		l := map[string]any{
			"port": port, "bind_addresses": []string{"127.0.0.1"}, "type": "http",
			"resources": []map[string]any{{"names": resources}},
		}
		if routes != nil {
			l["routes"] = routes
		}
		return d.launchWorkerOn(name, port, []map[string]any{l, metricsListener(metrics[name])})
	}
	gw := worker("gateway1", []string{"client", "federation"}, nil)
	sync1 := worker("sync1", []string{"client"}, []string{"sync", "initial_sync"})
	writer1 := worker("writer1", []string{"client"}, writerStreams)
	procs := []*process{hs, gw, sync1, writer1}
	for _, p := range procs[1:] {
		p.waitReady()
	}

	// Where each servlet may be served. Every servlet here is asked for at least once.
	where := map[string][]string{
		"/_matrix/client/*/sync":                                    {"sync1"},
		"/_matrix/client/*/rooms/{room}/typing/{user}":              {"writer1"},
		"/_matrix/client/*/sendToDevice/{eventType}/{txnId}":        {"writer1"},
		"/_matrix/client/*/user/{user}/account_data/{type}":         {"writer1"},
		"/_matrix/client/*/rooms/{room}/receipt/{type}/{event}":     {"writer1"},
		"/_matrix/client/*/presence/{user}/status":                  {"writer1"},
		"/_matrix/client/*/pushrules/":                              {"writer1"},
		"/_matrix/client/*/register":                                {"main", "gateway1"},
		"/_matrix/client/*/login":                                   {"main", "gateway1"},
		"/_matrix/client/*/createRoom":                              {"main", "gateway1"},
		"/_matrix/client/*/rooms/{room}/send/{type}/{txn}":          {"main", "gateway1"},
		"/_matrix/client/*/rooms/{room}/messages":                   {"main", "gateway1"},
		"/_matrix/client/*/rooms/{room}/invite":                     {"main", "gateway1"},
		"/_matrix/client/*/rooms/{room}/join":                       {"main", "gateway1"},
		"/_matrix/client/*/rooms/{room}/joined_members":             {"main", "gateway1"},
		"/_matrix/client/*/rooms/{room}/state/{type}/{stateKey...}": {"main", "gateway1"},
	}
	check := func(phase string) {
		t.Helper()
		served := map[string]map[string]float64{}
		line := regexp.MustCompile(`(?m)^synapse_http_server_requests_received_total\{method="[A-Z]+",servlet="([^"]+)"\} ([0-9.e+]+)$`)
		for name, port := range metrics {
			for _, m := range line.FindAllStringSubmatch(scrapeMetrics(ctx, t, port), -1) {
				v, _ := strconv.ParseFloat(m[2], 64)
				if served[m[1]] == nil {
					served[m[1]] = map[string]float64{}
				}
				served[m[1]][name] += v
			}
		}
		for servlet, allowed := range where {
			var in float64
			for name, n := range served[servlet] {
				if slices.Contains(allowed, name) {
					in += n
				} else if n > 0 {
					t.Errorf("%s: %s served %v requests of %s, which the seed routes to %v", phase, name, n, servlet, allowed)
				}
			}
			if in == 0 {
				t.Errorf("%s: %v served no request of %s (served: %v)", phase, allowed, servlet, served[servlet])
			}
		}
	}

	front := d.startFrontDoor(procs...)
	exerciseRoutes(ctx, t, front.url(), "front")
	check("front door")

	nginxURL := startNginx(ctx, t, d, procs)
	exerciseRoutes(ctx, t, nginxURL, "nginx")
	check("nginx")
}

// exerciseRoutes registers two users through base and has them use an endpoint of
// every group of the seed's table.
func exerciseRoutes(ctx context.Context, t *testing.T, base, tag string) {
	t.Helper()
	alice := newUser(ctx, t, base, tag+"alice")
	bob := newUser(ctx, t, base, tag+"bob")
	room := createRoomWith(ctx, t, alice, "private_chat", bob)
	eventID, err := sendText(ctx, alice, room, "t1", "routed")
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"initial sync", func() error { _, err := bob.FullSyncRequest(ctx, mautrix.ReqSync{}); return err }},
		{"incremental sync", func() error {
			first, err := bob.FullSyncRequest(ctx, mautrix.ReqSync{})
			if err == nil {
				_, err = bob.FullSyncRequest(ctx, mautrix.ReqSync{Since: first.NextBatch})
			}
			return err
		}},
		{"typing", func() error { _, err := alice.UserTyping(ctx, room, true, 10*time.Second); return err }},
		// alice's message reaches the receipts writer's reads once it is projected.
		{"receipt", func() error {
			eventually(t, "a receipt for alice's message", func() error { return bob.MarkRead(ctx, room, eventID) })
			return nil
		}},
		{"to-device", func() error {
			_, err := alice.SendToDevice(ctx, event.Type{Type: "org.example.ping", Class: event.ToDeviceEventType}, &mautrix.ReqSendToDevice{
				Messages: map[id.UserID]map[id.DeviceID]*event.Content{bob.UserID: {"*": {Raw: map[string]any{"n": 1}}}},
			})
			return err
		}},
		{"account data", func() error { return alice.SetAccountData(ctx, "org.example.routed", map[string]any{"x": 1}) }},
		{"presence", func() error { return alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline}) }},
		{"push rules", func() error { _, err := alice.GetPushRules(ctx); return err }},
		{"messages", func() error {
			_, err := bob.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 10)
			return err
		}},
		{"joined members", func() error { _, err := bob.JoinedMembers(ctx, room); return err }},
		{"state", func() error {
			_, err := alice.SendStateEvent(ctx, room, event.StateTopic, "", map[string]any{"topic": "routed"})
			return err
		}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s through %s: %v", s.what, base, err)
		}
	}
	// Internal endpoints are not reachable.
	if status, body, _ := rawRequest(ctx, t, http.MethodPost, base+"/_synapse/replication/send_event/x", "", []byte("{}")); status != http.StatusNotFound {
		t.Errorf("replication endpoint through %s: %d %s", base, status, body)
	}
}

// startNginx runs Debian's nginx with the configuration generate-nginx writes for
// procs, and returns its URL. Without nginx the test is skipped, except in CI, whose
// script installs it.
func startNginx(ctx context.Context, t *testing.T, d *deployment, procs []*process) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		bin = "/usr/sbin/nginx"
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("nginx is not installed (.ci/run installs nginx-light)")
		}
		t.Skip("nginx is not installed (apt-get install nginx-light)")
	}
	dir := t.TempDir()
	port := freePort(t)
	generated := filepath.Join(dir, "ganglion.conf")
	args := append([]string{"generate-nginx", "-listen", "127.0.0.1:" + strconv.Itoa(port), "-o", generated}, deploymentArgs(procs)...)
	if out, err := exec.CommandContext(ctx, ganglionBin, args...).CombinedOutput(); err != nil {
		t.Fatalf("generate-nginx: %v\n%s", err, out)
	}
	var temps strings.Builder
	for _, kind := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&temps, "  %s_temp_path %s;\n", kind, filepath.Join(dir, kind))
	}
	conf := fmt.Sprintf(`daemon off;
master_process off;
pid %s;
error_log %s warn;
events {}
http {
  access_log off;
%s  include %s;
}
`, filepath.Join(dir, "nginx.pid"), filepath.Join(dir, "error.log"), temps.String(), generated)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", confPath)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx output:\n%s\nerror.log:\n%s", out, log)
		}
	})
	addr := "127.0.0.1:" + strconv.Itoa(port)
	for deadline := time.Now().Add(startTimeout); ; time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-exited:
			generatedText, _ := os.ReadFile(generated)
			t.Fatalf("nginx exited: %v\n%s\n%s", err, out, generatedText)
		default:
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			_ = c.Close()
			return "http://" + addr
		}
		if time.Now().After(deadline) {
			t.Fatal("nginx did not listen")
		}
	}
}

// TestFrontDoorReload: a sync worker added while the deployment runs takes its share
// of the users once the front door, reading its files from the workers directory,
// gets SIGHUP: no restart, and no user of the first worker moves anywhere but to it.
func TestFrontDoorReload(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{externalNATS: true})
	d.shared["enable_metrics"] = true
	d.startMain()
	syncWorker := func(name string) (*process, int) {
		port, metrics := freePort(t), freePort(t)
		p := d.launchWorkerOn(name, port, []map[string]any{{
			"port": port, "bind_addresses": []string{"127.0.0.1"}, "type": "http",
			"resources": []map[string]any{{"names": []string{"client"}}}, "routes": []string{"sync", "initial_sync"},
		}, metricsListener(metrics)})
		p.waitReady()
		return p, metrics
	}
	_, metrics1 := syncWorker("sync1")
	// The layout of deployments/workers: the shared file first, every other file of
	// the directory a process's own (the main process's homeserver.yaml among them).
	fd := d.startFrontDoorWith("-c", filepath.Join(d.dir, "shared.yaml"), "-workers", d.dir)
	syncs := func(port int) float64 {
		line := regexp.MustCompile(`(?m)^synapse_http_server_requests_received_total\{method="GET",servlet="/_matrix/client/\*/sync"\} ([0-9.e+]+)$`)
		m := line.FindStringSubmatch(scrapeMetrics(ctx, t, port))
		if m == nil {
			return 0
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	// 60 users' incremental syncs: the front door routes them by the token's user;
	// the worker answers 401 for these made-up tokens, after counting them.
	syncAll := func() {
		for i := range 60 {
			token := "syt_" + base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "user%d", i)) + "_x_1"
			status, _, _ := rawRequest(ctx, t, "GET", fd.url()+"/_matrix/client/v3/sync?since=s1&timeout=0", token, nil)
			if status != http.StatusUnauthorized {
				t.Fatalf("a sync with a made-up token: HTTP %d", status)
			}
		}
	}
	syncAll()
	if got := syncs(metrics1); got != 60 {
		t.Fatalf("sync1 served %v of 60 syncs with one sync worker", got)
	}

	_, metrics2 := syncWorker("sync2")
	syncAll()
	if got := syncs(metrics1); got != 120 {
		t.Fatalf("before the reload sync1 served %v of 120", got)
	}
	fd.hangup()
	fd.waitLogged("reloaded the deployment's files")
	syncAll()
	moved := syncs(metrics2)
	if moved < 15 || moved > 45 || syncs(metrics1)+moved != 180 {
		t.Errorf("after the reload: sync2 served %v of 60, sync1 %v in all (want about half to sync2, none lost)", moved, syncs(metrics1))
	}
}
