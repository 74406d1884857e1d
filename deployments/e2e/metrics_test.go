package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// With enable_metrics, a listener of type metrics serves Prometheus metrics at
// /_synapse/metrics: the client API's requests by route, as Synapse names them, the
// event writer's builds, appends and projections, intents by shard, every durable
// consumer's messages, batches and lag, writers' positions, sync wake-ups, and Go's
// runtime.
func TestMetrics(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), flowTimeout)
	defer cancel()
	d := newDeployment(t, deploymentOptions{})
	d.shared["enable_metrics"] = true
	metricsPort := freePort(t)
	hs := d.startMainWith([]map[string]any{metricsListener(metricsPort)})
	alice := newUser(ctx, t, hs.url(), "alice")
	room := createRoomWith(ctx, t, alice, "private_chat")
	for i := range 3 {
		if _, err := sendText(ctx, alice, room, "m"+strconv.Itoa(i), "measured"); err != nil {
			t.Fatal(err)
		}
	}
	wants := []struct {
		pattern string
		min     float64
	}{
		{`synapse_http_server_requests_received_total\{method="PUT",servlet="/_matrix/client/\*/rooms/\{room\}/send/\{type\}/\{txn\}"\}`, 3},
		{`synapse_http_server_response_time_seconds_count\{code="200",method="PUT",servlet="/_matrix/client/\*/rooms/\{room\}/send/\{type\}/\{txn\}"\}`, 3},
		{`ganglion_persister_appended_events_total`, 3 + 5}, // the messages and the room's initial events
		{`ganglion_persister_project_seconds_count`, 1},
		{`ganglion_persister_build_seconds_count`, 1},
		// The intents sent to the room's shard, and the writer's consumer of them.
		{`ganglion_intents_sent_total\{stream="events",writer="master"\}`, 3 + 1}, // the messages and createRoom
		{`ganglion_consumer_messages_total\{consumer="persister_master",outcome="processed"\}`, 3 + 1},
		{`ganglion_consumer_batch_messages_count\{consumer="persister_master"\}`, 1},
		{`ganglion_consumer_lag_messages\{consumer="persister_master"\}`, 0},
		{`ganglion_consumer_lag_seconds\{consumer="persister_master"\}`, 0},
		{`ganglion_stream_position\{stream="events",writer="master"\}`, 3 + 1},
		{`ganglion_sync_wakeup_seconds_count\{stream="events"\}`, 3 + 1},
		{`go_goroutines`, 1},
	}
	// Projections follow the answers: the metrics are read until they show them.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		text := scrapeMetrics(ctx, t, metricsPort)
		var short []string
		for _, c := range wants {
			if got := metricValue(text, c.pattern); got < c.min {
				short = append(short, fmt.Sprintf("%s = %v, want at least %v", c.pattern, got, c.min))
			}
		}
		if len(short) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics short:\n%s", strings.Join(short, "\n"))
		}
	}
	// Every metric the Grafana dashboard queries is one this process serves.
	dashboard, err := os.ReadFile(filepath.Join("..", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	text := scrapeMetrics(ctx, t, metricsPort)
	names := regexp.MustCompile(`\b(?:ganglion|synapse|go)_[a-z0-9_]+`).FindAllString(string(dashboard), -1)
	if len(names) < 10 {
		t.Fatalf("the dashboard names %d metrics", len(names))
	}
	for _, name := range names {
		if !regexp.MustCompile(`(?m)^` + name + `[{ ]`).MatchString(text) {
			t.Errorf("the dashboard queries %s, which the process does not serve", name)
		}
	}
	// The client listener does not serve them.
	if status, _, _ := rawRequest(ctx, t, http.MethodGet, hs.url()+"/_synapse/metrics", "", nil); status != http.StatusNotFound {
		t.Errorf("metrics on the client listener: %d", status)
	}
}

// metricsListener is a listener of type metrics on port.
func metricsListener(port int) map[string]any {
	return map[string]any{"port": port, "bind_addresses": []string{"127.0.0.1"}, "type": "metrics"}
}

// scrapeMetrics reads the Prometheus metrics of the metrics listener on port.
func scrapeMetrics(ctx context.Context, t *testing.T, port int) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(port)+"/_synapse/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// metricValue is the value of the sample whose line matches pattern (a regular
// expression of the name and labels), or -1 when there is none.
func metricValue(text, pattern string) float64 {
	m := regexp.MustCompile(`(?m)^` + pattern + ` ([0-9.eE+-]+)$`).FindStringSubmatch(text)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}
