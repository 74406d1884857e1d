package config

import (
	"errors"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/ganglionhq/ganglion/gateway/frontdoor"
)

// The shipped worker deployment checks as one; a copy of a worker under another file,
// a worker with its own events writers, and a writer no process runs are refused with
// the file and the key.
func TestCheckDeployment(t *testing.T) {
	dir := filepath.Join("..", "workers")
	shared := filepath.Join(dir, "shared.yaml")
	load := func(files ...string) *Config {
		t.Helper()
		c, err := Load(append([]string{shared}, files...), zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var procs []*Config
	procs = append(procs, load())
	for _, w := range []string{"gateway1.yaml", "gateway2.yaml", "sync1.yaml", "sync2.yaml", "event_persister1.yaml",
		"event_persister2.yaml", "stream_writer1.yaml", "pusher1.yaml", "federation_sender1.yaml", "appservice1.yaml",
		"background1.yaml", "media1.yaml"} {
		procs = append(procs, load(filepath.Join(dir, w)))
	}
	if err := CheckDeployment(procs); err != nil {
		t.Fatalf("the shipped deployment: %v", err)
	}

	again := writeFiles(t, "worker_app: synapse.app.generic_worker\nworker_name: gateway1\n")
	forked := writeFiles(t, "worker_app: synapse.app.generic_worker\nworker_name: gateway3\nstream_writers: {events: [event_persister1]}\n")
	for _, c := range []struct {
		name  string
		procs []*Config
		file  string
		want  string
	}{
		{"two processes are gateway1", append(procs[:len(procs):len(procs)], load(again[0])), again[0],
			`worker_name: instance "gateway1" is also the process of`},
		{"a process with its own events writers", append(procs[:len(procs):len(procs)], load(forked[0])), forked[0],
			"stream_writers.events: [event_persister1], where"},
		{"a writer no process runs", procs[:6], shared, "stream_writers.events: event_persister2 is none of the deployment's processes"},
		{"background tasks on no process", slices.DeleteFunc(slices.Clone(procs), func(c *Config) bool { return c.InstanceName() == "background1" }),
			shared, "run_background_tasks_on: background1 is none of the deployment's processes"},
	} {
		err := CheckDeployment(c.procs)
		var cerr *Error
		if err == nil || !errors.As(err, &cerr) || !strings.Contains(err.Error(), "config: "+c.file+": "+c.want) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// The front door's table follows the listeners: routes where set, otherwise the
// resources, with the stream writers' endpoints on their writer and media on the
// processes serving it.
func TestRoutes(t *testing.T) {
	shared := `
server_name: example.org
listeners:
  - {port: 8080, type: http, bind_addresses: ['127.0.0.1'], resources: [{names: [client, federation]}]}
  - {port: 9093, type: http, bind_addresses: ['127.0.0.1'], resources: [{names: [replication]}]}
enable_media_repo: false
database: postgres://postgres@127.0.0.1:5432/ganglion
nats: {url: "nats://127.0.0.1:4222"}
signing_key_path: /tmp/example.org.signing.key
instance_map:
  main: {host: 127.0.0.1, port: 9093}
  writer1: {host: 10.0.0.5, port: 9094}
stream_writers:
  typing: [writer1]
  receipts: [writer1]
`
	files := writeFiles(t, shared,
		"worker_app: synapse.app.generic_worker\nworker_name: gateway1\nworker_listeners: [{port: 8081, type: http, resources: [{names: [client, federation]}]}]\n",
		"worker_app: synapse.app.generic_worker\nworker_name: sync1\nworker_listeners: [{port: 8083, type: http, bind_addresses: ['127.0.0.1'], resources: [{names: [client]}], routes: [sync, initial_sync]}]\n",
		"worker_app: synapse.app.generic_worker\nworker_name: writer1\nworker_listeners: [{port: 8084, type: http, resources: [{names: [client]}]}]\n",
		"worker_app: synapse.app.media_repository\nworker_name: media1\nworker_listeners: [{port: 8085, type: http, bind_addresses: ['::1'], resources: [{names: [media]}]}]\n",
		"worker_app: synapse.app.generic_worker\nworker_name: persister1\n",
	)
	var procs []*Config
	for i, f := range files {
		paths := []string{files[0]}
		if i > 0 {
			paths = append(paths, f)
		}
		c, err := Load(paths, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, c)
	}
	table, err := Routes(procs)
	if err != nil {
		t.Fatal(err)
	}
	got := map[frontdoor.Group]string{}
	for g, us := range table {
		var s []string
		for _, u := range us {
			s = append(s, u.Name+"="+u.URL.Host)
		}
		got[g] = strings.Join(s, " ")
	}
	want := map[frontdoor.Group]string{
		// gateway1 listens on every interface: its instance_map host, or loopback.
		frontdoor.Client:      "master=127.0.0.1:8080 gateway1=127.0.0.1:8081 writer1=10.0.0.5:8084",
		frontdoor.Federation:  "master=127.0.0.1:8080 gateway1=127.0.0.1:8081",
		frontdoor.Sync:        "sync1=127.0.0.1:8083",
		frontdoor.InitialSync: "sync1=127.0.0.1:8083",
		frontdoor.Typing:      "writer1=10.0.0.5:8084",
		frontdoor.Receipts:    "writer1=10.0.0.5:8084",
		frontdoor.Media:       "media1=[::1]:8085",
	}
	if !maps.Equal(got, want) {
		t.Errorf("table:\n got %v\nwant %v", got, want)
	}

	// Without a client listener there is no deployment to route to.
	if _, err := Routes(procs[4:]); err == nil || !strings.Contains(err.Error(), "no listener takes the client group") {
		t.Errorf("no client listener: %v", err)
	}
}
