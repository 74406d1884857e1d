package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gopkg.in/yaml.v3"

	"github.com/ganglionhq/ganglion/deployments/config"
	"github.com/ganglionhq/ganglion/persist/pgtest"
	"github.com/ganglionhq/ganglion/streams"
)

// ganglionBin is the binary every test runs, built once by TestMain.
var ganglionBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ganglion-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	ganglionBin = filepath.Join(dir, "ganglion")
	build := exec.Command("go", "build", "-o", ganglionBin, "github.com/ganglionhq/ganglion")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the ganglion binary failed:", err)
		return 1
	}
	return m.Run()
}

// Bounds on waits, so a broken server fails a test instead of hanging it. They are
// generous on purpose: nothing here measures speed.
const (
	startTimeout = 60 * time.Second
	flowTimeout  = 3 * time.Minute
)

// randomLetters returns n random lowercase letters.
func randomLetters(n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyz"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}

// freePort returns a port for a process to listen on (pgtest.FreePort).
func freePort(t *testing.T) int { return pgtest.FreePort(t) }

// deployment is one test's homeserver: its own database, NATS namespace, server name,
// signing key and configuration files, and the processes started from them.
type deployment struct {
	t          *testing.T
	dir        string
	dsn        string
	serverName string
	namespace  string
	// natsURL is the test's own NATS server, or "" when the single process embeds one.
	natsURL string
	// natsServer and natsStore are that server and its JetStream directory.
	natsServer *server.Server
	natsStore  string
	nc         *nats.Conn
	js         jetstream.JetStream
	shared     map[string]any
}

type deploymentOptions struct {
	// externalNATS starts a NATS server in the test process and points the processes
	// at it; otherwise the (single) process embeds its own, unreachable from the test.
	externalNATS bool
	// redis is the redis section; nil leaves Redis disabled.
	redis map[string]any
	// eventWriters is stream_writers.events; empty means the main process.
	eventWriters []string
	// rateLimits are rc_* keys replacing those of generousRateLimits.
	rateLimits map[string]any
	// dsn is the database; empty means a new database on the machine's Postgres.
	dsn string
	// streamWriters are further stream_writers entries (typing, receipts, ...).
	streamWriters map[string][]string
	// cluster points the processes at a NATS cluster the test started (its nodes'
	// URLs), with streams of as many replicas as it has nodes.
	cluster *natsCluster
}

// generousRateLimits lift Synapse's default rc_* limits (0.2 messages a second, 3
// registrations, ...) far above what the tests do: they send hundreds of messages and
// register many users from one address. Tests of the limits set their own.
func generousRateLimits() map[string]any {
	lots := map[string]any{"per_second": 10000, "burst_count": 10000}
	return map[string]any{
		"rc_message":         lots,
		"rc_registration":    lots,
		"rc_3pid_validation": lots,
		"rc_login":           map[string]any{"address": lots, "account": lots, "failed_attempts": lots},
		"rc_joins":           map[string]any{"local": lots, "remote": lots},
		"rc_invites":         map[string]any{"per_room": lots, "per_user": lots, "per_issuer": lots},
		"rc_presence":        map[string]any{"per_user": lots},
	}
}

func newDeployment(t *testing.T, o deploymentOptions) *deployment {
	t.Helper()
	d := &deployment{
		t:          t,
		dir:        t.TempDir(),
		dsn:        o.dsn,
		serverName: "t" + randomLetters(8) + ".localhost",
		namespace:  "t" + randomLetters(8),
	}
	if d.dsn == "" {
		d.dsn = pgtest.DSN(t)
	}
	key := filepath.Join(d.dir, "signing.key")
	if err := config.GenerateSigningKey(key); err != nil {
		t.Fatal(err)
	}
	natsSection := map[string]any{"namespace": d.namespace}
	if o.externalNATS {
		d.natsStore = t.TempDir()
		ns, err := streams.StartEmbedded(streams.EmbeddedOptions{StoreDir: d.natsStore, Port: -1})
		if err != nil {
			t.Fatal(err)
		}
		d.natsServer = ns
		t.Cleanup(func() { d.natsServer.Shutdown(); d.natsServer.WaitForShutdown() })
		d.natsURL = ns.ClientURL()
		natsSection["url"] = d.natsURL
		if d.nc, err = nats.Connect(d.natsURL); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.nc.Close)
		if d.js, err = jetstream.New(d.nc); err != nil {
			t.Fatal(err)
		}
	} else if o.cluster != nil {
		d.natsURL = o.cluster.urls()
		natsSection["url"] = d.natsURL
		natsSection["replicas"] = len(o.cluster.nodes)
		var err error
		if d.nc, err = nats.Connect(d.natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.nc.Close)
		if d.js, err = jetstream.New(d.nc); err != nil {
			t.Fatal(err)
		}
	} else {
		natsSection["embedded"] = map[string]any{"store_dir": filepath.Join(d.dir, "nats"), "port": 0}
	}
	d.shared = map[string]any{
		"server_name":         d.serverName,
		"database":            d.dsn,
		"nats":                natsSection,
		"signing_key_path":    key,
		"enable_registration": true,
		"media_store_path":    filepath.Join(d.dir, "media_store"),
	}
	maps.Copy(d.shared, generousRateLimits())
	maps.Copy(d.shared, o.rateLimits)
	if o.redis != nil {
		d.shared["redis"] = o.redis
	}
	d.setStreamWriters(o.eventWriters, o.streamWriters)
	return d
}

