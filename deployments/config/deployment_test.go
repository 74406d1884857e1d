package config

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
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
	for _, w := range []string{"event_persister1.yaml", "event_persister2.yaml", "gateway1.yaml", "gateway2.yaml", "sync1.yaml"} {
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
		{"a writer no process runs", procs[:2], shared, "stream_writers.events: event_persister2 is none of the deployment's processes"},
	} {
		err := CheckDeployment(c.procs)
		var cerr *Error
		if err == nil || !errors.As(err, &cerr) || !strings.Contains(err.Error(), "config: "+c.file+": "+c.want) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}
