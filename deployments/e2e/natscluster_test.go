package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// natsServerBin builds nats-server, at the version go.mod pins, next to the ganglion
// binary, once: cluster tests run its nodes as OS processes, to kill them for real.
var natsServerBin = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(filepath.Dir(ganglionBin), "nats-server")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building nats-server: %v\n%s", err, out)
	}
	return bin, nil
})

// natsCluster is a JetStream cluster of nats-server processes on loopback, each with its
// own store, as deployments/nats-cluster runs it.
type natsCluster struct {
	t     *testing.T
	nodes []*natsNode
}

type natsNode struct {
	name               string
	port, clusterPort  int
	conf, store, logTo string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// startNATSCluster starts n nodes and waits until JetStream answers on the cluster.
func startNATSCluster(t *testing.T, n int) *natsCluster {
	t.Helper()
	bin, err := natsServerBin()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c := &natsCluster{t: t}
	var routes []string
	for i := range n {
		node := &natsNode{name: fmt.Sprintf("n%d", i+1), port: freePort(t), clusterPort: freePort(t)}
		node.store = filepath.Join(dir, node.name)
		node.conf = filepath.Join(dir, node.name+".conf")
		node.logTo = filepath.Join(dir, node.name+".log")
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", node.clusterPort))
		c.nodes = append(c.nodes, node)
	}
	for _, node := range c.nodes {
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
jetstream { store_dir: %q }
cluster {
  name: ganglion-test
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, node.name, node.port, node.store, node.clusterPort, strings.Join(routes, ", "))
		if err := os.WriteFile(node.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		c.start(bin, node)
	}
	t.Cleanup(func() {
		for _, node := range c.nodes {
			c.kill9(node)
		}
	})
	c.waitJetStream()
	return c
}

// urls lists every node's client URL, comma-separated, as nats.url takes a cluster.
func (c *natsCluster) urls() string {
	var out []string
	for _, node := range c.nodes {
		out = append(out, fmt.Sprintf("nats://127.0.0.1:%d", node.port))
	}
	return strings.Join(out, ",")
}

func (c *natsCluster) start(bin string, node *natsNode) {
	c.t.Helper()
	for attempt := 1; !c.launch(bin, node); attempt++ {
		log, _ := os.ReadFile(node.logTo)
		if attempt == 2 {
			c.t.Fatalf("nats-server %s exited at start, twice:\n%s", node.name, log)
		}
		c.t.Logf("nats-server %s exited at start; once more:\n%s", node.name, log)
		time.Sleep(500 * time.Millisecond)
	}
}

// launch starts node's process and waits for its port; false when it exited first.
func (c *natsCluster) launch(bin string, node *natsNode) bool {
	c.t.Helper()
	logFile, err := os.OpenFile(node.logTo, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", node.conf)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = logFile.Close(); close(exited) }()
	node.mu.Lock()
	node.cmd, node.exited = cmd, exited
	node.mu.Unlock()
	for deadline := time.Now().Add(startTimeout); ; time.Sleep(20 * time.Millisecond) {
		if conn, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(node.port)); err == nil {
			_ = conn.Close()
			return true
		}
		select {
		case <-exited:
			return false
		default:
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("nats-server %s did not listen", node.name)
		}
	}
}

// kill9 kills a node as a crash would, without a chance to flush or say goodbye.
func (c *natsCluster) kill9(node *natsNode) {
	node.mu.Lock()
	cmd, exited := node.cmd, node.exited
	node.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// restart starts a killed node again on its port and store.
func (c *natsCluster) restart(node *natsNode) {
	c.t.Helper()
	bin, _ := natsServerBin()
	c.start(bin, node)
}

// waitJetStream waits until the cluster has a JetStream meta leader.
func (c *natsCluster) waitJetStream() {
	c.t.Helper()
	nc, err := nats.Connect(c.urls())
	if err != nil {
		c.t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for deadline := time.Now().Add(startTimeout); ; time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the NATS cluster has no JetStream: %v", err)
		}
	}
}

// node returns the node called name.
func (c *natsCluster) node(name string) *natsNode {
	for _, node := range c.nodes {
		if node.name == name {
			return node
		}
	}
	c.t.Fatalf("no NATS node %q", name)
	return nil
}

// streamLeader is the node leading stream, once every replica is current (caught up
// with the leader).
func streamLeader(ctx context.Context, js jetstream.JetStream, stream string) (string, error) {
	// A request sent while the connection is down waits for its context: bound each.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return "", err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return "", err
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "", errors.New("no leader")
	}
	for _, peer := range info.Cluster.Replicas {
		if !peer.Current || peer.Offline {
			return "", fmt.Errorf("replica %s not current", peer.Name)
		}
	}
	return info.Cluster.Leader, nil
}

// TestNATSClusterDurability: the bus as a three-node JetStream cluster with every stream
// of three replicas, under steady sends, each retried with its transaction ID until
// acknowledged as a client does.
//   - One node killed with SIGKILL (the events log's leader, the worst one), and brought
//     back: sends go on once a new leader is elected.
//   - Then two nodes killed at once: the cluster loses its quorum, so sends wait (no
//     availability), and nothing acknowledged before is lost.
//
// Every acknowledged send is stored exactly once.
func TestNATSClusterDurability(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	cluster := startNATSCluster(t, 3)
	d := newDeployment(t, deploymentOptions{cluster: cluster})
	hs := d.startMain()
	eventsLeader := func() string {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
			leader, err := streamLeader(ctx, d.js, d.topology().EventsStream())
			if err == nil {
				return leader
			}
			if time.Now().After(deadline) {
				var cluster any
				if s, err := d.js.Stream(context.Background(), d.topology().EventsStream()); err == nil {
					if info, err := s.Info(context.Background()); err == nil {
						cluster = info.Cluster
						for _, r := range info.Cluster.Replicas {
							t.Logf("replica %+v", *r)
						}
					}
				}
				t.Fatalf("events stream: %v (cluster %+v)", err, cluster)
			}
		}
	}
	if info, err := d.js.Stream(ctx, d.topology().EventsStream()); err != nil || info.CachedInfo().Config.Replicas != 3 {
		t.Fatalf("events stream: %v, replicas %d", err, info.CachedInfo().Config.Replicas)
	}

	const senders = 3
	clients := make([]*mautrix.Client, senders)
	for i := range clients {
		clients[i] = newUser(ctx, t, hs.url(), fmt.Sprintf("sender%d", i))
	}
	room := createRoomWith(ctx, t, clients[0], "private_chat", clients[1:]...)

	sends := startSteadySends(ctx, t, clients, []id.RoomID{room}, 20*time.Millisecond)
	waitAcked := func(what string, n int64) { t.Helper(); sends.waitAcked(ctx, t, what, n) }
	waitAcked("before the first kill", 30)
	leader := cluster.node(eventsLeader())
	cluster.kill9(leader)
	t.Logf("killed %s, the events log's leader, at %d sends", leader.name, sends.total.Load())
	// Two nodes of three still hold a quorum: a new leader is elected and sends go on.
	waitAcked("with one node down", 30)
	cluster.restart(leader)
	eventsLeader() // every replica current again
	t.Logf("%s back at %d sends", leader.name, sends.total.Load())
	waitAcked("after the node came back", 30)

	// Two nodes down: no quorum, no sends, but what was acknowledged stays.
	down := []*natsNode{cluster.nodes[0], cluster.nodes[1]}
	before := sends.total.Load()
	for _, node := range down {
		cluster.kill9(node)
	}
	time.Sleep(3 * time.Second)
	t.Logf("with two nodes down: %d sends acknowledged in 3 s", sends.total.Load()-before)
	for _, node := range down {
		cluster.restart(node)
	}
	eventsLeader()
	waitAcked("after both nodes came back", 30)
	sends.finish()
	if t.Failed() {
		return
	}
	checkStoredOnce(ctx, t, d, room, sends.acked[room])
	t.Logf("%d sends acknowledged", sends.total.Load())
}