// setStreamWriters sets stream_writers (events and the other streams) and, as Synapse's
// rule enforced by the loader requires, instance_map entries for every worker writer
// and main. Nothing listens there yet; the ports only have to be valid.
func (d *deployment) setStreamWriters(events []string, others map[string][]string) {
	sw := map[string]any{}
	if len(events) > 0 {
		sw["events"] = events
	}
	for name, ws := range others {
		sw[name] = ws
	}
	delete(d.shared, "stream_writers")
	delete(d.shared, "instance_map")
	if len(sw) == 0 {
		return
	}
	d.shared["stream_writers"] = sw
	im := map[string]any{"main": map[string]any{"host": "127.0.0.1", "port": freePort(d.t)}}
	for _, ws := range sw {
		for _, w := range ws.([]string) {
			if w != "main" {
				im[w] = map[string]any{"host": "127.0.0.1", "port": freePort(d.t)}
			}
		}
	}
	d.shared["instance_map"] = im
}

// writeYAML writes one configuration file into the deployment's directory.
func (d *deployment) writeYAML(name string, v map[string]any) string {
	d.t.Helper()
	data, err := yaml.Marshal(v)
	if err != nil {
		d.t.Fatal(err)
	}
	path := filepath.Join(d.dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		d.t.Fatal(err)
	}
	return path
}

func clientListener(port int) []map[string]any {
	return []map[string]any{{
		"port":           port,
		"bind_addresses": []string{"127.0.0.1"},
		"type":           "http",
		"resources":      []map[string]any{{"names": []string{"client"}}},
	}}
}

// startMain starts the main process with a client listener.
func (d *deployment) startMain() *process {
	d.t.Helper()
	return d.startMainWith(nil)
}

// startMainWith starts the main process with a client listener and further listeners.
func (d *deployment) startMainWith(further []map[string]any) *process {
	d.t.Helper()
	port := freePort(d.t)
	cfg := map[string]any{}
	for k, v := range d.shared {
		cfg[k] = v
	}
	cfg["listeners"] = append(clientListener(port), further...)
	p := d.start("main", port, d.writeYAML("homeserver.yaml", cfg))
	p.waitReady()
	return p
}

// launchWorker starts a generic worker without waiting for it (see waitReady), so
// several processes start at once, as after a deployment-wide restart; withClient gives
// it a client listener.
func (d *deployment) launchWorker(name string, withClient bool) *process {
	d.t.Helper()
	if !withClient {
		return d.launchWorkerOn(name, 0, nil)
	}
	port := freePort(d.t)
	return d.launchWorkerOn(name, port, clientListener(port))
}

// launchWorkerOn starts a generic worker with the given worker_listeners, port being
// its client listener's (0: none).
func (d *deployment) launchWorkerOn(name string, port int, listeners []map[string]any) *process {
	d.t.Helper()
	shared := filepath.Join(d.dir, "shared.yaml")
	if _, err := os.Stat(shared); err != nil {
		d.writeYAML("shared.yaml", d.shared)
	}
	worker := map[string]any{"worker_app": config.GenericWorker, "worker_name": name}
	if listeners != nil {
		worker["worker_listeners"] = listeners
	}
	return d.start(name, port, shared, d.writeYAML(name+".yaml", worker))
}

// singleProcess starts, for a test that runs in parallel, one homeserver process with
// its own database and embedded NATS; the context ends with the test or after
// flowTimeout.
func singleProcess(t *testing.T) (context.Context, *deployment, *process) {
	return mainProcess(t, deploymentOptions{})
}

// mainProcess starts, for a test that runs in parallel, the main process of a
// deployment made with opts; the context ends with the test or after flowTimeout.
func mainProcess(t *testing.T, opts deploymentOptions) (context.Context, *deployment, *process) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	t.Cleanup(cancel)
	d := newDeployment(t, opts)
	return ctx, d, d.startMain()
}

