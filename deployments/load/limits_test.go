package load

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ganglionhq/ganglion/deployments/config"
)

// The quick start's configuration keeps Synapse's limits, which would throttle the
// default run; deployments/bench.yaml after it lifts them. Either way the run prints
// the limits it meets.
func TestCheckRateLimits(t *testing.T) {
	dir := t.TempDir()
	data, err := config.Generate("localhost", dir)
	if err != nil {
		t.Fatal(err)
	}
	quickStart := filepath.Join(dir, "homeserver.yaml")
	if err := os.WriteFile(quickStart, data, 0o600); err != nil {
		t.Fatal(err)
	}
	o := options{seq: 500, oneRoom: 3000, oneRoomClients: 10, manyRooms: 9600, manyClients: 64, syncSends: 5000, syncSenders: 20}

	var out bytes.Buffer
	_, err = checkRateLimits(&out, []string{quickStart}, o)
	if err == nil || !strings.Contains(err.Error(), "rc_registration, rc_joins.local, rc_message would throttle the run") {
		t.Fatalf("Synapse's defaults: %v", err)
	}
	if !strings.Contains(out.String(), "rc_message       per_second 0.2, burst_count 10; the run needs 700 sends by one user: THROTTLES THE RUN") {
		t.Errorf("printed:\n%s", out.String())
	}

	out.Reset()
	if _, err := checkRateLimits(&out, []string{quickStart, "../bench.yaml"}, o); err != nil {
		t.Fatalf("with bench.yaml: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "rc_message       per_second 100000, burst_count 100000; the run needs 700 sends by one user: ok") {
		t.Errorf("printed:\n%s", out.String())
	}
	if _, err := checkRateLimits(&out, nil, o); err == nil {
		t.Fatal("ran without the server's configuration")
	}
}