// externalURL is GANGLION_E2E_URL: the base URL of a running deployment (such as the
// front door of `go tool task cluster`) that the client scenarios, the tests that talk
// to the server only as clients do, run against instead of a process of their own.
var externalURL = os.Getenv("GANGLION_E2E_URL")

// runTag is empty for a server of the test's own, and a few random letters for the
// deployment at externalURL, which every test and run shares: user names searched for
// and room aliases built with it are this run's own.
var runTag = func() string {
	if externalURL == "" {
		return ""
	}
	return randomLetters(6)
}()

// clientScenario starts, for a test that runs in parallel and talks to the server only
// as a client does, one homeserver process of its own, or uses the running deployment
// at externalURL; it returns the server's base URL. The context ends with the test or
// after flowTimeout.
func clientScenario(t *testing.T) (context.Context, string) {
	if externalURL == "" {
		ctx, _, hs := singleProcess(t)
		return ctx, hs.url()
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	t.Cleanup(cancel)
	return ctx, externalURL
}

// startFrontDoor starts `ganglion frontdoor` with the configuration files of procs, the
// deployment's processes.
func (d *deployment) startFrontDoor(procs ...*process) *process {
	d.t.Helper()
	return d.startFrontDoorWith(deploymentArgs(procs)...)
}

// startFrontDoorWith starts `ganglion frontdoor` with files, its arguments naming the
// deployment's configuration files.
func (d *deployment) startFrontDoorWith(files ...string) *process {
	d.t.Helper()
	port := freePort(d.t)
	args := append([]string{"frontdoor", "-listen", "127.0.0.1:" + strconv.Itoa(port)}, files...)
	p := &process{t: d.t, name: "frontdoor", port: port, args: args, dir: d.dir}
	p.launch()
	d.t.Cleanup(p.cleanup)
	p.waitClientReady()
	return p
}

// deploymentArgs are the -c groups naming procs' configuration files, as the commands
// reading a whole deployment take them.
func deploymentArgs(procs []*process) []string {
	var args []string
	for i, p := range procs {
		if i > 0 {
			args = append(args, "--")
		}
		for _, f := range p.files {
			args = append(args, "-c", f)
		}
	}
	return args
}

// process is one running ganglion OS process.
type process struct {
	t     *testing.T
	name  string
	port  int
	files []string
	// args replaces "run -c files..." for other subcommands.
	args []string
	dir  string

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	exitErr  error
	stopping bool
	starts   int
	logs     []string
}

func (d *deployment) start(name string, port int, files ...string) *process {
	d.t.Helper()
	p := &process{t: d.t, name: name, port: port, files: files, dir: d.dir}
	p.launch()
	d.t.Cleanup(p.cleanup)
	return p
}

// launch starts the process, with its output in a new log file per start.
func (p *process) launch() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.starts++
	logPath := filepath.Join(p.dir, fmt.Sprintf("%s.%d.log", p.name, p.starts))
	logFile, err := os.Create(logPath)
	if err != nil {
		p.t.Fatal(err)
	}
	args := p.args
	if args == nil {
		args = []string{"run"}
		for _, f := range p.files {
			args = append(args, "-c", f)
		}
	}
	cmd := exec.Command(ganglionBin, args...)
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited, p.stopping = cmd, exited, false
	p.logs = append(p.logs, logPath)
	go func() {
		err := cmd.Wait()
		logFile.Close()
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		close(exited)
	}()
}

// url is the base URL of the process's client listener.
func (p *process) url() string { return "http://127.0.0.1:" + strconv.Itoa(p.port) }

func (p *process) current() (*exec.Cmd, chan struct{}, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd, p.exited, p.logs[len(p.logs)-1]
}

// waitClientReady polls GET /_matrix/client/versions until it answers 200.
func (p *process) waitClientReady() {
	p.t.Helper()
	_, exited, _ := p.current()
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		resp, err := http.Get(p.url() + "/_matrix/client/versions")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-exited:
			p.t.Fatalf("%s exited before it was ready: %v", p.name, p.exitErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
	p.t.Fatalf("%s: /_matrix/client/versions did not answer 200 within %s", p.name, startTimeout)
}

// waitLogged waits until the current start's log contains text.
func (p *process) waitLogged(text string) {
	p.t.Helper()
	_, exited, logPath := p.current()
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		data, _ := os.ReadFile(logPath)
		if bytes.Contains(data, []byte(text)) {
			return
		}
		select {
		case <-exited:
			p.t.Fatalf("%s exited before logging %q: %v", p.name, text, p.exitErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
	p.t.Fatalf("%s did not log %q within %s", p.name, text, startTimeout)
}

// hangup sends the process SIGHUP, which it lives through.
func (p *process) hangup() {
	p.t.Helper()
	cmd, _, _ := p.current()
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		p.t.Fatalf("%s: SIGHUP: %v", p.name, err)
	}
}

// signal sends sig to a process the test stops on purpose and returns the channel
// closed when it has exited.
func (p *process) signal(sig syscall.Signal) chan struct{} {
	p.mu.Lock()
	p.stopping = true
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	_ = cmd.Process.Signal(sig)
	return exited
}

// kill9 kills the process with SIGKILL, as a crash would, and waits for it to be gone.
func (p *process) kill9() {
	p.t.Helper()
	<-p.signal(syscall.SIGKILL)
}

// stop sends SIGTERM, as an operator or a service manager would, and waits for the
// process to exit.
func (p *process) stop() {
	p.t.Helper()
	exited := p.signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(startTimeout):
		p.t.Fatalf("%s still runs %s after SIGTERM", p.name, startTimeout)
	}
}

// restart starts the process again with the same configuration files.
func (p *process) restart() {
	p.t.Helper()
	p.launch()
	p.waitReady()
}

// waitReady waits until the process serves clients, or for processes without a client
// listener, which have no endpoint to poll, until it logs that it started.
func (p *process) waitReady() {
	p.t.Helper()
	if p.port != 0 {
		p.waitClientReady()
	} else {
		p.waitLogged("process started")
	}
}

// cleanup stops the process, reports it if it had died on its own, and prints the tail
// of its logs when the test failed.
func (p *process) cleanup() {
	p.mu.Lock()
	cmd, exited, stopping := p.cmd, p.exited, p.stopping
	p.stopping = true
	p.mu.Unlock()
	select {
	case <-exited:
		if !stopping {
			p.t.Errorf("%s exited on its own during the test: %v", p.name, p.exitErr)
		}
	default:
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-exited
		}
	}
	if p.t.Failed() {
		for _, path := range p.logs {
			p.t.Logf("--- last lines of %s ---\n%s", filepath.Base(path), tail(path, 60))
		}
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// lastSeq is the last sequence a JetStream stream of the deployment ever assigned: it
// moves whenever anything is published to the stream, even if the message is gone
// since (work-queue streams delete acknowledged intents).
func (d *deployment) lastSeq(ctx context.Context, stream string) uint64 {
	d.t.Helper()
	s, err := d.js.Stream(ctx, stream)
	if err != nil {
		d.t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		d.t.Fatalf("stream %s info: %v", stream, err)
	}
	return info.State.LastSeq
}

// restartNATS stops the deployment's NATS server, keeps it down for down, and starts it
// again on the same port with the same JetStream files.
func (d *deployment) restartNATS(down time.Duration) {
	d.t.Helper()
	port := d.natsServer.Addr().(*net.TCPAddr).Port
	d.natsServer.Shutdown()
	d.natsServer.WaitForShutdown()
	time.Sleep(down)
	ns, err := streams.StartEmbedded(streams.EmbeddedOptions{StoreDir: d.natsStore, Port: port})
	if err != nil {
		d.t.Fatalf("restart NATS on port %d: %v", port, err)
	}
	d.natsServer = ns
}

// topology is the stream naming of the deployment's namespace.
func (d *deployment) topology() streams.Topology {
	return streams.Topology{Namespace: d.namespace}
}

// query runs fn on a fresh connection to the deployment's database.
func (d *deployment) query(ctx context.Context, fn func(conn *pgx.Conn) error) {
	d.t.Helper()
	conn, err := pgx.Connect(ctx, d.dsn)
	if err != nil {
		d.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := fn(conn); err != nil {
		d.t.Fatal(err)
	}
}

// waitEvaluated waits until the deployment's pushers have evaluated every log message
// the events writers projected, so a stop leaves nothing for them to do.
func (d *deployment) waitEvaluated(ctx context.Context) {
	d.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var evaluated, last int64
		d.query(ctx, func(conn *pgx.Conn) error {
			// The log's end as the events writers projected it: a purged room's batch
			// has no row in events.
			return conn.QueryRow(ctx, `SELECT (SELECT COALESCE(min(stream_id), 0) FROM stream_positions WHERE stream_name = 'pusher'),
				greatest((SELECT COALESCE(max(seq), 0) FROM events),
					(SELECT COALESCE(max(stream_id), 0) FROM stream_positions WHERE stream_name = 'events'))`).Scan(&evaluated, &last)
		})
		if evaluated >= last {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("the pushers evaluated the log up to %d of %d", evaluated, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
